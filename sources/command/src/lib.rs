//! coffer-source-command: stores the standard output of a command as one
//! bundle entry, and on restore feeds that entry to a restore command's
//! standard input (or writes it to a file under `--target`).
//!
//! For data only a program can export: a secret store (`vault kv get
//! -format=json …`), another database (`pg_dump -Fc …`), an appliance's
//! config export.
//!
//! - The command is an argv list, run without a shell; a string with
//!   `shell = true` runs through `/bin/sh -c`.
//! - Its environment is explicit: only `PATH`, `HOME`, `LANG`, `LC_ALL`,
//!   `TZ` and `USER` (when set), the variables named in `pass-env`, and
//!   the `env` table. Values of `env` and `pass-env` variables are treated
//!   as secrets: they never reach the bundle, the manifest or a log line,
//!   and are masked (`***`) in the command's stderr before it is logged.
//! - A non-zero exit status, a signal or the `timeout` fails the backup;
//!   the output is held (in memory up to 8 MiB, beyond that in an unlinked
//!   temp file encrypted with a key that exists only in memory) until the
//!   command has exited successfully, so a partial output is never stored
//!   as if complete. On a timeout or an interrupted backup the command's
//!   whole process group is killed.
//! - `secret = true` stores the output in the bundle's `secrets/` area
//!   (mode 0600, no checksum in the manifest); otherwise under `files/`.
//!
//! ```toml
//! [source.vault]
//! kind = "command"
//! command = ["vault", "kv", "get", "-format=json", "secret/issuer-directory"]
//! restore = ["sh", "-c", "vault kv put secret/issuer-directory @/dev/stdin"]
//! secret = true
//! file = "vault.json"          # the entry's name (default: NAME.out)
//! timeout = 300                # seconds (default 3600)
//! env = { VAULT_ADDR = "https://vault.internal:8200" }
//! pass-env = ["VAULT_TOKEN"]   # taken from coffer's own environment
//! ```
//!
//! Keep secrets out of `command` and `restore` (they are recorded in the
//! encrypted bundle to allow a restore without the config file, and any
//! user sees them in `ps`): pass them through `env` or `pass-env`. A
//! restore without a config file takes the values of those variables from
//! coffer's own environment.
//!
//! ```
//! let mut registry = coffer_core::Registry::new();
//! coffer_source_command::register(&mut registry);
//! let table: coffer_core::toml::Table =
//!     coffer_core::toml::from_str(r#"command = ["echo", "hi"]"#).unwrap();
//! let factory = registry.source_factory("command").unwrap();
//! let source = factory.from_config("greeting", table, std::path::Path::new("/")).unwrap();
//! assert_eq!(source.info().origin["command"], serde_json::json!(["echo", "hi"]));
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod restore;
mod run;
mod source;

use std::sync::Arc;

pub use config::{CommandLine, CommandSourceConfig};
pub use source::CommandSource;

/// The TOML `kind` of this source: `command`.
pub const KIND: &str = "command";

/// Registers the `command` source kind.
pub fn register(reg: &mut coffer_core::Registry) {
    reg.register_source(Arc::new(source::CommandSourceFactory));
}
