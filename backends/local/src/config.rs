//! Configuration of the local sink: a `[sink.NAME]` table or a URL.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use std::sync::Arc;

use coffer_core::{Result, Sink, SinkSettings, TableContext};
use serde::{Deserialize, Serialize};

use crate::LocalSink;
use crate::error::LocalError;

/// Settings of a local sink.
///
/// ```toml
/// [sink.disk]
/// kind = "local"
/// path = "./backups"   # relative to the config file's directory
/// create = true        # make it on the first run (else: `coffer sink init`)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalSinkConfig {
    /// The directory holding the objects, with its marker
    /// `coffer-sink.json` (made by `coffer sink init`).
    pub path: PathBuf,
    /// Create the directory (its last component only) and the marker on
    /// first use instead of refusing to run where there is no sink.
    #[serde(default)]
    pub create: bool,
}

impl LocalSinkConfig {
    /// Settings for the directory `path`, used as given.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalSinkConfig {
            path: path.into(),
            create: false,
        }
    }

    /// This config with a relative path resolved against `base_dir`.
    pub fn resolved(mut self, base_dir: &Path) -> Self {
        if self.path.is_relative() {
            // Drop `./` so locations read `/etc/coffer/backups`.
            let rel: PathBuf = self
                .path
                .components()
                .filter(|c| *c != Component::CurDir)
                .collect();
            self.path = if rel.as_os_str().is_empty() {
                base_dir.to_path_buf()
            } else {
                base_dir.join(rel)
            };
        }
        self
    }
}

impl SinkSettings for LocalSinkConfig {
    const KIND: &'static str = crate::KIND;
    const SCHEMES: &'static [&'static str] = &[crate::SCHEME];

    /// Parses the `[sink.NAME]` table (without `kind`) and resolves a
    /// relative `path` against the config file's directory.
    fn from_table(table: coffer_core::toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let name = at.name;
        let config: LocalSinkConfig = coffer_core::toml::Value::Table(table).try_into().map_err(
            |e: coffer_core::toml::de::Error| LocalError::InvalidConfig {
                name: name.to_string(),
                message: e.message().to_string(),
            },
        )?;
        if config.path.as_os_str().is_empty() {
            return Err(LocalError::InvalidConfig {
                name: name.to_string(),
                message: "`path` is empty".into(),
            }
            .into());
        }
        Ok(config.resolved(at.base_dir))
    }

    /// Parses `file:///abs/path`, `file://localhost/abs/path`,
    /// `file:path` (relative or absolute, taken literally) or a plain path.
    /// Only the `file://` form is percent-decoded. A relative path is made
    /// absolute against the current directory.
    fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason| LocalError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let path: PathBuf = match url.strip_prefix("file:") {
            Some(rest) => match rest.strip_prefix("//") {
                Some(authority_and_path) => {
                    let (host, path) = match authority_and_path.find('/') {
                        Some(i) => authority_and_path.split_at(i),
                        None => (authority_and_path, ""),
                    };
                    if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                        return Err(invalid("a file URL cannot name a remote host").into());
                    }
                    if path.is_empty() {
                        return Err(invalid("no path after file://").into());
                    }
                    PathBuf::from(OsString::from_vec(coffer_core::percent_decode(path)))
                }
                None => PathBuf::from(rest),
            },
            None => PathBuf::from(url),
        };
        if path.as_os_str().is_empty() {
            return Err(invalid("the path is empty").into());
        }
        let path =
            std::path::absolute(&path).map_err(|e| coffer_core::Error::io("resolving the sink path", e))?;
        Ok(LocalSinkConfig::new(path))
    }

    /// A sink that refuses a root without its marker unless `create`
    /// (see [`LocalSink::checked`]).
    fn open(self) -> Result<Arc<dyn Sink>> {
        let create = self.create;
        Ok(Arc::new(LocalSink::from_config(&self).checked(create)))
    }
}
