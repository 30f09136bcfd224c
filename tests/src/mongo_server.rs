//! A real MongoDB-compatible server for tests: `secantusd-py` (PyPI
//! `secantusdb`) on 127.0.0.1 and a free port, in memory, stopped on drop.
//!
//! Shared by the crate tests of `coffer-source-mongo` and the end-to-end
//! tests (`tests/src/lib.rs` includes this file). Std and libc only, no
//! driver. Each server gets a temp directory of its own (`TMPDIR`, where an
//! in-memory server keeps its files), removed when the server is dropped.
//!
//! The binary is `$COFFER_SECANTUSD`, else `.venv-secantus/bin/secantusd-py`
//! at the workspace root (`scripts/test.sh` creates that venv). When it is
//! missing a test skips with a message, except with `CI=true`, where it
//! fails.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running `secantusd-py`, killed (and reaped) on drop.
pub struct MongoServer {
    child: Child,
    port: u16,
    tmp: PathBuf,
}

impl MongoServer {
    /// Starts a server, or returns `None` (after printing why) when the
    /// binary is missing outside CI. Panics in CI or when it fails to start.
    pub fn start() -> Option<MongoServer> {
        Self::start_with_oplog(1_000_000)
    }

    /// [`MongoServer::start`] with an oplog capped at `max_entries`
    /// (pruned every 1000 writes or on `secantusAdmin.pruneOplog`).
    pub fn start_with_oplog(max_entries: u32) -> Option<MongoServer> {
        Self::spawn(&[
            "--storage-path",
            ":memory:",
            "--oplog-max-entries",
            &max_entries.to_string(),
        ])
    }

    /// [`MongoServer::start_with_oplog`] whose oplog also gets a no-op
    /// entry every `heartbeat` seconds (mongod's periodic no-op: how an
    /// idle database's archived time moves on).
    pub fn start_with_heartbeat(max_entries: u32, heartbeat: u32) -> Option<MongoServer> {
        Self::spawn(&[
            "--storage-path",
            ":memory:",
            "--oplog-max-entries",
            &max_entries.to_string(),
            "--noop-heartbeat-seconds",
            &heartbeat.to_string(),
        ])
    }

    /// A server that says it is a standalone (no replica set in `hello`),
    /// as a replica set member restarted for maintenance does.
    pub fn start_standalone() -> Option<MongoServer> {
        Self::spawn(&["--storage-path", ":memory:", "--standalone"])
    }

    /// A server keeping its data in `dir`, so that users created without
    /// `--auth` are there when it is started again with it (`auth`).
    pub fn start_in(dir: &Path, auth: bool) -> Option<MongoServer> {
        let dir = dir.to_str().expect("a UTF-8 temp path");
        let mut args = vec!["--storage-path", dir];
        if auth {
            args.push("--auth");
        }
        Self::spawn(&args)
    }

    fn spawn(args: &[&str]) -> Option<MongoServer> {
        let Some(bin) = secantusd_bin() else {
            let msg = "secantusd-py not found: run scripts/test.sh (it creates .venv-secantus) or set COFFER_SECANTUSD";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg} (CI fails instead)");
            return None;
        };
        let port = free_port();
        let tmp = std::env::temp_dir().join(format!("coffer-mongo-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited early with {status}", bin.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not listen on port {port} within 30 s", bin.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(MongoServer { child, port, tmp })
    }

    /// Stops the server with SIGTERM, so it writes its data out, and
    /// waits for it to exit; panics when it is still running after 20 s.
    pub fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).expect("a PID fits in pid_t");
        // A positive PID: only this process is signalled.
        assert!(pid > 0);
        // SAFETY: kill(2) with a positive PID and a valid signal has no
        // memory effects; the child is not reaped yet, so the PID is ours.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {pid}: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("secantusd-py (pid {pid}) did not stop within 20 s of SIGTERM");
    }

    /// Sends `sig` to the server (SIGSTOP: it stops answering, as a
    /// stalled or cut-off server does; SIGCONT: it goes on).
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("a PID fits in pid_t");
        assert!(pid > 0);
        // SAFETY: kill(2) with a positive PID of our own, not yet reaped
        // child has no memory effects.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill -{sig} {pid}: {}", std::io::Error::last_os_error());
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `db` (empty: no database).
    pub fn uri(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}?directConnection=true", self.port)
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// `$COFFER_SECANTUSD`, else the workspace's `.venv-secantus`, if present.
pub fn secantusd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COFFER_SECANTUSD") {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.ancestors().find(|d| d.join("Cargo.lock").exists())?;
    let bin = root.join(".venv-secantus/bin/secantusd-py");
    bin.exists().then_some(bin)
}
