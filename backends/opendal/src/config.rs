//! Configuration of the OpenDAL sink: a `[sink.NAME]` table or an
//! `opendal:SCHEME?key=value…` URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::{Error, ErrorKind, Result, Sink, SinkSettings, TableContext};
use serde::Deserialize;

use crate::OpendalSink;

/// Settings of an OpenDAL sink: the service's scheme and its options.
///
/// ```toml
/// [sink.dav]
/// kind = "opendal"
/// scheme = "webdav"
/// options = { endpoint = "http://127.0.0.1:8080", root = "/backups" }
/// options-env = { password = "DAV_PASSWORD" }
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct OpendalSinkConfig {
    /// The OpenDAL scheme: `fs`, `memory`, `webdav`, `gcs`, `azblob` … (those
    /// compiled in).
    pub scheme: String,
    /// The service's options, passed to OpenDAL as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Options whose values are read from environment variables
    /// (option → variable), for secrets.
    #[serde(default)]
    pub options_env: BTreeMap<String, String>,
    /// Chunk size of multipart writes in MiB (default 8).
    #[serde(default = "default_part_size")]
    pub part_size_mib: u64,
    /// Chunks written concurrently (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds one request may take (default 120). A remote service
    /// (anything but `fs` and `memory`) gets coffer's retry and timeout
    /// layers, bounding one operation by `2 × timeout-secs + 30 s`.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    120
}

fn default_part_size() -> u64 {
    8
}
fn default_concurrency() -> usize {
    4
}

impl std::fmt::Debug for OpendalSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values may be secrets: keys only.
        f.debug_struct("OpendalSinkConfig")
            .field("scheme", &self.scheme)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("options_env", &self.options_env)
            .field("part_size_mib", &self.part_size_mib)
            .field("concurrency", &self.concurrency)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::ConfigInvalid, message).with_hint(
        "an opendal sink takes scheme, options (a table of the service's options), options-env, timeout-secs, \
         part-size-mib and concurrency; one-off: opendal:SCHEME?OPTION=VALUE&…",
    )
}

impl OpendalSinkConfig {
    /// Settings for `scheme` with `options`.
    pub fn new(scheme: impl Into<String>, options: impl IntoIterator<Item = (String, String)>) -> Self {
        OpendalSinkConfig {
            scheme: scheme.into(),
            options: options.into_iter().collect(),
            options_env: BTreeMap::new(),
            part_size_mib: default_part_size(),
            concurrency: default_concurrency(),
            timeout_secs: default_timeout(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.scheme.is_empty() {
            return Err(invalid("`scheme` is empty".into()));
        }
        if self.part_size_mib == 0 || self.part_size_mib > 5 * 1024 {
            return Err(invalid(format!(
                "`part-size-mib` must be 1 to 5120, not {}",
                self.part_size_mib
            )));
        }
        if self.concurrency == 0 || self.concurrency > 64 {
            return Err(invalid(format!(
                "`concurrency` must be 1 to 64, not {}",
                self.concurrency
            )));
        }
        Ok(())
    }

    /// The options with those of `options-env` read from the environment.
    pub(crate) fn resolved_options(&self) -> Result<BTreeMap<String, String>> {
        let mut out = self.options.clone();
        for (option, var) in &self.options_env {
            let value = std::env::var(var).map_err(|_| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("environment variable `{var}` (option `{option}`) is not set"),
                )
                .with_hint(format!("export {var}=… before running coffer"))
            })?;
            out.insert(option.clone(), value);
        }
        Ok(out)
    }

    /// `SCHEME endpoint=… root=…` (the sink shows as `opendal:` before it),
    /// without option values that could be secrets.
    pub fn location(&self) -> String {
        let mut loc = self.scheme.clone();
        for k in ["endpoint", "bucket", "container", "root"] {
            if let Some(v) = self.options.get(k) {
                loc.push_str(&format!(" {k}={v}"));
            }
        }
        loc
    }
}

fn k_only(pair: &str) -> &str {
    pair.split('=').next().unwrap_or(pair)
}

impl SinkSettings for OpendalSinkConfig {
    const KIND: &'static str = crate::KIND;
    const SCHEMES: &'static [&'static str] = &[crate::KIND];

    /// Parses `opendal:SCHEME?OPTION=VALUE&…` (values percent-decoded).
    fn from_url(url: &str) -> Result<Self> {
        let shown = match url.split_once('?') {
            Some((u, _)) => format!("{u}?…"),
            None => url.to_string(),
        };
        let rest = url
            .strip_prefix("opendal:")
            .map(|r| r.trim_start_matches("//"))
            .ok_or_else(|| invalid(format!("`{shown}` does not start with opendal:")))?;
        let (scheme, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut config = OpendalSinkConfig::new(scheme, []);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("in `{shown}`: option `{}` has no `=`", k_only(pair))))?;
            let v = String::from_utf8(coffer_core::percent_decode(&v.replace('+', " ")))
                .map_err(|_| invalid(format!("in `{shown}`: `{k}` is not UTF-8")))?;
            match k {
                "part-size-mib" => {
                    config.part_size_mib = v
                        .parse()
                        .map_err(|_| invalid(format!("`part-size-mib` must be a whole number, not `{v}`")))?
                }
                "concurrency" => {
                    config.concurrency = v
                        .parse()
                        .map_err(|_| invalid(format!("`concurrency` must be a whole number, not `{v}`")))?
                }
                _ => {
                    config.options.insert(k.to_string(), v);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses the `[sink.NAME]` table of sink `name` (without `kind`).
    fn from_table(table: coffer_core::toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let name = at.name;
        let mut config: OpendalSinkConfig = coffer_core::toml::Value::Table(table).try_into().map_err(
            |e: coffer_core::toml::de::Error| {
                invalid(format!(
                    "invalid opendal sink config for `{name}`: {}",
                    e.message()
                ))
            },
        )?;
        config.validate()?;
        // A relative `fs` root is relative to the config file, as the
        // local sink's path is.
        if config.scheme == "fs"
            && let Some(root) = config.options.get_mut("root")
            && std::path::Path::new(root.as_str()).is_relative()
        {
            *root = at.base_dir.join(root.as_str()).display().to_string();
        }
        Ok(config)
    }

    fn open(self) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(OpendalSink::new(&self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_tables() {
        let c = OpendalSinkConfig::from_url("opendal:fs?root=/srv/my%20backups&part-size-mib=16").unwrap();
        assert_eq!(c.scheme, "fs");
        assert_eq!(c.options["root"], "/srv/my backups");
        assert_eq!(c.part_size_mib, 16);
        assert!(OpendalSinkConfig::from_url("opendal:?root=/x").is_err());
        assert!(OpendalSinkConfig::from_url("opendal:fs?concurrency=0").is_err());
        let t: coffer_core::toml::Table =
            "scheme = \"webdav\"\noptions = { endpoint = \"http://h\", password = \"hunter2\" }"
                .parse()
                .unwrap();
        let c = OpendalSinkConfig::from_table(t, &TableContext::new("x", std::path::Path::new("."))).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.location().contains("hunter2"));
        let t: coffer_core::toml::Table = "scheme = \"fs\"\nbogus = 1".parse().unwrap();
        assert!(
            OpendalSinkConfig::from_table(t, &TableContext::new("x", std::path::Path::new("."))).is_err()
        );
    }
}
