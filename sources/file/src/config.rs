//! The `[source.NAME] kind = "file"` table.

use std::path::PathBuf;

use coffer_core::{Result, toml};
use serde::{Deserialize, Serialize};

/// Settings of a `file` source.
///
/// ```toml
/// [source.config]
/// kind = "file"
/// path = "etc/app"          # a file or a directory, relative to the config file
/// exclude = ["*.log", "tmp/**"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file or directory to back up. A relative path is resolved against
    /// the directory of the config file.
    pub path: PathBuf,
    /// Glob patterns (`globset` syntax) matched against paths relative to
    /// `path`, with `/` separators; `*` also matches `/`. A matching
    /// directory is skipped with everything under it. Ignored for a
    /// single-file source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl FileSourceConfig {
    /// Parses a `[source.NAME]` table (without `kind`).
    pub fn from_table(table: toml::Table) -> Result<Self> {
        coffer_core::parse_table(
            table,
            "`file` source",
            "a `file` source takes `path` (a file or directory) and optional `exclude` globs",
        )
    }
}
