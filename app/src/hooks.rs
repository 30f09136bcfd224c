//! Job hooks for cold backups: `before`, `after` and `on-failure` commands
//! of a job (argv lists, never a shell string), each run with the job's
//! `hook-timeout`. `after` runs whatever happens — success, failure, a
//! failing `before`, Ctrl-C or SIGTERM — so coffer never leaves a service
//! stopped; a hook that outlives its timeout is killed with its whole
//! process group. Hook output goes to the log (`-v`); the report lists each
//! hook by program name, exit status and duration (never its arguments,
//! which may hold credentials).

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use coffer_core::ops::millis;
use coffer_core::process::{GroupGuard, kill_group};
use coffer_core::{Error, ErrorKind, Result};

/// Default `hook-timeout`, seconds.
pub const DEFAULT_TIMEOUT: u64 = 300;

/// The hooks of a job: the keys of the same names in its config table
/// (`crate::config::JobConfig`, where they are documented).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub before: Vec<Vec<String>>,
    pub after: Vec<Vec<String>>,
    pub on_failure: Vec<Vec<String>>,
    pub hook_timeout: Option<u64>,
    pub health: Option<crate::health::Health>,
}

impl Hooks {
    /// Whether any hook is configured.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty() && self.on_failure.is_empty() && self.health.is_none()
    }

    /// Checks the commands: each a non-empty argv.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (phase, list) in [
            ("before", &self.before),
            ("after", &self.after),
            ("on-failure", &self.on_failure),
        ] {
            if list.iter().any(|argv| argv.first().is_none_or(|p| p.is_empty())) {
                return Err(format!(
                    "`{phase}` holds an empty command: each hook is a list like [\"systemctl\", \"stop\", \"app\"]"
                ));
            }
        }
        if self.hook_timeout == Some(0) {
            return Err("`hook-timeout` must be at least 1 second".into());
        }
        match &self.health {
            Some(h) => h.check("health"),
            None => Ok(()),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.hook_timeout.unwrap_or(DEFAULT_TIMEOUT))
    }
}

/// How one hook went.
#[derive(Debug, Clone)]
pub struct HookReport {
    phase: &'static str,
    program: String,
    /// Exit code; `None` when killed or not started.
    status: Option<i32>,
    timed_out: bool,
    seconds: f64,
    error: Option<String>,
}

impl HookReport {
    fn ok(&self) -> bool {
        self.status == Some(0)
    }

    pub fn typed(&self) -> coffer_core::ops::HookRun {
        coffer_core::ops::HookRun {
            phase: self.phase.to_string(),
            program: self.program.clone(),
            ok: self.ok(),
            status: self.status,
            timed_out: self.timed_out,
            seconds: millis(self.seconds),
            error: self.error.clone(),
        }
    }

    pub fn line(&self) -> String {
        let how = match (&self.error, self.timed_out, self.status) {
            (Some(e), _, _) => format!("FAILED: {e}"),
            (None, true, _) => "KILLED after its timeout".to_string(),
            (None, false, Some(0)) => "ok".to_string(),
            (None, false, Some(n)) => format!("FAILED: exit status {n}"),
            (None, false, None) => "FAILED: killed by a signal".to_string(),
        };
        format!(
            "hook {} {}: {how} ({:.1}s)",
            self.phase, self.program, self.seconds
        )
    }
}

/// The hooks of one run. Dropped before `finish` (an error path, Ctrl-C,
/// SIGTERM), it still runs the `after` hooks, synchronously.
pub struct HookRun {
    hooks: Hooks,
    pub reports: Vec<HookReport>,
    /// The health wait after `after`, if configured and reached.
    pub health: Option<crate::health::HealthReport>,
    after_done: bool,
}

impl HookRun {
    pub fn new(hooks: Hooks) -> HookRun {
        HookRun {
            hooks,
            reports: Vec::new(),
            health: None,
            after_done: false,
        }
    }

    /// Runs the `before` hooks in order; fails at the first that fails.
    pub async fn before(&mut self) -> Result<()> {
        for argv in self.hooks.before.clone() {
            let report = run_async("before", &argv, self.hooks.timeout()).await;
            let ok = report.ok();
            let line = report.line();
            self.reports.push(report);
            if !ok {
                return Err(Error::new(ErrorKind::Unexpected, format!("the backup did not start: {line}"))
                    .with_hint("fix the hook (run it by hand to see its output, or coffer -v); the `after` hooks ran"));
            }
        }
        Ok(())
    }

    /// Runs `after` (all of them), the health wait, then `on-failure` if
    /// the run, an `after` hook or the health wait failed; returns an error
    /// if an `after` hook or the health wait failed.
    pub async fn finish(&mut self, failed: bool) -> Result<()> {
        self.after_done = true;
        let mut after_failed = None;
        for argv in self.hooks.after.clone() {
            let report = run_async("after", &argv, self.hooks.timeout()).await;
            if !report.ok() && after_failed.is_none() {
                after_failed = Some(report.line());
            }
            self.reports.push(report);
        }
        if let Some(h) = self.hooks.health.clone() {
            let report = crate::health::wait(&h).await;
            let unhealthy = report.error();
            self.health = Some(report);
            if let Some(e) = unhealthy {
                for argv in self.hooks.on_failure.clone() {
                    let report = run_async("on-failure", &argv, self.hooks.timeout()).await;
                    self.reports.push(report);
                }
                return Err(match after_failed {
                    Some(line) => e.prefix(format!("an after hook failed ({line})")),
                    None => e,
                });
            }
        }
        if failed || after_failed.is_some() {
            for argv in self.hooks.on_failure.clone() {
                let report = run_async("on-failure", &argv, self.hooks.timeout()).await;
                self.reports.push(report);
            }
        }
        match after_failed {
            Some(line) => Err(
                Error::new(ErrorKind::Unexpected, format!("an after hook failed: {line}"))
                    .with_hint("the service may still be stopped: check it now"),
            ),
            None => Ok(()),
        }
    }
}

impl Drop for HookRun {
    fn drop(&mut self) {
        if self.after_done {
            return;
        }
        self.after_done = true;
        // Interrupted (Ctrl-C, SIGTERM, SIGHUP) or an early error: bring the
        // service back before the process ends. On a worker of the
        // multi-threaded runtime, `block_in_place` hands the worker's other
        // tasks (lock releases, other cleanups) to another thread while the
        // hooks run, up to their timeout.
        let hooks = &self.hooks;
        let run = || {
            for argv in &hooks.after {
                let report = run_blocking("after", argv, hooks.timeout());
                eprintln!("{}", report.line());
            }
            for argv in &hooks.on_failure {
                let report = run_blocking("on-failure", argv, hooks.timeout());
                eprintln!("{}", report.line());
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}

fn command(argv: &[String]) -> std::process::Command {
    let mut c = std::process::Command::new(&argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C does not reach it, and
        // a timeout kills everything it started.
        .process_group(0);
    c
}

fn program(argv: &[String]) -> String {
    std::path::Path::new(&argv[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| argv[0].clone())
}

fn log_output(phase: &str, program: &str, out: &[u8], stream: &str) {
    for line in String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        tracing::info!(hook = phase, program, stream, "{line}");
    }
}

/// Starts timing a hook; `report` then says how it went.
fn timed(phase: &'static str, argv: &[String]) -> impl Fn(Option<i32>, bool, Option<String>) -> HookReport {
    let started = Instant::now();
    let program = program(argv);
    move |status, timed_out, error| HookReport {
        phase,
        program: program.clone(),
        status,
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
        error,
    }
}

async fn run_async(phase: &'static str, argv: &[String], timeout: Duration) -> HookReport {
    let report = timed(phase, argv);
    let name = program(argv);
    let child = tokio::process::Command::from(command(argv))
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return report(None, false, Some(format!("cannot start it: {e}"))),
    };
    let mut guard = GroupGuard::new(child.id());
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_all(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_all(s)));
    // The hook's own exit decides, not the end of its output: a hook that
    // starts something in the background (`sh -c 'x &'`) leaves a child
    // holding the pipes open.
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            guard.disarm();
            log_output(phase, &name, &output_of(stdout).await, "stdout");
            log_output(phase, &name, &output_of(stderr).await, "stderr");
            report(status.code(), false, None)
        }
        Ok(Err(e)) => report(None, false, Some(format!("waiting for it: {e}"))),
        // The guard kills the group as it goes.
        Err(_) => report(None, true, None),
    }
}

async fn read_all(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    out
}

/// What a hook wrote, waiting a moment at most once it exited (a child it
/// left in the background may keep the pipe open).
async fn output_of(reader: Option<tokio::task::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    match tokio::time::timeout(Duration::from_millis(500), &mut reader).await {
        Ok(Ok(out)) => out,
        _ => {
            reader.abort();
            Vec::new()
        }
    }
}

fn run_blocking(phase: &'static str, argv: &[String], timeout: Duration) -> HookReport {
    let started = Instant::now();
    let report = timed(phase, argv);
    let mut cmd = command(argv);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return report(None, false, Some(format!("cannot start it: {e}"))),
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return report(status.code(), false, None),
            Ok(None) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_group(child.id());
                let _ = child.wait();
                return report(None, true, None);
            }
            Err(e) => return report(None, false, Some(format!("waiting for it: {e}"))),
        }
    }
}
