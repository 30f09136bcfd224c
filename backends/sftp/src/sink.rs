//! [`SftpSink`]: objects as files under a directory of an SSH server.
//!
//! One SSH connection (one SFTP channel) per sink, shared by every
//! operation: SFTP requests are pipelined, so concurrent puts and gets run
//! at once over it. The connection is opened on first use and reopened
//! when it dropped. All I/O is async on the caller's Tokio runtime; the
//! key file and known_hosts are read once per connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use coffer_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, PutMode, PutOptions, Result, Sink, SinkInfo, SinkSettings,
    validate_key, validate_prefix,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpProtoError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::sync::{Mutex, mpsc};

use crate::config::SftpSinkConfig;
use crate::error::SftpError;

/// Name prefix of the files a put writes before renaming them into place.
pub const TEMP_PREFIX: &str = coffer_core::fsutil::TEMP_PREFIX;
/// Size of one SFTP write or read request.
const IO_CHUNK: usize = 64 * 1024;
/// SFTP writes or reads in flight per put or get.
const IN_FLIGHT: usize = 16;
/// Temp files older than this are leftovers of killed runs; the first put
/// of a sink removes them.
const STALE_TEMP_AGE: Duration = Duration::from_secs(12 * 3600);

/// An open SSH connection with its SFTP channel.
struct Conn {
    sftp: RawSftpSession,
    ssh: russh::client::Handle<HostKeyCheck>,
    /// Set when a request saw the connection fail.
    broken: AtomicBool,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.ssh.is_closed()
    }
}

/// A sink storing each object as a file under a directory of an SFTP
/// server. See the crate docs for the guarantees.
#[derive(Clone)]
pub struct SftpSink {
    config: Arc<SftpSinkConfig>,
    conn: Arc<Mutex<Option<Arc<Conn>>>>,
    swept: Arc<AtomicBool>,
}

impl std::fmt::Debug for SftpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpSink")
            .field("location", &self.config.location())
            .finish()
    }
}

impl SftpSink {
    /// A sink from its settings; connects on first use.
    pub fn new(config: SftpSinkConfig) -> Self {
        SftpSink {
            config: Arc::new(config),
            conn: Arc::default(),
            swept: Arc::default(),
        }
    }

    /// A sink from `sftp://USER@HOST:PORT/PATH?key=…` (see
    /// [`SftpSinkConfig::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::new(SftpSinkConfig::from_url(url)?))
    }

    /// Its settings.
    pub fn config(&self) -> &SftpSinkConfig {
        &self.config
    }

    /// Connects now (and authenticates and opens SFTP), to check settings
    /// before any work.
    pub async fn check(&self) -> Result<()> {
        self.conn().await.map(|_| ())
    }

    /// Removes `.coffer-tmp-*` files last modified more than `older_than`
    /// ago — left by puts whose connection or process died — and returns
    /// how many were removed. Give a margin so running puts are spared.
    pub async fn cleanup_stale_temp(&self, older_than: Duration) -> Result<usize> {
        let conn = self.conn().await?;
        let cutoff = jiff::Timestamp::now().as_second() - older_than.as_secs() as i64;
        let mut files = Vec::new();
        self.walk(&conn, &self.root(), "", &mut files, true).await?;
        let mut removed = 0;
        for (rel, attrs) in files {
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            let leftover = coffer_core::fsutil::is_leftover_temp(name, None, older_than)
                || attrs.mtime.is_some_and(|m| i64::from(m) <= cutoff);
            if leftover {
                let path = self.remote(&rel);
                match conn.sftp.remove(path.as_str()).await {
                    Ok(_) => removed += 1,
                    Err(e) if status_code(&e) == Some(StatusCode::NoSuchFile) => {}
                    Err(e) => return Err(self.op_err(&conn, "removing a stale temp file", &rel, e)),
                }
            }
        }
        Ok(removed)
    }

    fn root(&self) -> String {
        let p = self.config.path.trim_end_matches('/');
        if p.is_empty() {
            if self.config.path.starts_with('/') {
                "/".into()
            } else {
                ".".into()
            }
        } else {
            p.to_string()
        }
    }

    fn remote(&self, key: &str) -> String {
        let root = self.root();
        if root.ends_with('/') {
            format!("{root}{key}")
        } else {
            format!("{root}/{key}")
        }
    }

    /// The shared connection, opened (again) if needed.
    async fn conn(&self) -> Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && c.usable()
        {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(connect(&self.config).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the connection; if the connection had dropped, opens a
    /// new one and runs `op` once more (only for idempotent operations).
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let conn = self.conn().await?;
        match op(conn.clone()).await {
            Err(e) if !conn.usable() => {
                tracing::debug!(error = %e, "SFTP connection dropped; reconnecting once");
                op(self.conn().await?).await
            }
            other => other,
        }
    }

    fn op_err(&self, conn: &Conn, op: &str, key: &str, e: SftpProtoError) -> Error {
        op_error(conn, &self.config.location(), op, key, e)
    }

    /// `mkdir -p` of the directory holding `key` (mode 0700).
    async fn ensure_parent(&self, conn: &Conn, key: &str) -> Result<()> {
        let mut dirs = Vec::new();
        let root = self.root();
        if root != "." && root != "/" {
            let mut acc = String::new();
            for seg in root.split('/') {
                if seg.is_empty() {
                    acc.push('/');
                    continue;
                }
                if !acc.is_empty() && !acc.ends_with('/') {
                    acc.push('/');
                }
                acc.push_str(seg);
                dirs.push(acc.clone());
            }
        }
        if let Some((parent, _)) = key.rsplit_once('/') {
            let mut acc = String::new();
            for seg in parent.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(seg);
                dirs.push(self.remote(&acc));
            }
        }
        // Most puts go to an existing directory: check the deepest first.
        if let Some(last) = dirs.last()
            && conn
                .sftp
                .stat(last.as_str())
                .await
                .is_ok_and(|a| a.attrs.is_dir())
        {
            return Ok(());
        }
        for d in dirs {
            let attrs = FileAttributes {
                permissions: Some(0o700),
                ..FileAttributes::empty()
            };
            if let Err(e) = conn.sftp.mkdir(d.as_str(), attrs).await {
                match conn.sftp.stat(d.as_str()).await {
                    Ok(a) if a.attrs.is_dir() => {}
                    Ok(_) => {
                        return Err(Error::new(
                            ErrorKind::Unsupported,
                            format!("cannot store `{key}`: {d} exists and is not a directory"),
                        )
                        .with_hint(
                            "the sink cannot hold both an object and keys below it; use another key",
                        ));
                    }
                    Err(_) => return Err(self.op_err(conn, "creating a directory", &d, e)),
                }
            }
        }
        Ok(())
    }

    /// Lists files under `dir` (remote path) recursively; `rel` is `dir`
    /// relative to the root. Temp files are skipped unless `temps`, which
    /// lists only them.
    async fn walk(
        &self,
        conn: &Conn,
        dir: &str,
        rel: &str,
        out: &mut Vec<(String, FileAttributes)>,
        temps: bool,
    ) -> Result<()> {
        let mut stack = vec![(dir.to_string(), rel.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let handle = match conn.sftp.opendir(dir.as_str()).await {
                Ok(h) => h.handle,
                Err(e) if matches!(status_code(&e), Some(StatusCode::NoSuchFile)) => continue,
                Err(e) => {
                    // A prefix naming a file, not a directory, lists as empty.
                    if conn
                        .sftp
                        .stat(dir.as_str())
                        .await
                        .is_ok_and(|a| !a.attrs.is_dir())
                    {
                        continue;
                    }
                    return Err(self.op_err(conn, "listing", &dir, e));
                }
            };
            let result: Result<()> = async {
                loop {
                    let names = match conn.sftp.readdir(handle.as_str()).await {
                        Ok(n) => n,
                        Err(e) if status_code(&e) == Some(StatusCode::Eof) => break,
                        Err(e) => return Err(self.op_err(conn, "listing", &dir, e)),
                    };
                    for f in names.files {
                        if f.filename == "." || f.filename == ".." {
                            continue;
                        }
                        let child_rel = if rel.is_empty() {
                            f.filename.clone()
                        } else {
                            format!("{rel}/{}", f.filename)
                        };
                        if f.attrs.is_dir() {
                            stack.push((format!("{dir}/{}", f.filename), child_rel));
                        } else if f.attrs.is_regular() && f.filename.starts_with(TEMP_PREFIX) == temps {
                            out.push((child_rel, f.attrs));
                        }
                    }
                }
                Ok(())
            }
            .await;
            let _ = conn.sftp.close(handle.as_str()).await;
            result?;
        }
        Ok(())
    }

    async fn sweep_once(&self) {
        if self.swept.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.cleanup_stale_temp(STALE_TEMP_AGE).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(removed = n, sink = %self.config.location(), "removed stale temp files of interrupted uploads")
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep stale temp files"),
        }
    }

    async fn put_inner(&self, conn: Arc<Conn>, key: &str, body: ByteStream, mode: PutMode) -> Result<u64> {
        let dest = self.remote(key);
        let (tmp, handle) = self.create_temp(&conn, key, &dest).await?;
        let mut guard = TempGuard {
            conn: Some(conn.clone()),
            tmp: tmp.clone(),
            handle: Some(handle.clone()),
        };
        let offset = self.write_body(&conn, &handle, key, body).await?;
        if let Err(e) = conn.sftp.fsync(handle.as_str()).await
            && status_code(&e) != Some(StatusCode::OpUnsupported)
        {
            return Err(self.op_err(&conn, "fsync", key, e));
        }
        guard.handle = None;
        conn.sftp
            .close(handle.as_str())
            .await
            .map_err(|e| self.op_err(&conn, "closing", key, e))?;
        self.place(&conn, &tmp, &dest, key, mode).await?;
        guard.conn = None;
        Ok(offset)
    }

    /// Creates (mode 0600, never an existing file) the temp file a put of
    /// `key` writes beside `dest`; its path and open handle.
    async fn create_temp(&self, conn: &Conn, key: &str, dest: &str) -> Result<(String, String)> {
        let dir = match dest.rsplit_once('/') {
            Some((d, _)) => d.to_string(),
            None => ".".into(),
        };
        // Named after this process, so that a later run from this host
        // removes it at once if this one is killed.
        let tmp = format!(
            "{dir}/{}{:016x}",
            coffer_core::fsutil::owned_temp_prefix(),
            rand::random::<u64>()
        );
        let attrs = FileAttributes {
            permissions: Some(0o600),
            ..FileAttributes::empty()
        };
        let handle = conn
            .sftp
            .open(
                tmp.as_str(),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
                attrs,
            )
            .await
            .map_err(|e| self.op_err(conn, "creating a temp file", key, e))?
            .handle;
        Ok((tmp, handle))
    }

    /// Writes `body` to the open file `handle` in `IO_CHUNK` requests, up
    /// to `IN_FLIGHT` at once; the number of bytes written.
    async fn write_body(
        &self,
        conn: &Arc<Conn>,
        handle: &str,
        key: &str,
        mut body: ByteStream,
    ) -> Result<u64> {
        let mut offset = 0u64;
        let mut pending = FuturesUnordered::new();
        let mut buf: Vec<u8> = Vec::with_capacity(IO_CHUNK);
        let mut ended = false;
        while !ended {
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(e),
                None => ended = true,
            }
            while buf.len() >= IO_CHUNK || (ended && !buf.is_empty()) {
                let n = buf.len().min(IO_CHUNK);
                let data: Vec<u8> = buf.drain(..n).collect();
                while pending.len() >= IN_FLIGHT {
                    wait_write(&mut pending)
                        .await
                        .map_err(|e| self.op_err(conn, "writing", key, e))?;
                }
                let (c, h, at) = (conn.clone(), handle.to_string(), offset);
                pending.push(async move { c.sftp.write(h.as_str(), at, data).await.map(|_| ()) });
                offset += n as u64;
            }
        }
        while !pending.is_empty() {
            wait_write(&mut pending)
                .await
                .map_err(|e| self.op_err(conn, "writing", key, e))?;
        }
        drop(pending);
        Ok(offset)
    }

    /// Stats and opens `key` for reading, reconnecting once if the
    /// connection dropped; the connection, the handle and the size.
    async fn open_for_read(&self, key: &str) -> Result<(Arc<Conn>, String, u64)> {
        let path = self.remote(key);
        self.retrying(|c| {
            let path = path.clone();
            async move {
                let attrs = c
                    .sftp
                    .stat(path.as_str())
                    .await
                    .map_err(|e| self.op_err(&c, "get", key, e))?
                    .attrs;
                if !attrs.is_regular() {
                    return Err(Error::new(ErrorKind::NotFound, "no such object").with_context("key", key));
                }
                let h = c
                    .sftp
                    .open(path.as_str(), OpenFlags::READ, FileAttributes::empty())
                    .await
                    .map_err(|e| self.op_err(&c, "get", key, e))?
                    .handle;
                Ok((c, h, attrs.size.unwrap_or(0)))
            }
        })
        .await
    }

    /// Renames the complete temp file into place.
    async fn place(&self, conn: &Conn, tmp: &str, dest: &str, key: &str, mode: PutMode) -> Result<()> {
        if mode == PutMode::Create {
            // SSH_FXP_RENAME never replaces an existing file (OpenSSH
            // implements it with link(2)), so create-only is atomic.
            return match conn.sftp.rename(tmp, dest).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    if conn.sftp.stat(dest).await.is_ok() {
                        Err(SftpError::AlreadyExists { key: key.into() }.into())
                    } else {
                        Err(self.op_err(conn, "renaming into place", key, e))
                    }
                }
            };
        }
        // Overwrite: posix-rename@openssh.com replaces atomically.
        let mut data = Vec::new();
        for s in [tmp, dest] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match conn.sftp.extended("posix-rename@openssh.com", data).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) if s.status_code != StatusCode::OpUnsupported => {
                Err(self.op_err(conn, "renaming into place", key, SftpProtoError::Status(s)))
            }
            Err(e) if status_code(&e) != Some(StatusCode::OpUnsupported) => {
                Err(self.op_err(conn, "renaming into place", key, e))
            }
            _ => {
                // A server without the extension: remove, then rename (a
                // reader may briefly see no object).
                let _ = conn.sftp.remove(dest).await;
                conn.sftp
                    .rename(tmp, dest)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.op_err(conn, "renaming into place", key, e))
            }
        }
    }
}

async fn wait_write<F>(pending: &mut FuturesUnordered<F>) -> std::result::Result<(), SftpProtoError>
where
    F: Future<Output = std::result::Result<(), SftpProtoError>>,
{
    match pending.next().await {
        Some(r) => r,
        None => Ok(()),
    }
}

/// Reads the open file `handle` of `size` bytes in `IO_CHUNK` requests, up
/// to `IN_FLIGHT` at once, into `tx`, then closes it; a short read is an
/// integrity error.
async fn read_object(
    conn: Arc<Conn>,
    handle: String,
    size: u64,
    location: String,
    key: String,
    tx: mpsc::Sender<Result<Bytes>>,
) {
    let mut offset = 0u64;
    let mut next = 0u64;
    let mut reads = futures::stream::FuturesOrdered::new();
    loop {
        while reads.len() < IN_FLIGHT && next < size {
            let (c, h, at) = (conn.clone(), handle.clone(), next);
            reads.push_back(async move { c.sftp.read(h.as_str(), at, IO_CHUNK as u32).await });
            next += IO_CHUNK as u64;
        }
        let Some(r) = reads.next().await else { break };
        match r {
            Ok(data) => {
                let n = data.data.len() as u64;
                if n == 0 || (n < IO_CHUNK as u64 && offset + n < size) {
                    // Short read mid-file: the file changed under us.
                    let _ = tx
                        .send(Err(Error::new(
                            ErrorKind::Integrity,
                            "the object changed while being read",
                        )
                        .with_context("key", &key)))
                        .await;
                    break;
                }
                offset += n;
                if tx.send(Ok(Bytes::from(data.data))).await.is_err() {
                    break;
                }
            }
            Err(e) if status_code(&e) == Some(StatusCode::Eof) => {
                if offset != size {
                    let _ = tx
                        .send(Err(Error::new(
                            ErrorKind::Integrity,
                            format!("the object ended after {offset} of {size} bytes"),
                        )
                        .with_context("key", &key)))
                        .await;
                }
                break;
            }
            Err(e) => {
                let _ = tx.send(Err(op_error(&conn, &location, "reading", &key, e))).await;
                break;
            }
        }
    }
    drop(reads);
    let _ = conn.sftp.close(handle.as_str()).await;
}

/// Closes and removes the temp file of a put that failed or was dropped.
struct TempGuard {
    conn: Option<Arc<Conn>>,
    tmp: String,
    handle: Option<String>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let (tmp, handle) = (std::mem::take(&mut self.tmp), self.handle.take());
        let cleanup = async move {
            if let Some(h) = handle {
                let _ = conn.sftp.close(h.as_str()).await;
            }
            if let Err(e) = conn.sftp.remove(tmp.as_str()).await {
                tracing::debug!(%tmp, error = %e, "could not remove a temp file; the next run's sweep will");
            }
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(cleanup);
        }
    }
}

fn status_code(e: &SftpProtoError) -> Option<StatusCode> {
    match e {
        SftpProtoError::Status(s) => Some(s.status_code),
        _ => None,
    }
}

fn op_error(conn: &Conn, location: &str, op: &str, key: &str, e: SftpProtoError) -> Error {
    let (kind, temporary) = match &e {
        SftpProtoError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => (ErrorKind::NotFound, false),
            StatusCode::PermissionDenied => (ErrorKind::PermissionDenied, false),
            StatusCode::OpUnsupported => (ErrorKind::Unsupported, false),
            StatusCode::NoConnection | StatusCode::ConnectionLost => {
                conn.broken.store(true, Ordering::Relaxed);
                (ErrorKind::Unreachable, true)
            }
            _ => (ErrorKind::Unexpected, false),
        },
        SftpProtoError::IO(_) | SftpProtoError::Timeout => {
            conn.broken.store(true, Ordering::Relaxed);
            (ErrorKind::Unreachable, true)
        }
        other if conn.ssh.is_closed() || other.to_string().contains("closed") => {
            conn.broken.store(true, Ordering::Relaxed);
            (ErrorKind::Unreachable, true)
        }
        _ => (ErrorKind::Unexpected, false),
    };
    let message = match &e {
        SftpProtoError::Timeout => "no answer within the request timeout (connection lost?)".to_string(),
        other => other.to_string(),
    };
    Error::from(SftpError::Op {
        op: op.to_string(),
        location: location.to_string(),
        message,
        kind,
        temporary,
    })
    .with_context("key", key)
}

/// Checks the server's host key against the known_hosts file, recording
/// why it refused.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Option<PathBuf>,
    insecure: bool,
    problem: Arc<std::sync::Mutex<Option<SftpError>>>,
}

impl russh::client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> std::result::Result<bool, Self::Error> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if self.insecure {
            tracing::warn!(host = %self.host, %fingerprint, "accepting the server's host key without checking (insecure-accept-host-key)");
            return Ok(true);
        }
        let kh = self.known_hosts.clone().unwrap_or_default();
        let known_hosts = kh.display().to_string();
        let problem = match russh::keys::check_known_hosts_path(&self.host, self.port, key, &kh) {
            Ok(true) => return Ok(true),
            Ok(false) => SftpError::UnknownHostKey {
                host: self.host.clone(),
                fingerprint,
                known_hosts,
            },
            Err(russh::keys::Error::KeyChanged { line }) => SftpError::HostKeyChanged {
                host: self.host.clone(),
                fingerprint,
                known_hosts,
                line,
            },
            Err(e) => SftpError::UnknownHostKey {
                host: self.host.clone(),
                fingerprint: format!("{fingerprint}; reading the file failed: {e}"),
                known_hosts,
            },
        };
        *self.problem.lock().expect("not poisoned") = Some(problem);
        Ok(false)
    }
}

/// How the client proves its identity.
enum AuthSource {
    /// A private key read from a file.
    Key(Box<russh::keys::PrivateKey>),
    /// An ssh-agent and the public keys it holds.
    Agent(
        (
            russh::keys::agent::client::AgentClient<tokio::net::UnixStream>,
            Vec<PublicKey>,
        ),
    ),
}

/// Connects to the ssh-agent (`agent-socket` or `$SSH_AUTH_SOCK`) and lists
/// its keys.
async fn connect_agent(
    config: &SftpSinkConfig,
) -> Result<(
    russh::keys::agent::client::AgentClient<tokio::net::UnixStream>,
    Vec<PublicKey>,
)> {
    let socket = config
        .agent_socket
        .clone()
        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from));
    let no_agent = |message: String| SftpError::Key {
        path: "ssh-agent".into(),
        message,
    };
    let Some(socket) = socket else {
        return Err(no_agent(
            "no key file given and no ssh-agent ($SSH_AUTH_SOCK is unset): add ?key=/path/to/id_ed25519"
                .into(),
        )
        .into());
    };
    let mut agent = russh::keys::agent::client::AgentClient::connect_uds(&socket)
        .await
        .map_err(|e| no_agent(format!("cannot reach the ssh-agent at {}: {e}", socket.display())))?;
    let keys = agent.request_identities().await.map_err(|e| {
        no_agent(format!(
            "the ssh-agent at {} did not list its keys: {e}",
            socket.display()
        ))
    })?;
    if keys.is_empty() {
        return Err(no_agent(format!(
            "the ssh-agent at {} holds no key (ssh-add one)",
            socket.display()
        ))
        .into());
    }
    Ok((agent, keys))
}

/// Opens, authenticates and starts SFTP, all within the connect timeout.
async fn connect(config: &SftpSinkConfig) -> Result<Conn> {
    let location = config.location();
    let secs = config.connect_timeout_secs;
    match tokio::time::timeout(Duration::from_secs(secs), connect_inner(config)).await {
        Ok(r) => r,
        Err(_) => Err(SftpError::ConnectTimeout { location, secs }.into()),
    }
}

async fn connect_inner(config: &SftpSinkConfig) -> Result<Conn> {
    let location = config.location();
    // Load the key (or reach the agent) before connecting: a bad key is a
    // config error, not a network one.
    let auth_source = load_auth_source(config).await?;
    let mut ssh = handshake(config, &location).await?;
    authenticate(&mut ssh, config, auth_source, &location).await?;
    let sftp = start_sftp(&ssh, config, &location).await?;
    Ok(Conn {
        sftp,
        ssh,
        broken: AtomicBool::new(false),
    })
}

/// Reaches the ssh-agent, or reads the key file, as configured.
async fn load_auth_source(config: &SftpSinkConfig) -> Result<AuthSource> {
    Ok(if config.uses_agent() {
        AuthSource::Agent(connect_agent(config).await?)
    } else {
        AuthSource::Key(Box::new(
            russh::keys::load_secret_key(&config.key, None).map_err(|e| SftpError::Key {
                path: config.key.display().to_string(),
                message: e.to_string(),
            })?,
        ))
    })
}

/// Opens the TCP connection and runs the SSH handshake, checking the
/// server's host key.
async fn handshake(config: &SftpSinkConfig, location: &str) -> Result<russh::client::Handle<HostKeyCheck>> {
    let tcp = tokio::net::TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(|e| SftpError::Connect {
            location: location.to_string(),
            refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
            message: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let ssh_config = Arc::new(russh::client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    });
    let problem = Arc::new(std::sync::Mutex::new(None));
    let handler = HostKeyCheck {
        host: config.host.clone(),
        port: config.port,
        known_hosts: config.known_hosts_path(),
        insecure: config.insecure_accept_host_key,
        problem: problem.clone(),
    };
    match russh::client::connect_stream(ssh_config, tcp, handler).await {
        Ok(h) => Ok(h),
        Err(e) => {
            if let Some(p) = problem.lock().expect("not poisoned").take() {
                return Err(p.into());
            }
            Err(SftpError::Connect {
                location: location.to_string(),
                message: format!("SSH handshake failed: {e}"),
                refused: false,
            }
            .into())
        }
    }
}

/// The error of an authentication request that failed (not one the server
/// answered with a refusal).
fn auth_failed(location: &str, e: &dyn std::fmt::Display) -> SftpError {
    SftpError::Connect {
        location: location.to_string(),
        message: format!("authentication failed: {e}"),
        refused: false,
    }
}

/// Authenticates with the key file or the ssh-agent's keys; an error unless
/// the server accepted one.
async fn authenticate(
    ssh: &mut russh::client::Handle<HostKeyCheck>,
    config: &SftpSinkConfig,
    auth_source: AuthSource,
    location: &str,
) -> Result<()> {
    let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
    let auth = match auth_source {
        AuthSource::Key(key) => ssh
            .authenticate_publickey(
                config.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(*key), hash),
            )
            .await
            .map_err(|e| auth_failed(location, &e))?,
        AuthSource::Agent((agent, keys)) => {
            // Offer the agent's keys one by one, as ssh does.
            authenticate_with_agent(ssh, config, agent, keys, hash, location).await?
        }
    };
    if !auth.success() {
        return Err(SftpError::AuthRejected {
            location: location.to_string(),
            user: config.user.clone(),
            key: if config.uses_agent() {
                "(the ssh-agent's keys)".into()
            } else {
                config.key.display().to_string()
            },
        }
        .into());
    }
    Ok(())
}

/// Tries the ssh-agent's keys in turn until the server accepts one; its
/// last answer.
async fn authenticate_with_agent(
    ssh: &mut russh::client::Handle<HostKeyCheck>,
    config: &SftpSinkConfig,
    mut agent: russh::keys::agent::client::AgentClient<tokio::net::UnixStream>,
    keys: Vec<PublicKey>,
    hash: Option<HashAlg>,
    location: &str,
) -> Result<russh::client::AuthResult> {
    let mut result = None;
    for key in keys {
        let r = ssh
            .authenticate_publickey_with(config.user.clone(), key, hash, &mut agent)
            .await
            .map_err(|e| auth_failed(location, &e))?;
        let ok = r.success();
        result = Some(r);
        if ok {
            break;
        }
    }
    result.ok_or_else(|| {
        SftpError::Connect {
            location: location.to_string(),
            message: "the ssh-agent holds no key".into(),
            refused: false,
        }
        .into()
    })
}

/// Opens a session channel and starts the SFTP subsystem on it.
async fn start_sftp(
    ssh: &russh::client::Handle<HostKeyCheck>,
    config: &SftpSinkConfig,
    location: &str,
) -> Result<RawSftpSession> {
    let no_sftp = |e: &dyn std::fmt::Display| SftpError::NoSftp {
        location: location.to_string(),
        message: e.to_string(),
    };
    let channel = ssh.channel_open_session().await.map_err(|e| no_sftp(&e))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| no_sftp(&e))?;
    let sftp_config = russh_sftp::client::Config {
        request_timeout_secs: config.timeout_secs,
        ..Default::default()
    };
    let sftp = RawSftpSession::new_with_config(channel.into_stream(), sftp_config);
    sftp.init().await.map_err(|e| no_sftp(&e))?;
    Ok(sftp)
}

#[async_trait]
impl Sink for SftpSink {
    fn info(&self) -> SinkInfo {
        SinkInfo::new(crate::SCHEME, self.config.location())
            .with_atomic_create(true)
            .with_remote_bound(remote_bound(&self.config))
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<u64> {
        validate_key(key)?;
        if key.rsplit('/').next().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                "keys must not start with the temp prefix",
            )
            .with_context("key", key));
        }
        self.sweep_once().await;
        // Reconnecting is safe until the body is consumed: retry the setup.
        let conn = self
            .retrying(|c| async move {
                self.ensure_parent(&c, key).await?;
                Ok(c)
            })
            .await?;
        self.put_inner(conn, key, body, opts.mode).await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        validate_key(key)?;
        let (conn, handle, size) = self.open_for_read(key).await?;
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(4);
        let (location, key) = (self.config.location(), key.to_string());
        tokio::spawn(read_object(conn, handle, size, location, key, tx));
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let (dir, rel) = match prefix.rfind('/') {
            Some(i) => (self.remote(&prefix[..i]), prefix[..i].to_string()),
            None => (self.root(), String::new()),
        };
        let files = self
            .retrying(|c| {
                let (dir, rel) = (dir.clone(), rel.clone());
                async move {
                    let mut files = Vec::new();
                    self.walk(&c, &dir, &rel, &mut files, false).await?;
                    Ok(files)
                }
            })
            .await?;
        let mut out: Vec<ObjectMeta> = files
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix) && validate_key(k).is_ok())
            .map(|(key, a)| ObjectMeta {
                key,
                size: a.size.unwrap_or(0),
                modified: a
                    .mtime
                    .and_then(|m| jiff::Timestamp::from_second(i64::from(m)).ok()),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.remote(key);
        self.retrying(|c| {
            let path = path.clone();
            async move {
                match c.sftp.remove(path.as_str()).await {
                    Ok(_) => Ok(()),
                    Err(e) if status_code(&e) == Some(StatusCode::NoSuchFile) => Ok(()),
                    Err(e) => Err(self.op_err(&c, "delete", key, e)),
                }
            }
        })
        .await
    }
}

/// How long one operation may take before the registry's timeout layer
/// gives up: the sink itself reconnects once and bounds connect and each
/// request; the registry's layers retry whole operations on temporary
/// errors (3 times within 30 s) and catch an operation that hangs beyond
/// the sink's own bounds (`2 × (connect-timeout-secs + timeout-secs) +
/// 10 s`, also the stall bound of streaming puts and gets).
fn remote_bound(config: &SftpSinkConfig) -> Duration {
    let secs = config
        .connect_timeout_secs
        .saturating_add(config.timeout_secs)
        .saturating_mul(2)
        .saturating_add(10);
    Duration::from_secs(secs)
}
