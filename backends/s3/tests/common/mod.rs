//! A real S3 server for tests: `moto_server` (PyPI `moto[server]`) on
//! 127.0.0.1 and a free port, state in memory, stopped on drop.
//!
//! Shared by the crate tests of `coffer-sink-s3` and the end-to-end tests
//! (`tests/src/lib.rs` includes this file). Std only.
//!
//! The binary is `$COFFER_MOTO_SERVER`, else `.venv-moto/bin/moto_server`
//! at the workspace root (`scripts/test.sh` creates that venv). When it is
//! missing a test skips with a message, except with `CI=true`, where it
//! fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`, killed (and reaped) on drop.
pub struct MotoServer {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
}

impl MotoServer {
    /// Starts a server, or returns `None` (after printing why) when the
    /// binary is missing outside CI. Panics in CI or when it fails to start.
    pub fn start() -> Option<MotoServer> {
        let Some(bin) = moto_bin() else {
            let msg = "moto_server not found: run scripts/test.sh (it creates .venv-moto) or set COFFER_MOTO_SERVER";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg} (CI fails instead)");
            return None;
        };
        let mut s = MotoServer {
            child: None,
            port: free_port(),
            bin,
        };
        s.restart();
        Some(s)
    }

    /// (Re)starts the server on the same port (with empty state).
    pub fn restart(&mut self) {
        self.kill();
        let mut child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http(self.port, "GET", "/").is_some_and(|s| s < 500) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited early with {status}", self.bin.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not answer on port {} within 30 s",
                    self.bin.display(),
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Kills the server now (a crash, as far as clients can tell).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Multipart uploads of `bucket` started and neither completed nor
    /// aborted (S3 ListMultipartUploads).
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        let (status, body) =
            http_body(self.port, "GET", &format!("/{bucket}?uploads")).expect("moto answers");
        assert!(status < 300, "listing uploads: HTTP {status}: {body}");
        body.matches("<UploadId>").count()
    }

    /// The bytes of object `key` in `bucket`. moto checks no signature, but
    /// denies a GET of an object without any `Authorization` header
    /// (anonymous access), so a dummy one is sent.
    pub fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            s,
            "GET /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read");
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("headers") + 4;
        assert!(
            buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"),
            "GET {key}: {}",
            String::from_utf8_lossy(&buf[..end])
        );
        buf[end..].to_vec()
    }

    /// Keys in `bucket` (ListObjectsV2, first page).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (_, body) = http_body(self.port, "GET", &format!("/{bucket}?list-type=2")).expect("moto answers");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(String::from)
            .collect()
    }

    /// Creates `bucket` (HTTP PUT); panics on failure.
    pub fn create_bucket(&self, bucket: &str) {
        let status = http(self.port, "PUT", &format!("/{bucket}")).expect("moto answers");
        assert!(status < 300, "creating bucket {bucket}: HTTP {status}");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a bodiless request, returning the HTTP status.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    http_body(port, method, path).map(|(s, _)| s)
}

/// Sends a bodiless request, returning the HTTP status and the response.
fn http_body(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// `$COFFER_MOTO_SERVER`, else the workspace's `.venv-moto`, if present.
pub fn moto_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COFFER_MOTO_SERVER") {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.ancestors().find(|d| d.join("Cargo.lock").exists())?;
    let bin = root.join(".venv-moto/bin/moto_server");
    bin.exists().then_some(bin)
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
