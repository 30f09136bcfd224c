//! The `coffer` command line as a library: flags and config resolution,
//! progress, output and exit codes. The work itself is in coffer-core and
//! the plugin crates.
//!
//! The `coffer` binary is [`main_with`] and nothing more. A plugin author
//! gets the whole command line for their own sink or source with a main of
//! their own that registers it next to the built-in plugins (see
//! `docs/PLUGINS.md` and `examples/custom-sink`):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     coffer::main_with(|registry| {
//!         // my_sink::register(registry);
//!         let _ = registry;
//!     })
//! }
//! ```

mod argv;
mod commands;
#[cfg(test)]
mod config_tests;
mod ctx;
mod output;
mod restoring;
mod retention;
#[cfg(test)]
mod schema_tests;
mod transfer;

// The application layer, under the names the commands use.
use coffer_app::{checks, config, evidence, hooks, record};

use std::process::ExitCode;

pub use commands::schema::all as json_schemas;

use coffer_core::{Error, ErrorKind, Registry};

/// Every plugin compiled into this crate (per its cargo features).
pub fn builtin_registry() -> Registry {
    let mut reg = Registry::new();
    checks::register(&mut reg);
    coffer_source_file::register(&mut reg);
    coffer_source_env::register(&mut reg);
    coffer_source_command::register(&mut reg);
    #[cfg(feature = "k8s")]
    coffer_source_k8s::register(&mut reg);
    #[cfg(feature = "mongo")]
    coffer_source_mongo::register(&mut reg);
    coffer_sink_local::register(&mut reg);
    #[cfg(feature = "s3")]
    coffer_sink_s3::register(&mut reg);
    #[cfg(feature = "sftp")]
    coffer_sink_sftp::register(&mut reg);
    #[cfg(feature = "opendal")]
    coffer_sink_opendal::register(&mut reg);
    coffer_sink_media::register(&mut reg);
    reg
}

/// What an interrupted run says: a backup stopped leaves no snapshot and a
/// restore stopped before its commit leaves nothing (one stopped while
/// committing may have applied part: running it again finishes it).
const STOPPED_HINT: &str = "a backup stopped leaves no snapshot (the packs a chunked one stored stay until the next \
     prune removes them), and a restore stopped before its commit changes nothing; run the command again (a restore \
     applies everything again and sweeps what a stopped one staged)";

/// Failures that decide the exit code.
pub(crate) enum Failure {
    /// An error from the work.
    Error(Error),
    /// The snapshot was written, but some required sinks failed.
    Partial(String),
    /// Some snapshots failed verification (already reported).
    Integrity(String),
    /// Post-restore checks or a drill failed (already reported).
    Checks(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

/// How a command ended, for the audit log.
fn ending(result: &Result<(), Failure>) -> record::Ending {
    let (result, exit, error) = match result {
        Ok(()) => ("ok", 0, None),
        Err(Failure::Error(e)) => ("failed", exit_code(e), Some(e.to_string())),
        Err(Failure::Partial(m)) => ("partial", 4, Some(m.clone())),
        Err(Failure::Integrity(m)) => ("failed", 3, Some(m.clone())),
        Err(Failure::Checks(m)) => ("checks-failed", 6, Some(m.clone())),
    };
    record::Ending { result, exit, error }
}

/// The exit code of a failed command.
pub(crate) fn exit_code(e: &Error) -> u8 {
    if e.kind() == ErrorKind::Cancelled {
        130
    } else {
        exit_code_of(e.kind())
    }
}

fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::ConfigInvalid => 2,
        ErrorKind::Integrity => 3,
        ErrorKind::Decryption => 5,
        ErrorKind::SinkMissing => 10,
        _ => 1,
    }
}

/// Whether a panic is `println!` failing on a closed stdout.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to std") && text.contains("Broken pipe")
}

/// The default panic message, except for a closed stdout (see
/// [`is_broken_pipe`]), which ends the run quietly.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default(info);
        }
    }));
}

/// Runs the `coffer` command line with the built-in plugins plus those
/// `register` adds, and returns the exit code. A kind or scheme registered
/// again is an error (exit 2) unless the plugin asks to replace it
/// (`Registry::replace_source`, `Registry::replace_sink`).
pub fn main_with(register: impl FnOnce(&mut Registry)) -> ExitCode {
    let registry = match plugins(register) {
        Ok(registry) => registry,
        Err(code) => return code,
    };
    // The dependency graph enables both of rustls' providers (ring for
    // mongodb, aws-lc-rs for object_store), so none is the default: pick
    // one before any TLS client is built, or building one panics.
    #[cfg(any(feature = "s3", feature = "opendal", feature = "k8s"))]
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match parse_args(&registry) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.verbose);

    coffer_core::process::single_malloc_arena();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    let cancel = coffer_core::CancelFlag::default();
    let ctx = commands::context(&cli, registry, cancel.clone());
    let audited = cli.command.audited();
    let started = std::time::Instant::now();
    quiet_broken_pipe();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run_until_stopped(&ctx, cli.command, &cancel))
    }));
    let result = match run {
        Ok(r) => r,
        // stdout went away (`coffer list | head -1`): what was asked is
        // done (the command's future was dropped, so its cleanup ran);
        // end like a tool killed by SIGPIPE, without a panic message.
        Err(panic) if is_broken_pipe(panic.as_ref()) => {
            drop(runtime);
            return ExitCode::from(141);
        }
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if let Some(command) = audited {
        let _guard = runtime.enter();
        let config = ctx.config().ok().flatten();
        let seconds = started.elapsed().as_secs_f64();
        record::finish(config.as_ref(), &ctx.audit, command, &ending(&result), seconds);
    }
    // Dropping the runtime here lets cancelled work run its cleanup guards.
    drop(runtime);
    exit(result, json)
}

/// The built-in plugins plus those `register` adds, or the exit code when they clash.
fn plugins(register: impl FnOnce(&mut Registry)) -> Result<Registry, ExitCode> {
    let mut registry = builtin_registry();
    register(&mut registry);
    if let Err(e) = registry.check() {
        output::print_error(&e, false);
        return Err(ExitCode::from(exit_code(&e)));
    }
    Ok(registry)
}

/// The parsed command line, or the exit code when it is refused (help and version exit here).
fn parse_args(registry: &Registry) -> Result<commands::Cli, ExitCode> {
    // No secret key material given on the command line reaches any output,
    // clap's errors included.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(e) = argv::refuse_secrets(&args) {
        output::print_error(&e, argv::wants_json(&args));
        return Err(ExitCode::from(exit_code(&e)));
    }
    match commands::parse(registry, &args) {
        Ok(cli) => Ok(cli),
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            let e = argv::redacted_clap_error(&e, &args);
            output::print_error(&e, argv::wants_json(&args));
            Err(ExitCode::from(2))
        }
    }
}

/// Runs `command` until it ends or a signal stops it (a graceful command is let finish).
async fn run_until_stopped(
    ctx: &ctx::Ctx,
    command: commands::Command,
    cancel: &coffer_core::CancelFlag,
) -> Result<(), Failure> {
    // A long-running command (the oplog follower) stops on its own
    // when the flag is raised: it writes what it holds first, and a
    // stop is its normal end.
    let graceful = command.graceful();
    let run = commands::run(ctx, command);
    tokio::pin!(run);
    let stopped = tokio::select! {
        r = &mut run => return r,
        _ = tokio::signal::ctrl_c() => "interrupted".to_string(),
        signal = termination_signal() => format!("terminated ({signal})"),
    };
    // Blocking work (a restore) cannot be dropped: it sees the flag
    // and aborts before committing anything.
    cancel.cancel();
    if graceful {
        return run.await;
    }
    Err(Failure::Error(
        Error::new(ErrorKind::Cancelled, stopped).with_hint(STOPPED_HINT),
    ))
}

/// The first of SIGTERM and SIGHUP received, by name (pending forever when they cannot be watched).
async fn termination_signal() -> &'static str {
    // SIGTERM (a service manager stopping the run) and SIGHUP (an SSH
    // session dropping) are handled like Ctrl-C: dropped futures run
    // their cleanup (locks, `after` hooks, a command source's child,
    // a drill's scratch targets).
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
        (Ok(mut term), Ok(mut hup)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        },
        _ => std::future::pending::<&str>().await,
    }
}

/// Logging on stderr: `-v` info, `-vv` debug (or `RUST_LOG`), colour only
/// on a terminal without `NO_COLOR`.
fn init_logging(verbose: u8) {
    // kube logs every failed request at ERROR; coffer reports it itself,
    // with a hint, so its own log line would only repeat it.
    let filter = match verbose {
        0 => "warn,kube_client=off",
        1 => "info,coffer=info,kube_client=off",
        _ => "debug",
    };
    let env_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Colour only on a terminal, and never with NO_COLOR (https://no-color.org):
    // logs written by cron or into files carry no escape codes.
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// The exit code of a command's result, its error printed (as JSON with
/// `--json`).
fn exit(result: Result<(), Failure>, json: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(e)) => {
            output::print_error(&e, json);
            ExitCode::from(if e.kind() == ErrorKind::Cancelled {
                130
            } else {
                exit_code_of(e.kind())
            })
        }
        Err(Failure::Partial(msg)) => {
            if !json {
                eprintln!("error: {msg}");
            }
            ExitCode::from(4)
        }
        Err(Failure::Integrity(msg)) => {
            if !json {
                eprintln!("error: {msg}");
            }
            ExitCode::from(3)
        }
        Err(Failure::Checks(msg)) => {
            if !json {
                eprintln!("error: {msg}");
            }
            ExitCode::from(6)
        }
    }
}
