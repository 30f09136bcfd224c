//! [`ExecSink`].

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::{
    ByteStream, Bytes, Error, ErrorKind, ObjectMeta, PutMode, PutOptions, Result, Sink, SinkInfo,
    SinkSettings, TableContext, config_error, toml, validate_key,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::KIND;

/// Marks the temporary key of an upload in progress.
const TEMP_MARK: &str = ".coffer-tmp-";

/// The `[sink.NAME] kind = "exec"` table: one shell command per operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExecSinkConfig {
    /// Stores stdin under `$COFFER_KEY`.
    pub put: String,
    /// Prints the object `$COFFER_KEY` on stdout.
    pub get: String,
    /// Prints every object as a `SIZE;KEY` line (keys relative to the sink).
    pub list: String,
    /// Renames `$COFFER_FROM` to `$COFFER_TO`.
    pub rename: String,
    /// Removes `$COFFER_KEY`.
    pub delete: String,
    /// Seconds each command may run (default 3600).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Where the commands run (relative to the config file).
    #[serde(default)]
    pub dir: Option<std::path::PathBuf>,
}

/// A sink whose objects live wherever its commands put them.
#[derive(Debug, Clone)]
pub struct ExecSink {
    name: String,
    config: ExecSinkConfig,
    timeout: Duration,
}

impl ExecSink {
    /// A sink named `name` (for messages) running `config`'s commands.
    pub fn new(name: impl Into<String>, config: ExecSinkConfig) -> Self {
        let timeout = Duration::from_secs(config.timeout.unwrap_or(3600).max(1));
        ExecSink {
            name: name.into(),
            config,
            timeout,
        }
    }

    fn command(&self, line: &str, vars: &[(&str, &str)]) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(line)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &self.config.dir {
            c.current_dir(dir);
        }
        c
    }

    fn failed(&self, op: &str, detail: String) -> Error {
        Error::new(
            ErrorKind::Unreachable,
            format!("exec sink `{}`: the `{op}` command {detail}", self.name),
        )
        .with_hint(format!("run the sink's `{op}` command by hand to see why"))
    }

    /// Waits for `child` (its stdout already taken or not), within the
    /// timeout; its stdout when it exits 0.
    async fn finish(&self, op: &str, child: Child) -> Result<Vec<u8>> {
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => Err(self.failed(op, format!("did not finish within {} s", self.timeout.as_secs()))),
            Ok(Err(e)) => Err(self.failed(op, format!("could not run: {e}"))),
            Ok(Ok(out)) if out.status.success() => Ok(out.stdout),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.lines().last().unwrap_or("").trim().to_string();
                Err(self.failed(
                    op,
                    format!("failed ({}): {}", out.status, coffer_core::printable(&last)),
                ))
            }
        }
    }

    async fn run(&self, op: &str, line: &str, vars: &[(&str, &str)]) -> Result<Vec<u8>> {
        let child = self
            .command(line, vars)
            .spawn()
            .map_err(|e| self.failed(op, format!("could not start: {e}")))?;
        self.finish(op, child).await
    }

    /// Every object, temporary ones included.
    async fn list_all(&self) -> Result<Vec<ObjectMeta>> {
        let out = self.run("list", &self.config.list, &[]).await?;
        let text = String::from_utf8(out)
            .map_err(|_| self.failed("list", "printed something that is not UTF-8".into()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (size, key) = line
                    .split_once(';')
                    .ok_or_else(|| self.failed("list", format!("printed `{line}`, not `SIZE;KEY`")))?;
                let size = size
                    .trim()
                    .parse()
                    .map_err(|_| self.failed("list", format!("printed `{line}`, not `SIZE;KEY`")))?;
                Ok(ObjectMeta {
                    key: key.to_string(),
                    size,
                    modified: None,
                })
            })
            .collect()
    }

    async fn find(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.list_all().await?.into_iter().find(|o| o.key == key))
    }

    async fn upload(&self, temp: &str, mut body: ByteStream) -> Result<u64> {
        let mut child = self
            .command(&self.config.put, &[("COFFER_KEY", temp)])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| self.failed("put", format!("could not start: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            stdin
                .write_all(&chunk)
                .await
                .map_err(|e| self.failed("put", format!("stopped reading its input: {e}")))?;
            written += chunk.len() as u64;
        }
        stdin
            .shutdown()
            .await
            .map_err(|e| self.failed("put", format!("stopped reading its input: {e}")))?;
        drop(stdin);
        self.finish("put", child).await?;
        Ok(written)
    }
}

/// Deletes an upload's temporary key unless the upload was renamed into
/// place (also when the put future is dropped half-way).
struct TempGuard {
    sink: Option<ExecSink>,
    temp: String,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let temp = std::mem::take(&mut self.temp);
            handle.spawn(async move {
                let _ = sink
                    .run("delete", &sink.config.delete, &[("COFFER_KEY", &temp)])
                    .await;
            });
        }
    }
}

#[async_trait]
impl Sink for ExecSink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new("exec", format!("commands of sink `{}`", self.name))
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        let temp = format!("{key}{TEMP_MARK}{:016x}", rand::random::<u64>());
        let mut guard = TempGuard {
            sink: Some(self.clone()),
            temp: temp.clone(),
        };
        let written = self.upload(&temp, body).await?;
        if opts.mode == PutMode::Create && self.find(key).await?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("`{key}` already exists"),
            ));
        }
        self.run(
            "rename",
            &self.config.rename,
            &[("COFFER_FROM", &temp), ("COFFER_TO", key)],
        )
        .await?;
        guard.sink = None;
        Ok(written)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        let Some(meta) = self.find(key).await? else {
            return Err(Error::new(ErrorKind::NotFound, format!("no object `{key}`")));
        };
        let mut child = self
            .command(&self.config.get, &[("COFFER_KEY", key)])
            .spawn()
            .map_err(|e| self.failed("get", format!("could not start: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let expected = meta.size;
        let me = self.clone();
        // Streams the command's stdout; at its end, checks the exit status
        // and that exactly `expected` bytes came.
        let state = (Some(stdout), Some(child), 0u64);
        let stream = futures::stream::unfold(state, move |(out, child, seen)| {
            let me = me.clone();
            async move {
                let mut out = out?;
                let mut buf = vec![0u8; 256 << 10];
                match out.read(&mut buf).await {
                    Ok(0) => {
                        let status = me.finish("get", child.expect("child")).await;
                        let end = match status {
                            Err(e) => Err(e),
                            Ok(_) if seen != expected => Err(Error::new(
                                ErrorKind::Integrity,
                                format!("the `get` command printed {seen} bytes of a {expected}-byte object"),
                            )),
                            Ok(_) => return None,
                        };
                        Some((end.map(|()| Bytes::new()), (None, None, seen)))
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (Some(out), child, seen + n as u64)))
                    }
                    Err(e) => Some((
                        Err(Error::io("reading the `get` command's output", e)),
                        (None, None, seen),
                    )),
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .filter(|o| o.key.starts_with(prefix) && !o.key.contains(TEMP_MARK))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        if self.find(key).await?.is_none() {
            return Ok(());
        }
        self.run("delete", &self.config.delete, &[("COFFER_KEY", key)])
            .await
            .map(|_| ())
    }
}

/// What opens an [`ExecSink`]: its name (for messages) and its commands.
/// The default [`SinkSettings::from_url`] refuses URLs: an exec sink is
/// declared in `coffer.toml` only.
pub(crate) struct ExecSettings {
    name: String,
    config: ExecSinkConfig,
}

impl SinkSettings for ExecSettings {
    const KIND: &'static str = KIND;

    fn from_table(table: toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let mut config: ExecSinkConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    config_error(format!("invalid `exec` sink settings: {}", e.message()))
                    .with_context("sink", at.name)
                    .with_hint(
                        "an `exec` sink takes the commands put, get, list, rename, delete, and timeout, dir",
                    )
                })?;
        config.dir = Some(at.base_dir.join(config.dir.unwrap_or_default()));
        Ok(ExecSettings {
            name: at.name.to_string(),
            config,
        })
    }

    fn open(self) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(ExecSink::new(self.name, self.config)))
    }
}
