//! What every command shares: the global context ([`Ctx`]), the flag groups
//! several commands flatten ([`SinkSel`], [`KeySel`], [`TrustSel`],
//! [`BackupSinks`]) and their resolvers (keys, trust, snapshots, locks).
//! Depends on config, output and core only; never on a command.

mod keys;
mod snapshots;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use coffer_app::App;
use coffer_core::{Result, Sink, config_error};

use crate::Failure;
use crate::config::Config;

pub(crate) use coffer_app::job::*;
pub(crate) use coffer_app::trust::signature_column;
pub(crate) use keys::*;
pub(crate) use snapshots::*;

/// The trusted signers: `--trusted-signer` flags plus the config's (see
/// [`coffer_app::trust::trusted_signers`]).
pub(crate) fn trusted_signers(
    sel: &TrustSel,
    config: Option<&Config>,
) -> Result<coffer_core::keys::TrustedSigners> {
    coffer_app::trust::trusted_signers(&sel.trusted_signers, config)
}

pub(crate) type CmdResult = std::result::Result<(), Failure>;

/// `--time T`: the snapshot time to record instead of now.
pub(crate) fn snapshot_time(time: Option<&str>) -> Result<Option<jiff::Timestamp>> {
    time.map(|t| {
        t.parse::<jiff::Timestamp>().map_err(|e| {
            config_error(format!("--time `{t}` is not an RFC 3339 time: {e}"))
                .with_hint("e.g. 2026-11-27T22:15:00Z")
        })
    })
    .transpose()
}

/// What every command gets: the application context ([`App`]: config,
/// plugins, interrupt flag, observer) and the global flags of the command
/// line. Commands added in their own modules use it too.
pub(crate) struct Ctx {
    pub(crate) app: App,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) verbose: bool,
    /// The audit log and metrics the run's notes go to (the observer of
    /// [`App::record`]), written when the command ended.
    pub(crate) audit: Arc<coffer_app::record::Record>,
}

impl std::ops::Deref for Ctx {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl Ctx {
    /// The sinks `--sink` names, else the config's.
    pub(crate) fn sinks_of(
        &self,
        sel: &SinkSel,
        config: Option<&Config>,
    ) -> Result<Vec<(String, Arc<dyn Sink>)>> {
        self.app.read_sinks(&sel.sinks, config)
    }
}

#[derive(Debug, Args, Default)]
pub struct SinkSel {
    /// A sink to read: a name from the config, a directory, or a URL
    /// (file:///…, s3://…); repeatable (the first one holding the snapshot
    /// is used). Default: the config's sinks.
    #[arg(long = "sink", value_name = "SINK")]
    pub sinks: Vec<String>,
}

/// What a command that reads snapshots takes: where (`--sink`), with
/// which keys (`--identity`, `--passphrase`) and whom to trust
/// (`--trusted-signer`).
#[derive(Debug, Args, Default)]
pub struct ReadSel {
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub trust: TrustSel,
}

pub(crate) use coffer_app::restoring::Reading;

impl Ctx {
    /// Loads the config and resolves `sel`'s sinks and trusted signers.
    pub(crate) fn read(&self, sel: &ReadSel) -> Result<Reading> {
        self.app.reading(&sel.sink.sinks, &sel.trust.trusted_signers)
    }
}

#[derive(Debug, Args, Default)]
pub struct BackupSinks {
    /// A sink to write: a name from the config, a directory, or a URL
    /// (file:///…, s3://…); repeat to fan out to several. Default: the
    /// job's sinks.
    #[arg(long = "sink", value_name = "SINK")]
    pub sinks: Vec<String>,
}

#[derive(Debug, Args, Default)]
pub struct KeySel {
    /// Identity file to decrypt with (age identity or SSH private key);
    /// repeatable. Env COFFER_IDENTITY.
    #[arg(
        long = "identity",
        short = 'i',
        value_name = "FILE",
        env = "COFFER_IDENTITY",
        hide_env_values = true
    )]
    pub identities: Vec<PathBuf>,
    /// Use a passphrase (from COFFER_PASSPHRASE, --passphrase-file, or a
    /// prompt on a terminal).
    #[arg(long)]
    pub passphrase: bool,
    /// Read the passphrase from FILE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct TrustSel {
    /// Trust snapshots signed by this key (coffer-sign-ed25519:…, ssh-ed25519 …,
    /// or a file of such lines); repeatable; adds to `trusted-signers`. Once
    /// any is given, unsigned and untrusted snapshots are refused.
    #[arg(long = "trusted-signer", value_name = "KEY")]
    pub trusted_signers: Vec<String>,
}
