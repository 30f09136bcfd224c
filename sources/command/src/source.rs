//! [`CommandSource`]: capture of a command's standard output.
//!
//! Tokio use: the command runs under `tokio::process`; its stdout is read
//! into a [`SpillTask`] (memory, then an encrypted unlinked temp file) and
//! its stderr is logged line by line while it runs. The entry is sent only
//! after the command exited with status 0.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coffer_core::process::GroupGuard;
use coffer_core::spill::SpillTask;
use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceFactory, SourceInfo, SourceReport, check_relative_path, config_error, human_size, toml,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::KIND;
use crate::config::{CommandLine, CommandSourceConfig};
use crate::restore::CommandRestorer;
use crate::run::{End, Program, StderrTail};

/// Output held in memory before it goes to the encrypted temp file.
const SPILL_LIMIT: usize = 8 << 20;
/// Default time limit of a command.
const DEFAULT_TIMEOUT: u64 = 3600;

/// A command whose standard output is backed up, and optionally a command
/// that takes it back on restore. `Debug` shows variable names, not values.
#[derive(Debug, Clone)]
pub struct CommandSource {
    name: String,
    capture: Program,
    restore: Option<Program>,
    secret: bool,
    file: String,
    /// What the origin records (no variable values).
    origin: serde_json::Value,
}

impl CommandSource {
    /// A source from its config table; a relative `dir` is resolved
    /// against `base_dir`.
    pub fn with_config(
        name: impl Into<String>,
        config: &CommandSourceConfig,
        base_dir: &Path,
    ) -> Result<Self> {
        let name = name.into();
        let with_source = |e: Error| e.with_context("source", &name);
        let argv = config
            .command
            .argv(config.shell, "command")
            .map_err(with_source)?;
        let restore_argv = match &config.restore {
            Some(r) => Some(r.argv(config.shell, "restore").map_err(with_source)?),
            None => None,
        };
        let file = config.file.clone().unwrap_or_else(|| format!("{name}.out"));
        if check_relative_path(&file).is_err() || file.contains('/') || file.chars().any(char::is_control) {
            return Err(config_error(format!(
                "`file` of command source `{name}` is not a plain file name"
            ))
            .with_context("file", coffer_core::printable(&file))
            .with_hint("give a name such as \"vault.json\", without directories"));
        }
        let timeout = config.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout == 0 {
            return Err(config_error(format!("`timeout` of command source `{name}` is 0"))
                .with_hint("give the seconds the command may run, e.g. timeout = 600"));
        }
        for var in config.env.keys().chain(&config.pass_env) {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(
                    config_error(format!("`{var}` is not an environment variable name"))
                        .with_context("source", &name),
                );
            }
        }
        let dir: Option<PathBuf> = config.dir.as_ref().map(|d| base_dir.join(d));
        let timeout_d = Duration::from_secs(timeout);
        // Variables of `env` are recorded by name only; a restore from the
        // bundle alone takes their values from coffer's environment.
        let mut env_names: Vec<&String> = config.env.keys().collect();
        env_names.extend(&config.pass_env);
        let origin = json!({
            "command": argv,
            "restore": restore_argv,
            "secret": config.secret,
            "file": file,
            "timeout": timeout,
            "pass-env": env_names,
            "dir": dir.as_ref().map(|d| d.to_string_lossy()),
        });
        let program = |argv| Program::new(argv, &config.env, &config.pass_env, dir.clone(), timeout_d);
        Ok(CommandSource {
            capture: program(argv),
            restore: restore_argv.map(program),
            secret: config.secret,
            file,
            origin,
            name,
        })
    }

    fn area(&self) -> Area {
        if self.secret { Area::Secrets } else { Area::Files }
    }

    /// Runs the command; its whole output once it exited with status 0.
    async fn run(&self) -> Result<(coffer_core::spill::SpillBody, Duration)> {
        let started = Instant::now();
        let program = &self.capture;
        let mut child = tokio::process::Command::from(program.command(Stdio::null()))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| program.start_error(&self.name, e))?;
        // Killed with its whole group if the backup stops meanwhile.
        let mut guard = GroupGuard::new(child.id());
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut tail = StderrTail::default();
        let work = async {
            let read_out = async {
                let mut spill = SpillTask::spawn(SPILL_LIMIT);
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = stdout.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    spill.append(&buf[..n]).await?;
                }
                spill.finish().await
            };
            let read_err = async {
                let mut lines = BufReader::new(stderr).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    tail.line(program, &self.name, &line);
                }
            };
            let (body, ()) = tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (body, status)
        };
        let (body, status) = match tokio::time::timeout(program.timeout, work).await {
            Ok(done) => done,
            // The guard kills the group as it goes.
            Err(_) => return Err(program.failure(&self.name, "command", End::TimedOut, &tail)),
        };
        let status = status.map_err(|e| Error::io(format!("cannot wait for `{}`", program.name()), e))?;
        guard.disarm();
        if !status.success() {
            return Err(program.failure(&self.name, "command", End::Exited(status), &tail));
        }
        let body = body.map_err(|e| {
            Error::io(format!("cannot hold the output of `{}`", program.name()), e)
                .with_context("source", &self.name)
                .with_hint(
                    "check free space in the temp directory (TMPDIR); the output is kept there encrypted",
                )
        })?;
        Ok((body, started.elapsed()))
    }
}

#[async_trait]
impl Source for CommandSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new(
            KIND,
            self.name.clone(),
            format!("command `{}` → {}", self.capture.name(), self.file),
            self.origin.clone(),
        )
    }

    async fn check(&self) -> Result<()> {
        let program = &self.capture.argv[0];
        if program.contains('/') {
            if !Path::new(program).exists() {
                return Err(
                    Error::new(ErrorKind::NotFound, format!("`{program}` does not exist"))
                        .with_context("source", &self.name)
                        .with_hint("check the source's `command`"),
                );
            }
            return Ok(());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        if std::env::split_paths(&path).any(|d| d.join(program).is_file()) {
            Ok(())
        } else {
            Err(
                Error::new(ErrorKind::NotFound, format!("`{program}` is not on PATH"))
                    .with_context("source", &self.name)
                    .with_hint("install it, or give its full path in the source's `command`"),
            )
        }
    }

    async fn capture(&self, _ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let (body, took) = self.run().await?;
        let size = body.size;
        let mut details = json!({
            "program": self.capture.name(),
            "file": self.file,
            "bytes": size,
            "seconds": (took.as_secs_f64() * 1000.0).round() / 1000.0,
        });
        // A hash of a secret would let anyone with the manifest test guesses.
        if !self.secret {
            details["sha256"] = json!(hex::encode(body.sha256));
        }
        out.send(Entry {
            area: self.area(),
            path: self.file.clone(),
            mode: if self.secret { 0o600 } else { 0o644 },
            mtime: now_secs(),
            owner: None,
            stat: None,
            body: EntryBody::File {
                size,
                reader: body.reader,
            },
        })
        .await?;
        Ok(SourceReport {
            position: None,
            summary: format!(
                "`{}` wrote {} in {:.1} s",
                self.capture.name(),
                human_size(size),
                took.as_secs_f64()
            ),
            details,
        })
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let restorer =
            CommandRestorer::new(self.name.clone(), self.file.clone(), self.restore.clone(), opts)?;
        Ok(Box::new(restorer))
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Registers [`CommandSource`] under [`KIND`].
pub(crate) struct CommandSourceFactory;

impl SourceFactory for CommandSourceFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn from_config(&self, name: &str, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Source>> {
        let config = CommandSourceConfig::from_table(table)?;
        Ok(Arc::new(CommandSource::with_config(name, &config, base_dir)?))
    }

    fn from_spec(&self, _name: &str, spec: &str) -> Result<Arc<dyn Source>> {
        Err(config_error(format!("`command:{spec}` cannot be given on the command line"))
            .with_hint("declare a [source.NAME] table with kind = \"command\" and `command = [...]` in a config file"))
    }

    fn from_origin(&self, name: &str, origin: &serde_json::Value) -> Result<Arc<dyn Source>> {
        /// What [`CommandSource::info`] records.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Origin {
            command: Vec<String>,
            secret: bool,
            file: String,
            timeout: Option<u64>,
            pass_env: Vec<String>,
            dir: Option<PathBuf>,
            restore: Option<Vec<String>>,
        }
        let o: Origin = coffer_core::parse_origin(KIND, name, origin)?;
        let config = CommandSourceConfig {
            command: CommandLine::Argv(o.command),
            shell: false,
            secret: o.secret,
            file: Some(o.file),
            timeout: o.timeout,
            env: Default::default(),
            pass_env: o.pass_env,
            dir: o.dir,
            restore: o.restore.map(CommandLine::Argv),
        };
        Ok(Arc::new(CommandSource::with_config(
            name,
            &config,
            Path::new("/"),
        )?))
    }
}
