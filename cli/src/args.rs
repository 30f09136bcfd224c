//! Command-line syntax. Scripts and docs depend on these exact flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// coffer: back up and restore the whole state of a service (database,
/// config, seed data, secrets) into one checksummed, compressed,
/// age-encrypted bundle, written to any number of sinks.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (default: ./coffer.toml if it exists; env COFFER_CONFIG).
    #[arg(long, short = 'c', global = true, env = "COFFER_CONFIG", hide_env = true)]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Make a sink the command writes to where there is none yet (a local
    /// directory: its last component and the marker), as `coffer sink
    /// init` does. Without it a local sink path that holds no sink (not
    /// mounted? mistyped?) is refused with exit 10.
    #[arg(long, global = true, env = "COFFER_CREATE_SINK", hide_env_values = true)]
    pub create_sink: bool,
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 usage or config error, 3 integrity failure \
(corrupt, truncated or forged snapshot), 4 partial failure (some required sinks failed), \
5 no usable key (wrong identity or passphrase), 10 no sink there (not mounted? see `coffer sink init`), \
130 interrupted (Ctrl-C or SIGTERM; nothing partial kept).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an age identity; prints its public recipient (age1…).
    Keygen(KeygenArgs),
    /// Write a commented example coffer.toml.
    Init(InitArgs),
    /// Capture the sources into one bundle and write it to every sink.
    Backup(BackupArgs),
    /// List the snapshots on a sink.
    List(ListArgs),
    /// Show one snapshot's public index (and its manifest with --identity).
    Show(ShowArgs),
    /// Check snapshots: size and SHA-256 without any key; --deep decrypts
    /// and checks every file against SHA256SUMS.
    Verify(VerifyArgs),
    /// Restore a snapshot (after verifying it) to the original places or
    /// under --target.
    Restore(RestoreArgs),
    /// Apply the retention policy: print each snapshot with keep/delete and
    /// the reasons, then delete (index first, then the object).
    Prune(crate::prune::PruneArgs),
    /// Pin a snapshot: no retention policy deletes it until `coffer unpin`.
    Pin(crate::prune::PinArgs),
    /// Remove a snapshot's pin.
    Unpin(crate::prune::UnpinArgs),
    /// Remove stale sink locks (left by killed runs); --force also live ones.
    Unlock(crate::trust::UnlockArgs),
    /// Copy snapshots between sinks without any key (ciphertext, signature,
    /// index last), verifying the SHA-256 on the way; skips identical ones.
    Copy(crate::copy::CopyArgs),
    /// Copy snapshots to a removable medium, read them back, and write the
    /// restore kit (RESTORE.txt, SHA256SUMS, trusted signers, custody log).
    Export(crate::copy::ExportArgs),
    /// Merge the snapshots of a medium into a sink after checking each one;
    /// tampered or truncated ones are refused (exit 3), the others imported.
    Import(crate::copy::ImportArgs),
    /// Key-escrow drill: prove each --identity still opens the newest
    /// snapshot of each job (header and first chunk), without restoring;
    /// exit 5 when one does not.
    Keycheck(crate::keycheck::KeycheckArgs),
    /// Sinks: `sink init PATH|NAME` makes a new sink (a local directory
    /// gets its marker; a sink path without one is refused, exit 10).
    Sink(SinkCmdArgs),
    /// Removable media: `media init PATH --label L [--set S]`, `media status PATH`.
    Media(crate::copy::MediaArgs),
    /// Turn a backup made by the manual Issuer Directory runbook
    /// (`<BACKUP_DIR>.tar.gz.age`) into a coffer snapshot after checking
    /// its SHA256SUMS; nothing plaintext is written to disk.
    ImportRunbook(crate::import_runbook::ImportRunbookArgs),
    /// Print a shell completion script: `coffer completions bash >
    /// /etc/bash_completion.d/coffer` (zsh, fish, powershell, elvish too).
    Completions(CompletionsArgs),
    /// Print the man page (roff): `coffer man | man -l -`, or write one
    /// page per command into a directory with -o.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct SinkCmdArgs {
    #[command(subcommand)]
    pub action: SinkAction,
}

#[derive(Debug, Subcommand)]
pub enum SinkAction {
    /// Make SINK a coffer sink: a local directory is created (its last
    /// component only: the parent must exist) with the marker
    /// `coffer-sink.json`; an existing sink is left as it is.
    Init {
        /// A directory, a URL, or a sink name from the config.
        sink: String,
    },
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write coffer.1 and one coffer-COMMAND.1 per command into DIR
    /// instead of printing coffer.1.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity to FILE (mode 0600; refuses to overwrite).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Instead of generating: check an SSH public key file (ssh-ed25519 or
    /// ssh-rsa) and print it as a recipient. Its private key then works with
    /// --identity.
    #[arg(long, value_name = "PUBKEY_FILE", conflicts_with = "signing")]
    pub ssh: Option<PathBuf>,
    /// Generate an Ed25519 signing key instead (for `signing-key` /
    /// --signing-key); prints its public key coffer-sign-ed25519:… to
    /// trust (`trusted-signers` / --trusted-signer).
    #[arg(long)]
    pub signing: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write (default ./coffer.toml).
    #[arg(long, short = 'o', default_value = "coffer.toml")]
    pub output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args, Default)]
pub struct SinkSel {
    /// A sink to read: a name from the config, a directory, or a URL
    /// (file:///…, s3://…); repeatable (the first one holding the snapshot
    /// is used). Default: the config's sinks.
    #[arg(long = "sink", value_name = "SINK")]
    pub sinks: Vec<String>,
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

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Job from the config (default: its only job).
    pub job: Option<String>,
    /// One-off source: file:PATH, 'env:PATH#GLOB[,GLOB…]'; repeatable.
    #[arg(long = "source", value_name = "KIND:SPEC")]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub sink: BackupSinks,
    /// An optional sink (name, directory or URL): written like the others,
    /// but its failure never makes the run partial (exit 4). Names one of
    /// the job's sinks to mark it optional, or adds one; repeatable.
    #[arg(long = "sink-optional", value_name = "SINK")]
    pub sinks_optional: Vec<String>,
    /// Public key to encrypt to (age1…, ssh-ed25519 …, ssh-rsa …); repeatable.
    #[arg(long = "recipient", short = 'r', value_name = "KEY")]
    pub recipients: Vec<String>,
    /// Encrypt with a passphrase instead of recipients (removable media).
    #[arg(long)]
    pub passphrase: bool,
    /// Read the passphrase from FILE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Job name for a one-off run (default `one-off`).
    #[arg(long)]
    pub name: Option<String>,
    /// zstd (default), zstd:LEVEL, gzip, gzip:LEVEL, none.
    #[arg(long)]
    pub compression: Option<String>,
    /// Tag the snapshot; repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Record this RFC 3339 time as the snapshot time instead of now.
    #[arg(long)]
    pub time: Option<String>,
    /// After the backup, apply the retention policy (as `coffer prune`) on
    /// each sink that stored the snapshot.
    #[arg(long)]
    pub prune: bool,
    /// Pin the new snapshot: no retention policy ever deletes it.
    #[arg(long)]
    pub keep_forever: bool,
    /// Sign the snapshot's index with this key (coffer signing key or
    /// OpenSSH ed25519 private key); overrides `signing-key`.
    #[arg(long, value_name = "FILE", env = "COFFER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct TrustSel {
    /// Trust snapshots signed by this key (coffer-sign-ed25519:…, ssh-ed25519 …,
    /// or a file of such lines); repeatable; adds to `trusted-signers`. Once
    /// any is given, unsigned and untrusted snapshots are refused.
    #[arg(long = "trusted-signer", value_name = "KEY")]
    pub trusted_signers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SinkArgs {
    #[command(flatten)]
    pub sink: SinkSel,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub trust: TrustSel,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub trust: TrustSel,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshot id, prefix or `latest` (default: latest).
    pub snapshot: Option<String>,
    /// Verify every snapshot on the sink.
    #[arg(long, conflicts_with = "snapshot")]
    pub all: bool,
    /// Also decrypt and check every file against SHA256SUMS and the manifest.
    #[arg(long)]
    pub deep: bool,
    /// Check a rotating subset per run (`10%` or a count like `3`): the
    /// snapshots this cycle has not covered yet, oldest first; the cycle's
    /// coverage is kept in `coffer-verify-state.json` on each sink.
    #[arg(long, value_name = "N%|N", conflicts_with_all = ["all", "snapshot"])]
    pub sample: Option<crate::sample::Sample>,
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub trust: TrustSel,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub keys: KeySel,
    #[command(flatten)]
    pub trust: TrustSel,
    /// Put file sources under DIR and env sources into DIR instead of their
    /// original paths.
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Restore only this source (name or kind); repeatable.
    #[arg(long = "only", value_name = "SOURCE")]
    pub only: Vec<String>,
    /// Verify and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Directory for the verified ciphertext cache (default: temp dir).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Restore mongo sources into this server instead of the one they were
    /// dumped from (prefer the variable: a password on the command line
    /// is visible to other users).
    #[arg(long, value_name = "URI", env = "COFFER_MONGO_URI", hide_env_values = true)]
    pub mongo_uri: Option<String>,
    /// Mongo sources: replace each existing collection with the bundle's
    /// (swapped in whole, after it was staged and counted). Without it
    /// documents are only inserted, and existing `_id`s are kept and
    /// counted as conflicts.
    #[arg(long)]
    pub drop: bool,
    /// Mongo sources, with --drop: where the server cannot rename
    /// collections, drop each existing one and insert the bundle's
    /// documents into it instead of swapping it in. Not atomic: a failure
    /// or kill half-way leaves that collection partial until run again.
    #[arg(long, requires = "drop")]
    pub unsafe_in_place: bool,
    /// Mongo sources: restore only the collections matching this glob on
    /// `db.collection` of the snapshot (`*` matches anything); repeatable.
    #[arg(long = "ns-include", value_name = "GLOB")]
    pub ns_include: Vec<String>,
    /// Mongo sources: leave out the collections matching this glob;
    /// repeatable.
    #[arg(long = "ns-exclude", value_name = "GLOB")]
    pub ns_exclude: Vec<String>,
    /// Mongo sources: rename the namespaces matching PATTERN (each `*`
    /// captures), e.g. `--ns-from 'app.*' --ns-to 'app-staging.*'`;
    /// repeatable, in pairs with --ns-to.
    #[arg(long = "ns-from", value_name = "PATTERN", requires = "ns_to")]
    pub ns_from: Vec<String>,
    /// The new name for the matching --ns-from; its `*`s take the
    /// captures in order.
    #[arg(long = "ns-to", value_name = "PATTERN", requires = "ns_from")]
    pub ns_to: Vec<String>,
    /// Kubernetes sources: restore every Secret into this namespace
    /// instead of its own (a drill's scratch namespace, a staging copy).
    #[arg(long, value_name = "NAMESPACE")]
    pub k8s_namespace: Option<String>,
}
