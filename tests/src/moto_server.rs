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
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

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
            .env("MOTO_RECORDER_FILEPATH", self.recording_path())
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

    /// Writes `body` as object `key` of `bucket` (an unconditional S3
    /// PutObject), as any other client of the bucket could: to tamper with
    /// an object or plant a foreign one. Panics on failure.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "PUT /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: AWS4-HMAC-SHA256 \
             Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .expect("send");
        s.write_all(body).expect("send body");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read");
        assert!(
            buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"),
            "PUT {key}: {}",
            String::from_utf8_lossy(&buf)
        );
    }

    /// Starts recording the requests the server receives (moto's
    /// recorder), forgetting those recorded before.
    pub fn start_recording(&self) {
        for op in ["stop-recording", "reset-recording", "start-recording"] {
            let status = http(self.port, "POST", &format!("/moto-api/recorder/{op}")).expect("moto answers");
            assert!(status < 300, "moto recorder {op}: HTTP {status}");
        }
    }

    /// `(method, path, body)` of every request recorded since
    /// [`MotoServer::start_recording`], in order of arrival; `path` is
    /// `/bucket/key?query` as sent.
    pub fn recorded_requests(&self) -> Vec<(String, String, Vec<u8>)> {
        let text = std::fs::read_to_string(self.recording_path()).unwrap_or_default();
        // One JSON object per line: {"headers": {...}, "method": "…", "url": "…", "body": "…", "body_encoded": …}.
        let field = |line: &str, name: &str| -> String {
            let tag = format!("\"{name}\": \"");
            let start = line
                .find(&tag)
                .map(|i| i + tag.len())
                .unwrap_or_else(|| panic!("no {name} in {line}"));
            line[start..].split('"').next().unwrap_or("").to_string()
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let url = field(l, "url");
                let path = match url.find("://") {
                    Some(i) => url[i + 3..]
                        .find('/')
                        .map(|j| url[i + 3 + j..].to_string())
                        .unwrap_or_default(),
                    None => url,
                };
                let body = field(l, "body");
                let body = if l.contains("\"body_encoded\": true") {
                    base64_decode(&body)
                } else {
                    body.into_bytes()
                };
                (field(l, "method"), path, body)
            })
            .collect()
    }

    /// The keys of `bucket` deleted since [`MotoServer::start_recording`],
    /// in order of arrival: by `DELETE /bucket/key` or in the body of a
    /// bulk `POST /bucket?delete` (DeleteObjects, what object_store sends).
    pub fn recorded_deletes(&self, bucket: &str) -> Vec<String> {
        let mut out = Vec::new();
        let object = format!("/{bucket}/");
        for (method, path, body) in self.recorded_requests() {
            let (p, query) = path.split_once('?').unwrap_or((&path, ""));
            if method == "DELETE" && p.starts_with(&object) {
                out.push(p[object.len()..].to_string());
            } else if method == "POST"
                && (p == format!("/{bucket}") || p == object)
                && query.split('&').any(|q| q == "delete" || q == "delete=")
            {
                let xml = String::from_utf8_lossy(&body);
                out.extend(
                    xml.split("<Key>")
                        .skip(1)
                        .filter_map(|s| s.split("</Key>").next())
                        .map(String::from),
                );
            }
        }
        out
    }

    /// Where moto's recorder writes (one file per server).
    fn recording_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("coffer-moto-{}-{}.jsonl", std::process::id(), self.port))
    }

    /// Creates `bucket` (HTTP PUT); panics on failure.
    pub fn create_bucket(&self, bucket: &str) {
        let status = http(self.port, "PUT", &format!("/{bucket}")).expect("moto answers");
        assert!(status < 300, "creating bucket {bucket}: HTTP {status}");
    }

    /// Creates `bucket` with S3 Object Lock enabled
    /// (`x-amz-bucket-object-lock-enabled: true`, which also turns on
    /// versioning); panics on failure.
    pub fn create_locked_bucket(&self, bucket: &str) {
        let (status, body) = raw_request(
            self.port,
            "PUT",
            &format!("/{bucket}"),
            &[("x-amz-bucket-object-lock-enabled", "true")],
            "",
        )
        .expect("moto answers");
        assert!(
            status < 300,
            "creating locked bucket {bucket}: HTTP {status}: {body}"
        );
    }

    /// Turns on moto's request authentication: creates the IAM user
    /// `coffer` with an access key and an allow-all inline policy (while
    /// moto still accepts anything), then `POST /moto-api/reset-auth` with
    /// `0` (the runtime form of `INITIAL_NO_AUTH_ACTION_COUNT=0`): from then
    /// on every request must be signed (SigV4) by a known key with a policy
    /// allowing it. Create buckets before. Returns the key pair.
    pub fn enforce_auth(&self) -> (String, String) {
        let iam = |params: &str| {
            let (status, body) = raw_request(
                self.port,
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Authorization", &dummy_auth("iam")),
                ],
                &format!("{params}&Version=2010-05-08"),
            )
            .expect("moto answers");
            assert!(status < 300, "IAM {params}: HTTP {status}: {body}");
            body
        };
        iam("Action=CreateUser&UserName=coffer");
        let created = iam("Action=CreateAccessKey&UserName=coffer");
        let field = |name: &str| {
            created
                .split(&format!("<{name}>"))
                .nth(1)
                .and_then(|s| s.split(&format!("</{name}>")).next())
                .unwrap_or_else(|| panic!("no {name} in {created}"))
                .to_string()
        };
        let (key_id, secret) = (field("AccessKeyId"), field("SecretAccessKey"));
        let policy =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        iam(&format!(
            "Action=PutUserPolicy&UserName=coffer&PolicyName=all&PolicyDocument={}",
            form_encode(policy)
        ));
        let (status, body) =
            raw_request(self.port, "POST", "/moto-api/reset-auth", &[], "0").expect("moto answers");
        assert!(status < 300, "reset-auth: HTTP {status}: {body}");
        (key_id, secret)
    }

    /// The response headers of a HEAD of `key` in `bucket` (lower-cased
    /// names), with its status.
    pub fn head_object(&self, bucket: &str, key: &str) -> (u16, Vec<(String, String)>) {
        let (status, text) = raw_request(
            self.port,
            "HEAD",
            &format!("/{bucket}/{key}"),
            &[("Authorization", &dummy_auth("s3"))],
            "",
        )
        .expect("moto answers");
        let headers = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers)
    }

    /// The version ids of `key` in a versioned `bucket` (not delete
    /// markers), newest first (ListObjectVersions).
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let (status, body) = raw_request(
            self.port,
            "GET",
            &format!("/{bucket}?versions&prefix={key}"),
            &[("Authorization", &dummy_auth("s3"))],
            "",
        )
        .expect("moto answers");
        assert!(status < 300, "listing versions: HTTP {status}: {body}");
        body.split("<Version>")
            .skip(1)
            .filter_map(|v| v.split("</Version>").next())
            .filter(|v| v.contains(&format!("<Key>{key}</Key>")))
            .filter_map(|v| v.split("<VersionId>").nth(1)?.split("</VersionId>").next())
            .map(String::from)
            .collect()
    }

    /// Deletes one version of `key` (DeleteObject with `versionId`),
    /// returning the status and response.
    pub fn delete_version(&self, bucket: &str, key: &str, version: &str) -> (u16, String) {
        raw_request(
            self.port,
            "DELETE",
            &format!("/{bucket}/{key}?versionId={version}"),
            &[("Authorization", &dummy_auth("s3"))],
            "",
        )
        .expect("moto answers")
    }
}

/// An `Authorization` header moto routes by (its credential scope names
/// the service) but checks only once authentication is enforced.
fn dummy_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a request with extra headers and a body, returning the HTTP
/// status and the whole response (headers and body).
fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.recording_path());
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

/// Decodes standard base64 (with padding), as moto's recorder writes bodies.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {s}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
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
