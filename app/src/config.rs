//! `coffer.toml`: jobs, sources, sinks, recipients, compression. Parsed
//! once, strictly (unknown keys are errors with their line), into plugin
//! objects before any work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::{Error, Registry, Result, Sink, Source, config_error, ops::RetentionPolicy, toml};
use serde::Deserialize;
use toml::Spanned;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    compression: Option<Spanned<String>>,
    #[serde(default)]
    signing_key: Option<PathBuf>,
    #[serde(default)]
    trusted_signers: Vec<String>,
    #[serde(default)]
    metrics_file: Option<PathBuf>,
    #[serde(default)]
    audit_log: Option<PathBuf>,
    #[serde(default)]
    job: BTreeMap<String, Spanned<JobConfig>>,
    #[serde(default)]
    source: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    sink: BTreeMap<String, Spanned<toml::Table>>,
}

/// One `[job.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobConfig {
    /// Names of `[source.*]` tables, captured in this order.
    pub sources: Vec<String>,
    /// Names of `[sink.*]` tables, written concurrently.
    pub sinks: Vec<String>,
    /// Overrides the top-level recipients.
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
    /// Overrides the top-level compression.
    #[serde(default)]
    pub compression: Option<String>,
    /// Tags on every snapshot of the job.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Encrypt with the passphrase in this file instead of recipients.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// Overrides the top-level signing key.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Which snapshots `coffer prune` and `backup --prune` keep.
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
    /// The run succeeds when at least this many sinks stored the snapshot,
    /// whichever they are (`optional` is then irrelevant). Without it,
    /// every required sink must succeed.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// Commands (argv lists) run before the backup, e.g. stopping the
    /// service for a cold backup.
    #[serde(default)]
    pub before: Vec<Vec<String>>,
    /// Commands run after the backup, always (also on failure, Ctrl-C and
    /// SIGTERM), e.g. starting the service again.
    #[serde(default)]
    pub after: Vec<Vec<String>>,
    /// Commands run after `after` when the run failed.
    #[serde(default)]
    pub on_failure: Vec<Vec<String>>,
    /// Seconds each hook may take (default 300) before its process group
    /// is killed.
    #[serde(default)]
    pub hook_timeout: Option<u64>,
    /// After `after`: wait until the service answers healthy.
    #[serde(default)]
    pub health: Option<crate::health::Health>,
    /// `[[job.NAME.checks]]` as written; built into [`JobConfig::checks`]
    /// by their kinds' factories when the file loads.
    #[serde(default, rename = "checks")]
    check_tables: Vec<toml::Table>,
    /// Post-restore checks, run after `restore`, by `drill` and by `coffer
    /// check`.
    #[serde(skip)]
    pub checks: Vec<Arc<dyn coffer_core::checks::Check>>,
    /// Continuous oplog archiving (`[job.NAME.oplog]`), read by `coffer
    /// oplog follow`.
    #[serde(default)]
    pub oplog: Option<OplogConfig>,
}

/// `[job.NAME.oplog]`: how `coffer oplog follow` archives the oplog of
/// the job's MongoDB source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OplogConfig {
    /// Seconds between slices (default 60).
    #[serde(default = "default_slice_interval")]
    pub slice_interval: u64,
    /// Bytes of entries that cut a slice early (default 32 MiB).
    #[serde(default = "default_slice_size")]
    pub slice_size: u64,
    /// When the chain breaks: `backup` (start a new chain and take a base
    /// snapshot, the default) or `stop`.
    #[serde(default = "default_on_gap")]
    pub on_gap: coffer_core::slices::follow::OnGap,
    /// The source followed, when the job has several with an oplog.
    #[serde(default)]
    pub source: Option<String>,
}

fn default_slice_interval() -> u64 {
    60
}

fn default_slice_size() -> u64 {
    32 << 20
}

fn default_on_gap() -> coffer_core::slices::follow::OnGap {
    coffer_core::slices::follow::OnGap::Backup
}

impl Default for OplogConfig {
    fn default() -> Self {
        OplogConfig {
            slice_interval: default_slice_interval(),
            slice_size: default_slice_size(),
            on_gap: default_on_gap(),
            source: None,
        }
    }
}

impl JobConfig {
    /// The job's hooks.
    pub fn hooks(&self) -> crate::hooks::Hooks {
        crate::hooks::Hooks {
            before: self.before.clone(),
            after: self.after.clone(),
            on_failure: self.on_failure.clone(),
            hook_timeout: self.hook_timeout,
            health: self.health.clone(),
        }
    }

    /// Builds `[[job.NAME.checks]]` with the factories of their kinds.
    fn build_checks(&mut self, registry: &Registry, base: &Path) -> Result<()> {
        self.checks = std::mem::take(&mut self.check_tables)
            .into_iter()
            .map(|mut t| {
                let kind = take_kind(&mut t)?;
                registry.check_from_config(&kind, t, base)
            })
            .collect::<Result<_>>()
            .map_err(|e| e.prefix("checks"))?;
        Ok(())
    }

    /// Checks the job against the file's sources and sinks; an error says
    /// what is wrong after the caller's `[job.NAME]`.
    fn check(&self, sources: &SourceMap, sinks: &BTreeMap<String, Arc<dyn Sink>>) -> Result<()> {
        if let Some(s) = self.sources.iter().find(|s| !sources.contains_key(*s)) {
            return Err(config_error(format!("names unknown source `{s}`"))
                .with_hint(format!("define [source.{s}] or fix the name")));
        }
        if let Some(s) = self.sinks.iter().find(|s| !sinks.contains_key(*s)) {
            return Err(config_error(format!("names unknown sink `{s}`"))
                .with_hint(format!("define [sink.{s}] or fix the name")));
        }
        if let Some(c) = &self.compression {
            coffer_core::format::Compression::parse(c).map_err(|e| e.prefix("compression"))?;
        }
        self.hooks().check().map_err(config_error)?;
        if self.passphrase_file.is_some() && self.recipients.is_some() {
            return Err(config_error("sets both `recipients` and `passphrase-file`")
                .with_hint("age allows a passphrase only as the sole recipient: keep one of them"));
        }
        if self.sources.is_empty() || self.sinks.is_empty() {
            return Err(config_error("needs sources and sinks"));
        }
        if let Some(o) = &self.oplog {
            if o.slice_interval == 0 || o.slice_size < 4096 {
                return Err(config_error(
                    "oplog: slice-interval must be at least 1 (seconds) and slice-size at least 4096 (bytes)",
                ));
            }
            if let Some(s) = &o.source
                && !self.sources.contains(s)
            {
                return Err(
                    config_error(format!("oplog: source `{s}` is not one of the job's sources"))
                        .with_hint(format!("the job's sources: {}", self.sources.join(", "))),
                );
            }
        }
        if let Some(q) = self.quorum
            && (q == 0 || q > self.sinks.len())
        {
            return Err(config_error(format!(
                "quorum = {q}, but the job has {} sink(s)",
                self.sinks.len()
            ))
            .with_hint("quorum is how many sinks must store each snapshot: 1 to the number of sinks"));
        }
        Ok(())
    }
}

/// A parsed, resolved configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub recipients: Vec<String>,
    pub compression: Option<String>,
    pub jobs: BTreeMap<String, JobConfig>,
    pub sources: BTreeMap<String, Arc<dyn Source>>,
    pub sinks: BTreeMap<String, Arc<dyn Sink>>,
    /// Signs every snapshot (relative to the config file's folder).
    pub signing_key: Option<PathBuf>,
    /// Public keys (or files of them) whose signatures are trusted.
    pub trusted_signers: Vec<String>,
    /// Prometheus textfile-collector file coffer keeps up to date.
    pub metrics_file: Option<PathBuf>,
    /// Append-only JSON-lines audit log of every run that reads or changes
    /// snapshots.
    pub audit_log: Option<PathBuf>,
    /// `[sink.NAME] retention = {…}`: replaces the job's policy on that sink.
    pub sink_retention: BTreeMap<String, RetentionPolicy>,
    /// `[sink.NAME] optional = true`: its failure never makes a run partial.
    pub sink_optional: std::collections::BTreeSet<String>,
    /// `[sink.NAME] format = "chunked" | "bundle"` (default bundle).
    pub sink_format: BTreeMap<String, coffer_core::chunked::SnapshotFormat>,
    /// `[sink.NAME] dedup-key = PATH`: this host's dedup key for that sink
    /// (relative to the config file's folder).
    pub sink_dedup_key: BTreeMap<String, PathBuf>,
    /// Where each `[source.NAME]` is: `file:line: [source.NAME]`.
    pub source_places: BTreeMap<String, String>,
}

/// `err` as a configuration error at `where_` (`file:line: key`), keeping
/// its hint.
fn located(err: Error, where_: String) -> Error {
    let located = config_error(format!("{where_}: {}", err.message()));
    match err.hint() {
        Some(h) => located.with_hint(h.to_string()),
        None => located,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Where in the config file a table stands, for messages:
/// `path:line: what`.
struct Places<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Places<'_> {
    fn at(&self, span: std::ops::Range<usize>, what: &str) -> String {
        format!(
            "{}:{}: {what}",
            self.path.display(),
            line_of(self.text, span.start)
        )
    }
}

/// The sinks of a config file with what coffer itself reads from their
/// tables (`retention`, `optional`) before the plugin sees the rest.
#[derive(Default)]
struct Sinks {
    sinks: BTreeMap<String, Arc<dyn Sink>>,
    retention: BTreeMap<String, RetentionPolicy>,
    optional: std::collections::BTreeSet<String>,
    format: BTreeMap<String, coffer_core::chunked::SnapshotFormat>,
    dedup_key: BTreeMap<String, PathBuf>,
}

/// The text of the config file at `path`.
fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let err = if e.kind() == std::io::ErrorKind::NotFound {
            // A usage error (exit 2), like any other bad --config.
            config_error(format!("config file {} does not exist", path.display()))
        } else {
            Error::io(format!("reading config {}", path.display()), e)
        };
        err.with_hint("pass --config FILE, or run `coffer init` to write an example")
    })
}

type SourceMap = BTreeMap<String, Arc<dyn Source>>;

/// The `[source.NAME]` tables built by their plugins, and where each
/// stands in the file.
fn load_sources(
    tables: BTreeMap<String, Spanned<toml::Table>>,
    registry: &Registry,
    base: &Path,
    places: &Places<'_>,
) -> Result<(SourceMap, BTreeMap<String, String>)> {
    let mut sources = BTreeMap::new();
    let mut source_places = BTreeMap::new();
    for (name, table) in tables {
        let place = places.at(table.span(), &format!("[source.{name}]"));
        source_places.insert(name.clone(), place.clone());
        let mut t = table.into_inner();
        let src = coffer_core::format::check_source_name(&name)
            .and_then(|()| take_kind(&mut t))
            .and_then(|kind| registry.source_from_config(&kind, &name, t, base))
            .map_err(|e| e.prefix(&place))?;
        sources.insert(name, src);
    }
    Ok((sources, source_places))
}

/// The `[sink.NAME]` tables: coffer's `retention` and `optional` taken
/// out, the rest built by the sink's plugin (with the retry and timeout
/// layers a remote sink asks for).
fn load_sinks(
    tables: BTreeMap<String, Spanned<toml::Table>>,
    registry: &Registry,
    base: &Path,
    places: &Places<'_>,
) -> Result<Sinks> {
    let mut out = Sinks::default();
    for (name, table) in tables {
        let span = table.span();
        let place = places.at(span.clone(), &format!("[sink.{name}]"));
        let mut t = table.into_inner();
        // `retention` is coffer's, not the plugin's (whose config denies
        // unknown keys): take it out before the factory. The plugin sees
        // it too (S3 Object Lock derives its retain-until dates from it),
        // through the registry.
        let retention = t.remove("retention");
        if let Some(r) = retention.clone() {
            let policy = RetentionPolicy::deserialize(r).map_err(|e| {
                config_error(places.at(span.clone(), &format!("[sink.{name}] retention: {}", e.message())))
                    .with_hint("e.g. retention = { keep-daily = 30, keep-monthly = 12 }")
            })?;
            out.retention.insert(name.clone(), policy);
        }
        // `optional` is coffer's too (fan-out), like `retention`.
        match t.remove("optional") {
            None | Some(toml::Value::Boolean(false)) => {}
            Some(toml::Value::Boolean(true)) => {
                out.optional.insert(name.clone());
            }
            Some(_) => {
                return Err(config_error(format!("{place} optional must be true or false")));
            }
        }
        // `format` and `dedup-key` are coffer's too.
        match t.remove("format") {
            None => {}
            Some(toml::Value::String(f)) => {
                let f =
                    coffer_core::chunked::SnapshotFormat::parse(&f).map_err(|e| located(e, place.clone()))?;
                out.format.insert(name.clone(), f);
            }
            Some(_) => {
                return Err(config_error(format!(
                    "{place} format must be \"chunked\" or \"bundle\""
                )));
            }
        }
        match t.remove("dedup-key") {
            None => {}
            Some(toml::Value::String(p)) => {
                out.dedup_key.insert(name.clone(), base.join(p));
            }
            Some(_) => return Err(config_error(format!("{place} dedup-key must be a file path"))),
        }
        let sink = take_kind(&mut t)
            .and_then(|kind| registry.sink_from_config(&kind, &name, t, base, retention.as_ref()))
            .map_err(|e| e.prefix(&place))?;
        out.sinks.insert(name, sink);
    }
    Ok(out)
}

impl Config {
    /// Reads and resolves `path`.
    pub fn load(path: &Path, registry: &Registry) -> Result<Config> {
        let text = read(path)?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            let msg = e.message().to_string();
            match line {
                Some(l) => config_error(format!("{}:{l}: {msg}", path.display())),
                None => config_error(format!("{}: {msg}", path.display())),
            }
            .with_hint("fix the file; `coffer init` writes a commented example")
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let places = Places { path, text: &text };

        // Checked here, so a bad value names its file and line.
        if let Some(c) = &file.compression {
            coffer_core::format::Compression::parse(c.get_ref())
                .map_err(|e| located(e, places.at(c.span(), "compression")))?;
        }
        let (sources, source_places) = load_sources(file.source, registry, &base, &places)?;
        let sinks = load_sinks(file.sink, registry, &base, &places)?;
        let mut jobs = BTreeMap::new();
        for (name, job) in file.job {
            let span = job.span();
            let mut job = job.into_inner();
            job.check(&sources, &sinks.sinks)
                .and_then(|()| job.build_checks(registry, &base))
                .map_err(|e| located(e, places.at(span, &format!("[job.{name}]"))))?;
            job.passphrase_file = job.passphrase_file.map(|p| base.join(p));
            job.signing_key = job.signing_key.map(|p| base.join(p));
            jobs.insert(name, job);
        }
        Ok(Config {
            path: path.to_path_buf(),
            recipients: file.recipients,
            compression: file.compression.map(Spanned::into_inner),
            jobs,
            sources,
            sinks: sinks.sinks,
            sink_retention: sinks.retention,
            sink_optional: sinks.optional,
            sink_format: sinks.format,
            sink_dedup_key: sinks.dedup_key,
            source_places,
            // `join` keeps an absolute path as it is.
            signing_key: file.signing_key.map(|p| base.join(p)),
            trusted_signers: file.trusted_signers,
            metrics_file: file.metrics_file.map(|p| base.join(p)),
            audit_log: file.audit_log.map(|p| base.join(p)),
        })
    }

    /// The job to run: `name`, or the only one.
    pub fn job(&self, name: Option<&str>) -> Result<(String, &JobConfig)> {
        match name {
            Some(n) => self.jobs.get(n).map(|j| (n.to_string(), j)).ok_or_else(|| {
                config_error(format!("no job `{n}` in {}", self.path.display())).with_hint(format!(
                    "jobs: {}",
                    self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            }),
            None => match self.jobs.len() {
                1 => {
                    let (n, j) = self.jobs.iter().next().expect("one");
                    Ok((n.clone(), j))
                }
                0 => Err(config_error(format!(
                    "{} defines no [job.*]",
                    self.path.display()
                ))),
                _ => Err(
                    config_error("several jobs are configured; name one").with_hint(format!(
                        "jobs: {}",
                        self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                ),
            },
        }
    }
}

fn take_kind(t: &mut toml::Table) -> Result<String> {
    match t.remove("kind") {
        Some(toml::Value::String(k)) => Ok(k),
        Some(_) => Err(config_error("`kind` must be a string")),
        None => Err(config_error("missing `kind`").with_hint("e.g. kind = \"file\"")),
    }
}

/// The commented example `coffer init` writes and the quick start uses.
pub const EXAMPLE: &str = include_str!("../../examples/init/coffer.toml");
