//! An example coffer source plugin that owns what a drill does with it: a
//! key-per-file store (one file per key, as `pass`, a Consul KV export or
//! a spool directory keep them) as source kind `kv`, backed up and
//! restored as the `file` source does, plus
//!
//! - **its drill scratch place**: a drill restores a `kv` store into a
//!   directory of its own, `$TMPDIR/coffer-kv-drill-<run>/<source>`, never
//!   into the live store, and removes it after (unless `--keep`);
//! - **its check kind**, `kv-keys`: the store holds at least `min` keys —
//!   in a drill, the scratch copy; otherwise the live store.
//!
//! Neither core nor the CLI knows the kind: the plugin's `main` registers
//! it ([`register`]) and `coffer drill` asks the registry.
//!
//! ```toml
//! [source.tokens]
//! kind = "kv"
//! path = "tokens"
//!
//! [[job.main.checks]]
//! kind = "kv-keys"
//! source = "tokens"
//! path = "tokens"
//! min = 3
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::plugin::*;
use coffer_source_file::FileSource;
use serde::Deserialize;

/// The TOML `kind` of the source.
pub const KIND: &str = "kv";

/// The restore option a drill sets (and `--kv-into DIR` on the command
/// line): restore `kv` stores under this directory, a folder per source.
const INTO_OPTION: &str = "into";

/// Registers the `kv` source kind and the `kv-keys` check kind.
pub fn register(reg: &mut Registry) {
    reg.register_source(coffer_core::source_settings_factory::<KvConfig>());
    reg.register_check(Arc::new(KeysKind));
}

/// `[source.NAME] kind = "kv"`: `path`, the store's directory (also the
/// origin a bundle records).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvConfig {
    path: PathBuf,
}

/// A key-per-file store: the `file` source's capture and restore under
/// kind `kv`.
#[derive(Debug)]
struct KvSource {
    name: String,
    path: PathBuf,
    files: FileSource,
}

impl KvSource {
    fn new(name: &str, path: PathBuf) -> Result<KvSource> {
        Ok(KvSource {
            name: name.to_string(),
            files: FileSource::new(name, &path)?,
            path,
        })
    }
}

#[async_trait]
impl Source for KvSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new(
            KIND,
            self.name.clone(),
            format!("kv store {}", self.path.display()),
            serde_json::json!({ "path": self.path }),
        )
    }

    async fn check(&self) -> Result<()> {
        self.files.check().await
    }

    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        self.files.capture(ctx, out).await
    }

    /// Into the live store, or with the `into` option (a drill's, or
    /// `--kv-into`) under that directory.
    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let mut opts = opts.clone();
        if let Some(into) = opts.text(INTO_OPTION) {
            opts.target = Some(Path::new(into).join(&self.name));
            opts.target_per_source = false;
        }
        self.files.restore(&opts).await
    }
}

impl SourceSettings for KvConfig {
    const KIND: &'static str = KIND;

    fn from_table(table: toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let c: KvConfig = parse_table(table, "`kv` source", "keys: path")?;
        Ok(KvConfig {
            path: at.base_dir.join(c.path),
        })
    }

    /// `--source kv:PATH`.
    fn from_spec(spec: &str) -> Result<Self> {
        Ok(KvConfig { path: spec.into() })
    }

    fn from_origin(name: &str, origin: &serde_json::Value) -> Result<Self> {
        parse_origin(KIND, name, origin)
    }

    fn open(self, name: &str) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(KvSource::new(name, self.path)?))
    }

    /// `--opt kv.into=DIR`, also `--kv-into DIR` (the CLI makes the flag
    /// from this declaration).
    fn restore_options() -> Vec<coffer_core::RestoreOptionSpec> {
        vec![coffer_core::RestoreOptionSpec {
            name: INTO_OPTION,
            kind: coffer_core::OptionKind::Text,
            help: "restore kv stores under this directory, a folder per source",
            alias: Some("--kv-into"),
            env: None,
        }]
    }

    fn place_given(opts: &RestoreOptions) -> bool {
        opts.target.is_some() || opts.text(INTO_OPTION).is_some()
    }

    fn drill_scratch(run: &ScratchRun<'_>) -> Result<Option<Box<dyn DrillScratch>>> {
        Ok(Some(Box::new(KvScratch {
            dir: std::env::temp_dir().join(format!("coffer-kv-drill-{}", run.run)),
            sources: run.sources.iter().map(|s| s.name.clone()).collect(),
        })))
    }
}

/// A drill's scratch directory of the `kv` stores.
struct KvScratch {
    dir: PathBuf,
    sources: Vec<String>,
}

#[async_trait]
impl DrillScratch for KvScratch {
    fn prepare(&self, opts: &mut RestoreOptions) {
        opts.params
            .insert(KIND, INTO_OPTION, self.dir.display().to_string());
    }

    fn restored(&mut self, _: &RestoreOutcome) {}

    /// A `kv-keys` check of a store looks at its scratch copy.
    fn checks_at(&self, at: &mut ChecksAt) {
        for s in &self.sources {
            at.renamed
                .insert(format!("kv:{s}"), self.dir.join(s).display().to_string());
        }
    }

    fn evidence(&self) -> ScratchEvidence {
        let mut e = ScratchEvidence::default();
        e.fields
            .insert("kv_dir".into(), self.dir.display().to_string().into());
        e.lines = vec![format!("kv stores under `{}`", self.dir.display())];
        e
    }

    async fn cleanup(&self) -> std::result::Result<(), String> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", self.dir.display())),
        }
    }
}

/// `kind = "kv-keys"`: `source` (the `kv` source's name), `path` (its live
/// store) and `min`, the keys it must hold at least.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysCheck {
    source: String,
    path: PathBuf,
    min: usize,
}

struct KeysKind;

#[allow(clippy::wrong_self_convention)]
impl CheckFactory for KeysKind {
    fn kind(&self) -> &'static str {
        "kv-keys"
    }

    fn from_config(&self, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Check>> {
        let mut c: KeysCheck = parse_table(table, "`kv-keys` check", "keys: source, path, min")?;
        c.path = base_dir.join(&c.path);
        Ok(Arc::new(c))
    }
}

#[async_trait]
impl Check for KeysCheck {
    fn kind(&self) -> &str {
        "kv-keys"
    }

    async fn run(&self, env: &CheckEnv<'_>) -> CheckResult {
        let place = format!("kv:{}", self.source);
        let dir = match env.renamed(&place) {
            scratch if scratch != place => PathBuf::from(scratch),
            _ => self.path.clone(),
        };
        let shown = dir.display().to_string();
        match count_keys(&dir) {
            Ok(n) => check_result(
                "kv-keys",
                shown,
                n >= self.min,
                format!("{n} keys, at least {} wanted", self.min),
                Some("the store lost keys: compare with the snapshot (coffer show SNAPSHOT -i KEY)"),
            ),
            Err(e) => check_result(
                "kv-keys",
                shown,
                false,
                e.to_string(),
                Some("is the store there?"),
            ),
        }
    }
}

/// The regular files under `dir`, at any depth.
fn count_keys(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                n += 1;
            }
        }
    }
    Ok(n)
}
