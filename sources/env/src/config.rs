//! The `[source.NAME] kind = "env"` table.

use std::path::PathBuf;

use coffer_core::{Result, toml};
use serde::{Deserialize, Serialize};

/// Settings of an `env` source. Holds no secret: only the file's path and
/// key names or patterns.
///
/// ```toml
/// [source.secrets]
/// kind = "env"
/// path = ".env"                                  # relative to the config file
/// keys = ["ISSUER_DIRECTORY_MONGO_*", "API_TOKEN"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EnvSourceConfig {
    /// The `.env` file. A relative path is resolved against the directory
    /// of the config file.
    pub path: PathBuf,
    /// Key names or glob patterns (`*`, `?`, `[…]`); each must match at
    /// least one key of the file.
    pub keys: Vec<String>,
}

impl EnvSourceConfig {
    /// Parses a `[source.NAME]` table (without `kind`).
    pub fn from_table(table: toml::Table) -> Result<Self> {
        coffer_core::parse_table(
            table,
            "`env` source",
            "an `env` source takes `path` (the .env file) and `keys` (names or globs, e.g. [\"APP_*\"])",
        )
    }
}
