//! The `[source.NAME] kind = "command"` table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use coffer_core::{Result, config_error, toml};
use serde::{Deserialize, Serialize};

/// A command: an argv list, or (with `shell = true`) a shell command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    /// Program and arguments, run without a shell.
    Argv(Vec<String>),
    /// A line for `/bin/sh -c`; only with `shell = true`.
    Shell(String),
}

impl CommandLine {
    /// The argv to run: the list itself, or `/bin/sh -c LINE` when `shell`.
    pub fn argv(&self, shell: bool, what: &str) -> Result<Vec<String>> {
        match (self, shell) {
            (CommandLine::Argv(argv), false) if !argv.is_empty() && !argv[0].is_empty() => Ok(argv.clone()),
            (CommandLine::Argv(_), false) => Err(config_error(format!("`{what}` is empty")).with_hint(
                "give the program and its arguments, e.g. [\"vault\", \"kv\", \"get\", \"secret/app\"]",
            )),
            (CommandLine::Shell(line), true) if !line.trim().is_empty() => {
                Ok(vec!["/bin/sh".into(), "-c".into(), line.clone()])
            }
            (CommandLine::Shell(_), true) => Err(config_error(format!("`{what}` is empty"))),
            (CommandLine::Shell(_), false) => Err(config_error(format!(
                "`{what}` is a string, which would need a shell"
            ))
            .with_hint("write it as a list of arguments, or set `shell = true` to run it with /bin/sh -c")),
            (CommandLine::Argv(_), true) => Err(config_error(format!(
                "`{what}` is a list, but `shell = true` runs one command line"
            ))
            .with_hint("write it as one string, or drop `shell = true`")),
        }
    }
}

/// Settings of a `command` source. `env` values may be secrets: they never
/// reach a bundle, a manifest or a log.
///
/// ```toml
/// [source.vault]
/// kind = "command"
/// command = ["vault", "kv", "get", "-format=json", "secret/app"]
/// restore = ["sh", "-c", "vault kv put secret/app @/dev/stdin"]
/// secret = true
/// pass-env = ["VAULT_TOKEN"]
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CommandSourceConfig {
    /// What to run; its standard output is the entry.
    pub command: CommandLine,
    /// Run `command` and `restore` as `/bin/sh -c` lines.
    #[serde(default)]
    pub shell: bool,
    /// Store the output as a secret (`secrets/` area, mode 0600).
    #[serde(default)]
    pub secret: bool,
    /// The entry's file name (default `NAME.out`).
    #[serde(default)]
    pub file: Option<String>,
    /// Seconds the command may run (default 3600).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Environment variables to set (values treated as secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables passed on from coffer's own environment (values
    /// treated as secrets).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Working directory (relative to the config file; default: coffer's).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Run on restore with the entry on its standard input.
    #[serde(default)]
    pub restore: Option<CommandLine>,
}

impl std::fmt::Debug for CommandSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSourceConfig")
            .field("command", &self.command)
            .field("shell", &self.shell)
            .field("secret", &self.secret)
            .field("file", &self.file)
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("pass_env", &self.pass_env)
            .field("dir", &self.dir)
            .field("restore", &self.restore)
            .finish()
    }
}

impl CommandSourceConfig {
    /// Parses a `[source.NAME]` table (without `kind`).
    pub fn from_table(table: toml::Table) -> Result<Self> {
        coffer_core::parse_table(
            table,
            "`command` source",
            "a `command` source takes `command` (a list of arguments), and optionally `restore`, \
             `secret`, `file`, `timeout`, `env`, `pass-env`, `dir`, `shell`",
        )
    }
}
