//! coffer-source-env: backs up selected keys of a `.env` file as one secret
//! (`secrets/<source>/<file name>`, mode 0600) and merges them back on
//! restore.
//!
//! - Keys are chosen by exact name or glob (`ISSUER_DIRECTORY_MONGO_*`);
//!   every pattern must match at least one key. The secret holds exactly
//!   the selected lines, byte for byte as written (quotes, `export`,
//!   comments after the value), in file order; when a key is assigned
//!   twice the last assignment wins, as with docker compose.
//! - A restore replaces each captured key's line(s) in place, appends keys
//!   the file lacks, and keeps every other line and comment byte for byte
//!   (a replaced line keeps its own `export ` prefix, or its absence);
//!   the file keeps its mode (a new one is created 0600) and is replaced
//!   atomically on commit.
//! - Values never appear in reports, actions, errors or `Debug` output:
//!   only key names do.
//!
//! ```toml
//! [source.secrets]
//! kind = "env"
//! path = ".env"
//! keys = ["ISSUER_DIRECTORY_MONGO_*", "API_TOKEN"]
//! ```
//!
//! or, one-off: `coffer backup --source 'env:.env#ISSUER_DIRECTORY_MONGO_*,API_TOKEN'`.
//!
//! ```
//! let mut registry = coffer_core::Registry::new();
//! coffer_source_env::register(&mut registry);
//! let (factory, spec) = registry.source_spec("env:/srv/app/.env#APP_*,DB_URL").unwrap();
//! assert_eq!(factory.spec_name(spec), "env");
//! let source = factory.from_spec("env", spec).unwrap();
//! assert_eq!(source.info().origin["keys"], serde_json::json!(["APP_*", "DB_URL"]));
//! ```
#![deny(missing_docs)]

mod config;
mod dotenv;
mod error;
mod restore;
mod source;

use std::sync::Arc;

pub use config::EnvSourceConfig;
pub use source::EnvSource;

/// The TOML `kind` and one-off prefix of this source: `env`.
pub const KIND: &str = "env";

/// Registers the `env` source kind.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_source(Arc::new(source::EnvSourceFactory));
}
