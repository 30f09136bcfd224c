//! The `[source.NAME] kind = "mongo"` table and where the connection
//! string comes from.

use std::fmt;
use std::path::{Path, PathBuf};

use coffer_core::{Error, ErrorKind, Result, config_error, toml};
use serde::{Deserialize, Serialize};

/// Settings of a `mongo` source.
///
/// ```toml
/// [source.db]
/// kind = "mongo"
/// uri-env = "ISSUER_DIRECTORY_MONGO_CONNECTION_STRING"  # or uri = "…", or uri-file + uri-key
/// databases = ["issuer-directory"]   # default: the URI's database, else all non-system ones
/// exclude = ["*.cache_*"]            # globs on `db.collection`
/// parallel = 2
/// point-in-time = false              # default true: also capture the oplog window
/// ```
///
/// `Debug` omits the connection string (it may hold a password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MongoSourceConfig {
    /// The connection string itself (avoid: it lands in the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// An environment variable holding the connection string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_env: Option<String>,
    /// A `.env` file holding the connection string under `uri-key`
    /// (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_file: Option<PathBuf>,
    /// The key of `uri-file` that holds the connection string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_key: Option<String>,
    /// Databases to back up; empty: the URI's database, else every
    /// database except `admin`, `local` and `config`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Globs on `db.collection`; when given, only matching collections are
    /// backed up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs on `db.collection` to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Collections dumped at the same time (default 2).
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Seconds to wait for a reachable server before failing (default 5).
    #[serde(default = "default_timeout")]
    pub server_selection_timeout: u64,
    /// Capture the oplog written during the dump (`oplog.bson`) so that a
    /// restore gives the databases as of one moment (default true). `false`
    /// skips the oplog queries (faster where they are slow) and leaves the
    /// dump per-collection consistent only.
    #[serde(default = "default_point_in_time")]
    pub point_in_time: bool,
}

fn default_parallel() -> usize {
    2
}

fn default_timeout() -> u64 {
    5
}

fn default_point_in_time() -> bool {
    true
}

impl Default for MongoSourceConfig {
    fn default() -> Self {
        MongoSourceConfig {
            uri: None,
            uri_env: None,
            uri_file: None,
            uri_key: None,
            databases: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            parallel: default_parallel(),
            server_selection_timeout: default_timeout(),
            point_in_time: default_point_in_time(),
        }
    }
}

impl fmt::Debug for MongoSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSourceConfig")
            .field("uri", &self.uri.as_deref().map(crate::uri::redact))
            .field("uri_env", &self.uri_env)
            .field("uri_file", &self.uri_file)
            .field("uri_key", &self.uri_key)
            .field("databases", &self.databases)
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("parallel", &self.parallel)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("point_in_time", &self.point_in_time)
            .finish()
    }
}

impl MongoSourceConfig {
    /// Parses a `[source.NAME]` table (without `kind`).
    pub fn from_table(table: toml::Table) -> Result<Self> {
        let config: MongoSourceConfig = coffer_core::parse_table(
            table,
            "`mongo` source",
            "a `mongo` source takes one of `uri`, `uri-env`, `uri-file` + `uri-key`, and optional \
             `databases`, `include`, `exclude`, `parallel`, `server-selection-timeout`, `point-in-time`",
        )?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let given = [
            self.uri.is_some(),
            self.uri_env.is_some(),
            self.uri_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            return Err(config_error("a `mongo` source needs exactly one of `uri`, `uri-env`, `uri-file`")
                .with_hint("prefer `uri-env = \"VAR\"` or `uri-file` + `uri-key`: a password in the config file is easily leaked"));
        }
        if self.uri_file.is_some() != self.uri_key.is_some() {
            return Err(config_error("`uri-file` and `uri-key` go together")
                .with_hint("name the .env file and the key holding the connection string"));
        }
        if self.parallel == 0 {
            return Err(config_error("`parallel` must be at least 1"));
        }
        if self.server_selection_timeout == 0 {
            return Err(config_error(
                "`server-selection-timeout` must be at least 1 (seconds)",
            ));
        }
        Ok(())
    }
}

/// Where the connection string comes from; read when needed, so a config
/// naming an unset variable still loads for commands that do not connect.
#[derive(Clone)]
pub(crate) enum UriSource {
    /// Given directly.
    Literal(String),
    /// An environment variable.
    Env(String),
    /// A key of a `.env` file.
    DotEnv { file: PathBuf, key: String },
    /// The redacted URI recorded in a bundle: usable only if it held no
    /// password, otherwise a restore needs `--mongo-uri`.
    Recorded(String),
}

impl UriSource {
    pub(crate) fn from_config(config: &MongoSourceConfig, base_dir: &Path) -> UriSource {
        if let Some(uri) = &config.uri {
            UriSource::Literal(uri.clone())
        } else if let Some(var) = &config.uri_env {
            UriSource::Env(var.clone())
        } else {
            UriSource::DotEnv {
                file: base_dir.join(config.uri_file.clone().unwrap_or_default()),
                key: config.uri_key.clone().unwrap_or_default(),
            }
        }
    }

    /// Where it comes from, without the value.
    pub(crate) fn describe(&self) -> String {
        match self {
            UriSource::Literal(uri) => crate::uri::redact(uri),
            UriSource::Env(var) => format!("${var}"),
            UriSource::DotEnv { file, key } => format!("{key} of {}", file.display()),
            UriSource::Recorded(uri) => uri.clone(),
        }
    }

    /// The connection string.
    pub(crate) fn resolve(&self) -> Result<String> {
        let uri = match self {
            UriSource::Literal(uri) => uri.clone(),
            UriSource::Recorded(uri) => {
                return Err(config_error(format!(
                    "the snapshot records the MongoDB server as {uri}, without its password"
                ))
                .with_hint("pass --mongo-uri mongodb://user:pass@host/ to say where to restore"));
            }
            UriSource::Env(var) => std::env::var(var).map_err(|_| {
                config_error(format!("environment variable {var} is not set (or not UTF-8)"))
                    .with_hint(format!("export {var}=mongodb://… before running coffer"))
            })?,
            UriSource::DotEnv { file, key } => {
                let text = std::fs::read(file)
                    .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
                dotenv_value(&text, key).ok_or_else(|| {
                    config_error(format!("{} has no key {key}", file.display()))
                        .with_hint("check `uri-file` and `uri-key` of the mongo source")
                })?
            }
        };
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                "the MongoDB connection string does not start with mongodb:// or mongodb+srv://",
            )
            .with_context("from", self.describe())
            .with_hint("give a URI such as mongodb://user:pass@host:27017/db"));
        }
        Ok(uri)
    }
}

/// The value of `key` in a `.env` file: `KEY=VALUE`, `export KEY=VALUE`,
/// with optional single or double quotes; the last assignment wins.
pub(crate) fn dotenv_value(text: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(text);
    let mut found = None;
    for line in text.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim_end() != key {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        found = Some(v.to_string());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_validates() {
        let c = MongoSourceConfig::from_table(table("uri-env = \"X\"\ndatabases = [\"a\"]")).unwrap();
        assert_eq!(c.parallel, 2);
        assert_eq!(c.server_selection_timeout, 5);
        assert!(c.point_in_time);
        let c = MongoSourceConfig::from_table(table("uri-env = \"X\"\npoint-in-time = false")).unwrap();
        assert!(!c.point_in_time);
        for bad in [
            "",
            "uri = \"mongodb://h\"\nuri-env = \"X\"",
            "uri-file = \".env\"",
            "uri-env = \"X\"\nparallel = 0",
            "uri-env = \"X\"\nbogus = 1",
            "uri-env = \"X\"\npoint-in-time = \"no\"",
        ] {
            let e = MongoSourceConfig::from_table(table(bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = MongoSourceConfig::from_table(table("uri = \"mongodb://u:hunter2@h/db\"")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn reads_dotenv_values() {
        let text = b"# c\nA=1\nexport MONGO_URI=\"mongodb://u:p@h/db\"\nB='x'\n";
        assert_eq!(
            dotenv_value(text, "MONGO_URI").as_deref(),
            Some("mongodb://u:p@h/db")
        );
        assert_eq!(dotenv_value(text, "B").as_deref(), Some("x"));
        assert_eq!(dotenv_value(text, "C"), None);
    }
}
