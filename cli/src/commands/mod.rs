//! The command tree: the top-level flags ([`Cli`]), one module per
//! subcommand owning its flags (`XArgs`) and its `exec`, and the dispatch.
//!
//! Dependencies run one way: `main` → `commands` → `ctx` / `config` /
//! `output` / helper modules → `coffer_core`. A command never imports
//! another command; what two commands share lives in `ctx` (flags and
//! their resolvers), `retention` (prune's machinery, also run after a
//! backup) or `transfer` (copy, export and import).

mod backup;
mod check;
mod completions;
mod copy;
mod dedup_key;
mod drill;
mod drills;
mod export;
mod import;
mod import_runbook;
mod init;
mod keycheck;
mod keygen;
mod list;
mod man;
mod media;
mod oplog;
mod pin;
mod prune;
mod restore;
pub mod schema;
mod show;
mod sink;
mod unlock;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coffer_core::{CancelFlag, Registry};

use crate::ctx::{CmdResult, Ctx};

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
5 no usable key (wrong identity or passphrase), 6 a post-restore check or drill failed, 10 no sink there (not mounted? see `coffer sink init`), \
130 interrupted (Ctrl-C or SIGTERM; nothing partial kept), 141 standard output closed early (as SIGPIPE).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an age identity; prints its public recipient (age1…).
    Keygen(keygen::KeygenArgs),
    /// Write a commented example coffer.toml.
    Init(init::InitArgs),
    /// Capture the sources into one bundle and write it to every sink.
    Backup(backup::BackupArgs),
    /// List the snapshots on a sink.
    List(list::ListArgs),
    /// Show one snapshot's public index (and its manifest with --identity).
    Show(show::ShowArgs),
    /// Check snapshots: size and SHA-256 without any key; --deep decrypts
    /// and checks every file against SHA256SUMS.
    Verify(verify::VerifyArgs),
    /// Restore a snapshot (after verifying it) to the original places or
    /// under --target, then run the job's post-restore checks.
    Restore(restore::RestoreArgs),
    /// Rehearse a restore: restore a snapshot into scratch targets, run the
    /// job's checks, measure RTO/RPO, and append the evidence to the
    /// sink's drill history; exit 6 when a check fails.
    Drill(drill::DrillArgs),
    /// List the drill history of each sink and the last passed drill.
    Drills(drills::DrillsArgs),
    /// Run a job's post-restore checks (http, prometheus, mongo-counts,
    /// audit) against the running service; exit 6 when one fails.
    Check(check::CheckArgs),
    /// Apply the retention policy: print each snapshot with keep/delete and
    /// the reasons, then delete (index first, then the object).
    Prune(prune::PruneArgs),
    /// Pin a snapshot: no retention policy deletes it until `coffer unpin`.
    Pin(pin::PinArgs),
    /// Remove a snapshot's pin.
    Unpin(pin::UnpinArgs),
    /// Remove stale sink locks (left by killed runs); --force also live ones.
    Unlock(unlock::UnlockArgs),
    /// Copy snapshots between sinks without any key (ciphertext, signature,
    /// index last), verifying the SHA-256 on the way; skips identical ones.
    Copy(copy::CopyArgs),
    /// Copy snapshots (none named: the newest) to a removable medium, read
    /// them back, and write the restore kit (RESTORE.txt, SHA256SUMS,
    /// trusted signers, custody log).
    Export(export::ExportArgs),
    /// Merge the snapshots of a medium into a sink after checking each one;
    /// tampered or truncated ones are refused (exit 3), the others imported.
    Import(import::ImportArgs),
    /// Key-escrow drill: prove each --identity still opens the newest
    /// snapshot of each job (header and first chunk), without restoring;
    /// exit 5 when one does not.
    Keycheck(keycheck::KeycheckArgs),
    /// Fetch the dedup key of a sink's chunked snapshots with an identity
    /// (-o FILE, mode 0600), so another backup host can use the sink and
    /// deduplicate against it.
    DedupKey(dedup_key::DedupKeyArgs),
    /// Sinks: `sink init PATH|NAME` makes a new sink (a local directory
    /// gets its marker; a sink path without one is refused, exit 10).
    Sink(sink::SinkCmdArgs),
    /// Removable media: `media init PATH --label L [--set S]`, `media status PATH`.
    Media(media::MediaArgs),
    Oplog(oplog::OplogArgs),
    /// Turn a backup made by the manual Issuer Directory runbook
    /// (`<BACKUP_DIR>.tar.gz.age`) into a coffer snapshot after checking
    /// its SHA256SUMS; nothing plaintext is written to disk.
    ImportRunbook(import_runbook::ImportRunbookArgs),
    /// Print the JSON Schema of a command's --json output (`coffer
    /// schema` lists them; docs/json-schema/ has the same files).
    Schema(schema::SchemaArgs),
    /// Print a shell completion script: `coffer completions bash >
    /// /etc/bash_completion.d/coffer` (zsh, fish, powershell, elvish too).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff): `coffer man | man -l -`, or write one
    /// page per command into a directory with -o.
    Man(man::ManArgs),
}

/// Parses the command line; `restore --help` lists the restore options
/// the registered plugins declare.
pub fn parse(registry: &Registry, args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let help = restore_options_help(registry);
    let aliases = restore_aliases(registry);
    // `drill` and `check` connect where a restore would: they take the
    // declared options that read an environment variable (the server's
    // connection string, `--mongo-uri`).
    let connection = |a: &&RestoreAlias| a.spec.env.is_some();
    let mut cmd = Cli::command().mut_subcommand("restore", |mut c| {
        for alias in &aliases {
            c = c.arg(alias.arg());
        }
        c.after_long_help(help)
    });
    for sub in ["drill", "check"] {
        cmd = cmd.mut_subcommand(sub, |mut c| {
            for alias in aliases.iter().filter(connection) {
                c = c.arg(alias.arg());
            }
            c
        });
    }
    let matches = cmd.try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let given = |m: &clap::ArgMatches, all: bool| -> Vec<String> {
        let chosen = aliases.iter().filter(|a| all || connection(a));
        chosen.flat_map(|a| a.given(m)).collect()
    };
    match (&mut cli.command, matches.subcommand()) {
        // Before the `--opt`s: an explicit `--opt` has the last word.
        (Command::Restore(r), Some((_, m))) => {
            let flags = given(m, true);
            r.from_flags = flags.len();
            r.opts.splice(0..0, flags);
        }
        (Command::Drill(d), Some((_, m))) => d.opts = given(m, false),
        (Command::Check(c), Some((_, m))) => c.opts = given(m, false),
        _ => {}
    }
    Ok(cli)
}

/// A flag of `coffer restore` made from a restore option a plugin
/// declares with an alias (`--mongo-uri` for `mongo.uri`, `--k8s-namespace`
/// for `k8s.namespace`): it stands for `--opt KIND.NAME[=VALUE]`.
struct RestoreAlias {
    /// `KIND.NAME` of every kind declaring the alias (mongo and mongodump
    /// share `--mongo-uri`): the flag sets the option of each.
    opts: Vec<String>,
    spec: coffer_core::RestoreOptionSpec,
    long: &'static str,
}

/// The aliases the registered plugins declare, one per flag.
fn restore_aliases(registry: &Registry) -> Vec<RestoreAlias> {
    let mut out: Vec<RestoreAlias> = Vec::new();
    for (kind, spec) in registry.restore_options() {
        let Some(long) = spec.alias.and_then(|a| a.strip_prefix("--")) else {
            continue;
        };
        let opt = format!("{kind}.{}", spec.name);
        match out.iter_mut().find(|a| a.long == long) {
            Some(shared) => shared.opts.push(opt),
            None => out.push(RestoreAlias {
                opts: vec![opt],
                spec,
                long,
            }),
        }
    }
    out
}

impl RestoreAlias {
    fn arg(&self) -> clap::Arg {
        use clap::ArgAction;
        use coffer_core::OptionKind;
        let mut help = self.spec.help.chars();
        let first = help
            .next()
            .map(|c| c.to_uppercase().to_string())
            .unwrap_or_default();
        let arg = clap::Arg::new(self.long).long(self.long).help(format!(
            "{first}{} (`--opt {}`)",
            help.as_str(),
            self.opts.join("`, `--opt ")
        ));
        // Once per run, for --help: clap keeps value names as &'static str.
        let value_name: &'static str = Box::leak(self.spec.name.to_uppercase().into_boxed_str());
        let arg = match self.spec.kind {
            OptionKind::Flag => arg.action(ArgAction::SetTrue),
            OptionKind::Text => arg.action(ArgAction::Set).value_name(value_name),
            OptionKind::List => arg.action(ArgAction::Append).value_name(value_name),
        };
        match self.spec.env {
            Some(var) => arg.env(var).hide_env_values(true),
            None => arg,
        }
    }

    /// The `--opt` values the flag was given as, in order.
    fn given(&self, m: &clap::ArgMatches) -> Vec<String> {
        use coffer_core::OptionKind;
        match self.spec.kind {
            OptionKind::Flag if m.get_flag(self.long) => self.opts.clone(),
            OptionKind::Flag => Vec::new(),
            _ => m
                .get_many::<String>(self.long)
                .into_iter()
                .flatten()
                .flat_map(|v| self.opts.iter().map(move |o| format!("{o}={v}")))
                .collect(),
        }
    }
}

/// The `--opt` options of the registered source kinds, for `--help`.
pub(crate) fn restore_options_help(registry: &Registry) -> String {
    let mut text = String::from("Restore options of the source plugins (--opt KIND.NAME=VALUE):\n");
    for (kind, o) in registry.restore_options() {
        let alias = o.alias.map(|a| format!(" (also {a})")).unwrap_or_default();
        text.push_str(&format!(
            "  {kind}.{}{alias}\n      {}; {}\n",
            o.name,
            o.help,
            o.kind.describe()
        ));
    }
    text
}

/// The context of a run of `cli`.
pub fn context(cli: &Cli, registry: Registry, cancel: CancelFlag) -> Ctx {
    let audit = std::sync::Arc::new(coffer_app::record::Record::default());
    Ctx {
        app: coffer_app::App {
            config_path: cli.config.clone(),
            registry,
            cancel,
            create_sinks: cli.create_sink,
            record: coffer_app::record::Recorder::new(audit.clone()),
        },
        json: cli.json,
        quiet: cli.quiet || cli.json,
        verbose: cli.verbose > 0,
        audit,
    }
}

impl Command {
    /// Whether the command stops on its own when interrupted (finishing
    /// what it holds) instead of being dropped.
    pub fn graceful(&self) -> bool {
        matches!(self, Command::Oplog(a) if a.audited() == "oplog-follow")
    }

    /// The name a run of this command has in the audit log, for the
    /// commands that read or change snapshots; `None` for the others.
    pub fn audited(&self) -> Option<&'static str> {
        Some(match self {
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::Verify(_) => "verify",
            Command::Prune(_) => "prune",
            Command::Pin(_) => "pin",
            Command::Unpin(_) => "unpin",
            Command::Unlock(_) => "unlock",
            Command::Copy(_) => "copy",
            Command::Export(_) => "export",
            Command::Import(_) => "import",
            Command::ImportRunbook(_) => "import-runbook",
            Command::Drill(_) => "drill",
            Command::Check(_) => "check",
            Command::Keycheck(_) => "keycheck",
            Command::Oplog(a) => a.audited(),
            _ => return None,
        })
    }
}

/// Runs the parsed command.
pub async fn run(ctx: &Ctx, command: Command) -> CmdResult {
    match command {
        Command::Keygen(a) => keygen::exec(ctx, a),
        Command::Init(a) => init::exec(ctx, a),
        Command::Backup(a) => backup::exec(ctx, a).await,
        Command::List(a) => list::exec(ctx, a).await,
        Command::Show(a) => show::exec(ctx, a).await,
        Command::Verify(a) => verify::exec(ctx, a).await,
        Command::Restore(a) => restore::exec(ctx, a).await,
        Command::Check(a) => check::exec(ctx, a).await,
        Command::Drill(a) => drill::exec(ctx, a).await,
        Command::Drills(a) => drills::exec(ctx, a).await,
        Command::Unlock(a) => unlock::exec(ctx, a).await,
        Command::Copy(a) => copy::exec(ctx, a).await,
        Command::Export(a) => export::exec(ctx, a).await,
        Command::Import(a) => import::exec(ctx, a).await,
        Command::Media(a) => media::exec(ctx, a).await,
        Command::Oplog(a) => oplog::exec(ctx, a).await,
        Command::ImportRunbook(a) => import_runbook::exec(ctx, a).await,
        Command::Prune(a) => prune::exec(ctx, a).await,
        Command::Pin(a) => pin::pin(ctx, a).await,
        Command::Unpin(a) => pin::unpin(ctx, a).await,
        Command::Sink(a) => sink::exec(ctx, a).await,
        Command::Keycheck(a) => keycheck::exec(ctx, a).await,
        Command::DedupKey(a) => dedup_key::exec(ctx, a).await,
        Command::Schema(a) => schema::exec(a),
        Command::Completions(a) => completions::exec(a),
        Command::Man(a) => man::exec(a),
    }
}
