//! [`EnvSource`]: capture of selected keys of a `.env` file.
//!
//! Tokio use: the file is small; it is read and parsed inside
//! `spawn_blocking`, and its selected lines travel as one in-memory entry.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceFactory, SourceInfo, SourceReport, config_error, toml,
};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::json;

use crate::KIND;
use crate::config::EnvSourceConfig;
use crate::dotenv::{self, EnvLine};
use crate::error::read_error;
use crate::restore::EnvRestorer;

/// Selected keys of a `.env` file, captured as one secret
/// `secrets/<source>/<file name>` holding exactly the selected lines.
///
/// Holds no value: only the path and the key patterns.
#[derive(Debug, Clone)]
pub struct EnvSource {
    name: String,
    path: PathBuf,
    keys: Vec<String>,
    globs: GlobSet,
}

impl EnvSource {
    /// A source named `name` selecting `keys` (exact names or globs) from
    /// the `.env` file at `path` (made absolute against the current
    /// directory).
    pub fn new(name: impl Into<String>, path: impl AsRef<Path>, keys: Vec<String>) -> Result<Self> {
        let name = name.into();
        let path = std::path::absolute(path.as_ref())
            .map_err(|e| Error::io(format!("cannot resolve {}", path.as_ref().display()), e))?;
        if path.file_name().is_none() {
            return Err(
                config_error(format!("env source `{name}` has no file name in its path"))
                    .with_context("path", path.display()),
            );
        }
        if keys.is_empty() {
            return Err(config_error(format!("env source `{name}` selects no key"))
                .with_hint("list key names or globs, e.g. keys = [\"APP_*\", \"DB_URL\"]"));
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in &keys {
            let glob = Glob::new(pattern).map_err(|e| {
                config_error(format!("invalid key pattern `{pattern}`: {e}"))
                    .with_context("source", &name)
                    .with_hint("patterns are key names or globs such as `APP_*`")
                    .set_source(e)
            })?;
            builder.add(glob);
        }
        let globs = builder.build().map_err(|e| {
            config_error(format!("invalid key patterns: {e}"))
                .with_context("source", &name)
                .set_source(e)
        })?;
        Ok(EnvSource {
            name,
            path,
            keys,
            globs,
        })
    }

    /// A source from its config table; a relative `path` is resolved
    /// against `base_dir`.
    pub fn with_config(name: impl Into<String>, config: &EnvSourceConfig, base_dir: &Path) -> Result<Self> {
        Self::new(name, base_dir.join(&config.path), config.keys.clone())
    }

    /// The absolute path of the `.env` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key names and patterns this source selects.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Reads the file; returns its bytes and mtime.
    fn read(&self) -> Result<(Vec<u8>, i64)> {
        let io = |e: io::Error| read_error(&self.path, e);
        let meta = fs::metadata(&self.path).map_err(io)?;
        if !meta.is_file() {
            return Err(Error::new(ErrorKind::Unsupported, "not a regular file")
                .with_context("path", self.path.display())
                .with_hint("an `env` source reads a .env file"));
        }
        let text = fs::read(&self.path).map_err(io)?;
        Ok((text, meta.mtime()))
    }

    /// The lines the patterns select: the last assignment of each matching
    /// key, in file order. Fails naming every pattern that matches nothing.
    fn select<'a>(&self, lines: &'a [EnvLine<'a>]) -> Result<Vec<&'a EnvLine<'a>>> {
        let mut matched = vec![false; self.keys.len()];
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            let Some(key) = line.key else { continue };
            let hits = self.globs.matches(key);
            if hits.is_empty() {
                continue;
            }
            for h in hits {
                matched[h] = true;
            }
            last.insert(key, i);
        }
        let missing: Vec<&str> = self
            .keys
            .iter()
            .zip(&matched)
            .filter(|(_, m)| !**m)
            .map(|(k, _)| k.as_str())
            .collect();
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::new(ErrorKind::NotFound, format!("no key matches {list}"))
                .with_context("file", self.path.display())
                .with_hint("add the key to the .env file, or fix the source's `keys`"));
        }
        Ok(lines
            .iter()
            .enumerate()
            .filter(|(i, l)| l.key.is_some_and(|k| last.get(k) == Some(i)))
            .map(|(_, l)| l)
            .collect())
    }
}

/// The selected lines, each ending with `\n`.
fn secret_content(selected: &[&EnvLine<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in selected {
        out.extend_from_slice(line.raw);
        if !line.raw.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

#[async_trait]
impl Source for EnvSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new(
            KIND,
            self.name.clone(),
            format!("env {} ({})", self.path.display(), self.keys.join(", ")),
            json!({ "path": self.path.to_string_lossy(), "keys": self.keys }),
        )
    }

    async fn check(&self) -> Result<()> {
        let me = self.clone();
        blocking(move || {
            let (text, _) = me.read()?;
            me.select(&dotenv::parse(&text)).map(|_| ())
        })
        .await
    }

    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let me = self.clone();
        let (content, keys, mtime) = blocking(move || {
            let (text, mtime) = me.read()?;
            let lines = dotenv::parse(&text);
            let selected = me.select(&lines)?;
            let keys: Vec<String> = selected.iter().filter_map(|l| l.key.map(str::to_owned)).collect();
            Ok((secret_content(&selected), keys, mtime))
        })
        .await?;
        ctx.report_size(content.len() as u64);
        let file_name = self
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.send(Entry {
            area: Area::Secrets,
            path: file_name,
            mode: 0o600,
            mtime,
            owner: None,
            stat: None,
            body: EntryBody::File {
                size: content.len() as u64,
                reader: Box::new(Cursor::new(content)),
            },
        })
        .await?;
        Ok(SourceReport {
            position: None,
            summary: format!(
                "{} key{} from {}",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" },
                self.path.display()
            ),
            details: json!({ "keys": keys, "file": self.path.to_string_lossy() }),
        })
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let name = self.name.clone();
        let path = self.path.clone();
        let opts = opts.clone();
        let restorer = blocking(move || EnvRestorer::new(name, path, &opts)).await?;
        Ok(Box::new(restorer))
    }
}

/// Registers [`EnvSource`] under [`KIND`].
pub(crate) struct EnvSourceFactory;

impl SourceFactory for EnvSourceFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>> {
        let config = EnvSourceConfig::from_table(table)?;
        Ok(Arc::new(EnvSource::with_config(name, &config, base_dir)?))
    }

    fn spec_name(&self, _spec: &str) -> String {
        KIND.to_string()
    }

    fn from_spec(&self, name: &str, spec: &str) -> Result<Arc<dyn Source>> {
        let (path, keys) = parse_spec(spec)?;
        Ok(Arc::new(EnvSource::new(name, path, keys)?))
    }

    fn from_origin(&self, name: &str, origin: &serde_json::Value) -> Result<Arc<dyn Source>> {
        /// What [`EnvSource::info`] records.
        #[derive(serde::Deserialize)]
        struct Origin {
            path: PathBuf,
            keys: Vec<String>,
        }
        let Origin { path, keys } = coffer_core::parse_origin(KIND, name, origin)?;
        if !path.is_absolute() {
            return Err(coffer_core::malformed_origin(KIND, name));
        }
        Ok(Arc::new(EnvSource::new(name, path, keys)?))
    }
}

/// `PATH#GLOB[,GLOB…]`.
fn parse_spec(spec: &str) -> Result<(&str, Vec<String>)> {
    let hint = "write env:PATH#KEYS, e.g. 'env:.env#APP_*,DB_URL' (quote it for the shell)";
    let Some((path, globs)) = spec.rsplit_once('#') else {
        return Err(config_error(format!("env source `{spec}` names no keys")).with_hint(hint));
    };
    let keys: Vec<String> = globs
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if path.is_empty() || keys.is_empty() {
        return Err(
            config_error(format!("env source `{spec}` needs a path and at least one key")).with_hint(hint),
        );
    }
    Ok((path, keys))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::new(ErrorKind::Unexpected, format!("env source task failed: {e}")).set_source(e)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let (p, k) = parse_spec("/srv/.env#A_*, B").unwrap();
        assert_eq!((p, k), ("/srv/.env", vec!["A_*".to_string(), "B".to_string()]));
        let (p, _) = parse_spec("a#b/.env#K").unwrap();
        assert_eq!(p, "a#b/.env");
        for bad in [".env", ".env#", "#K", ".env#,"] {
            let e = parse_spec(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{bad}");
            assert!(e.hint().unwrap().contains("env:PATH#KEYS"));
        }
    }
}
