//! The test-support crate: every real server the tests start (MongoDB,
//! S3, SFTP, a stand-in Kubernetes API, an HTTP service), used by the
//! end-to-end tests in `tests/` and by the plugins' own tests, plus
//! locating the `coffer` binary, generating keys and small file utilities.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A real MongoDB-compatible server (secantusd-py) on a free port, also
/// used by the crate tests of `coffer-source-mongo`.
pub mod mongo_server;

/// A real S3 server (moto_server), also used by the tests of `coffer-sink-s3`.
pub mod moto_server;

/// A stand-in Kubernetes API server (TLS, bearer tokens, Secrets).
pub mod k8s;

/// A private sshd, also used by the tests of `coffer-sink-sftp`.
pub mod ssh_server;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The `coffer` binary under test: `$COFFER_BIN`, else the workspace's
/// `target/debug/coffer` (built by `cargo build -p coffer`; `.ci/run`
/// builds it first).
pub fn coffer_bin() -> PathBuf {
    if let Ok(p) = std::env::var("COFFER_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug").join("coffer");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p coffer` first (or set COFFER_BIN)",
        bin.display()
    );
    bin
}

/// A `coffer` command running in `dir`, with a clean environment for the
/// variables coffer reads, and `COFFER_CREATE_SINK=true`: the tests write
/// to fresh sink directories (`--sink bk`) as a user does after `coffer
/// sink init`; `tests/sinks.rs` runs without it.
pub fn coffer(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(coffer_bin());
    c.current_dir(dir)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_IDENTITY")
        .env_remove("COFFER_PASSPHRASE")
        .env_remove("RUST_LOG")
        .env_remove("COFFER_DEDUP_KEY")
        // A chunked backup's dedup key is made in this host's config
        // folder: here, the test's own.
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .env("COFFER_CREATE_SINK", "true");
    c
}

/// A `coffer` child running in `dir` in the background, with the
/// environment of [`coffer`]; stdout to `stdout`, stderr to `stderr`.
pub fn spawn_coffer(
    dir: &Path,
    args: &[&str],
    stdout: std::process::Stdio,
    stderr: std::process::Stdio,
) -> std::process::Child {
    Command::new(coffer_bin())
        .current_dir(dir)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_IDENTITY")
        .env_remove("RUST_LOG")
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .env("COFFER_CREATE_SINK", "true")
        .args(args)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn coffer")
}

/// `coffer backup --source SOURCE --sink SINK --recipient RECIPIENT` in
/// `dir`: a one-off backup, to run or to add flags to.
pub fn backup_cmd(dir: &Path, source: &str, sink: &str, recipient: &str) -> assert_cmd::Command {
    let mut cmd = coffer(dir);
    cmd.args([
        "backup",
        "--source",
        source,
        "--sink",
        sink,
        "--recipient",
        recipient,
    ]);
    cmd
}

/// Generates an identity in `dir/name`, returning (path, recipient).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = coffer(dir)
        .args(["keygen", "-o"])
        .arg(&path)
        .output()
        .expect("run keygen");
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recipient = String::from_utf8(out.stdout).expect("utf8").trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (path, recipient)
}

/// Whether an external tool is on PATH. In CI (`CI=true`) a missing tool
/// is a failure, never a skip.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is not installed; .ci/run installs it (apt-get install {tool})");
    }
    if !found {
        eprintln!("skipping: {tool} not installed (CI fails instead)");
    }
    found
}

/// Every regular file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).expect("prefix").display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The marker object of a local sink (`coffer sink init`): not a snapshot.
pub const SINK_MARKER: &str = "coffer-sink.json";

/// The single object with `suffix` in a local sink directory (the sink
/// marker aside).
pub fn only_object(sink: &Path, suffix: &str) -> PathBuf {
    let found: Vec<_> = std::fs::read_dir(sink)
        .expect("sink dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(suffix) && !name.starts_with('.') && name != SINK_MARKER
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one *{suffix} in {}: {found:?}",
        sink.display()
    );
    found[0].clone()
}

/// The JSON on stdout of a command that must have succeeded (its stderr and
/// stdout in the panic message otherwise).
pub fn json_ok(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `(id, keep, reasons)` of each snapshot in a prune's JSON for one sink.
pub fn prune_decisions(v: &serde_json::Value) -> Vec<(String, bool, Vec<String>)> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["keep"].as_bool().unwrap(),
                s["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// A tmpfs mounted on a fresh directory; unmounted on drop.
pub struct Tmpfs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64m`), or returns `None` (skip) when
    /// this process may not mount — a failure instead when CI=true.
    pub fn new(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("medium");
        std::fs::create_dir(&mount).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { mount, _dir: dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs (the media tests run as root): {why}");
                }
                eprintln!("skipping: cannot mount a tmpfs (not root?): {why}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    pub fn url(&self, query: &str) -> String {
        format!("media:{}{query}", self.mount.display())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a killed child's open file): detach it lazily.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status();
        }
    }
}

/// Copies the directory tree `from` to `to` (files and directories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// `len` bytes of incompressible data (xorshift), quickly.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small real HTTP server (python3) standing for the service: `/live`
/// answers 503 to its first `fails` requests, then 200 "live ok"; `/down`
/// always 500; `/slow` 200 after 3 s; `/metrics` exposes
/// `issuer_directory_changes_total` growing by one per scrape, `/metrics-flat`
/// the same series never growing; `/huge` and `/metrics-huge` stream 2 GiB.
pub struct HttpService {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl HttpService {
    /// Starts it, writing its script into `dir`.
    pub fn start(dir: &Path, fails: u32) -> HttpService {
        let script = dir.join("health.py");
        std::fs::write(
            &script,
            r##"import http.server, sys, time
seen = {"live": 0, "scrapes": 0}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        body = b"live ok"
        if self.path in ("/metrics", "/metrics-flat"):
            seen["scrapes"] += 1
            n = seen["scrapes"] if self.path == "/metrics" else 7
            body = ("# HELP issuer_directory_changes_total Changes applied.\n"
                    "# TYPE issuer_directory_changes_total counter\n"
                    'issuer_directory_changes_total{kind="entry"} %d\n'
                    "process_up 1\n" % n).encode()
        elif self.path == "/live":
            seen["live"] += 1
            code = 503 if seen["live"] <= int(sys.argv[2]) else 200
        elif self.path == "/down":
            code = 500
        elif self.path == "/slow":
            time.sleep(3)
        elif self.path in ("/huge", "/metrics-huge"):
            # 2 GiB that never hold the expected text, streamed: a client
            # that reads it whole needs gigabytes of memory.
            self.send_response(200)
            self.send_header("Content-Length", str(2 << 30))
            self.end_headers()
            block = b"x" * (1 << 20)
            try:
                for _ in range(2048):
                    self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"##,
        )
        .unwrap();
        let port = free_port();
        let child = std::process::Command::new("python3")
            .arg(&script)
            .args([port.to_string(), fails.to_string()])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the health server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpService { child, port }
    }
}

impl Drop for HttpService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks `value` against the checked-in schema `docs/json-schema/NAME.json`
/// (e.g. `backup`, `list`, `error`) and returns it.
pub fn assert_schema(name: &str, value: &serde_json::Value) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/json-schema/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}.json: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the --json output does not match docs/json-schema/{name}.json:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(value).unwrap()
    );
    value.clone()
}

/// [`json_ok`], checked against `docs/json-schema/NAME.json`.
pub fn json_as(name: &str, out: &std::process::Output) -> serde_json::Value {
    assert_schema(name, &json_ok(out))
}

/// Re-packs snapshot `id` of the local sink `sink` as someone with write
/// access to the sink (and the public recipient `rec`, never the signing
/// key) can: decrypts it with `key`, lets the Python code `edit` change
/// `data` (entry name → bytes; renaming or adding entries is allowed, new
/// ones get the first entry's header as a template), then recomputes every
/// hash (SHA256SUMS, the manifest's entries, the index's object) and
/// removes a signature so the forgery is consistent but unsigned.
pub fn forge_bundle(sink: &Path, id: &str, key: &Path, rec: &str, edit: &str) {
    let script = format!(
        r#"
import copy, hashlib, io, json, os, subprocess, sys, tarfile
sink, ident, key, rec = sys.argv[1:5]
obj = f"{{sink}}/{{ident}}.coffer"
plain = subprocess.run(f"age -d -i {{key}} {{obj}} | zstd -d", shell=True, check=True, capture_output=True).stdout
src = tarfile.open(fileobj=io.BytesIO(plain))
members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
data = dict((m.name, d) for m, d in members if m.isfile())
template = next(m for m, d in members if m.isfile())
{edit}
def sha(b):
    return hashlib.sha256(b).hexdigest()
before = set(n for n, d in ((m.name, d) for m, d in members) if d is not None)
listed = [l.split("  ", 1)[1] for l in data["SHA256SUMS"].decode().splitlines() if l]
sums = [n for n in listed if n in data] + [n for n in data if n not in before]
data["SHA256SUMS"] = "".join(f"{{sha(data[n])}}  {{n}}\n" for n in sums).encode()
manifest = json.loads(data["manifest.json"])
old_total = sum(e["size"] for e in manifest["entries"])
entries = [e for e in manifest["entries"] if e["path"] in data]
entries += [dict(entries[0], path=n) for n in data if n not in before]
for e in entries:
    e["size"], e["sha256"] = len(data[e["path"]]), sha(data[e["path"]])
manifest["entries"] = entries
manifest["total_bytes"] += sum(e["size"] for e in entries) - old_total
data["manifest.json"] = json.dumps(manifest).encode()
out = io.BytesIO()
dst = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
for m, _ in members:
    if m.name == "manifest.json":
        # New entries go before the manifest, which stays the last one.
        for n in data:
            if n not in before:
                t = copy.copy(template)
                t.name, t.size = n, len(data[n])
                dst.addfile(t, io.BytesIO(data[n]))
    if m.isfile():
        if m.name not in data:
            continue
        m.size = len(data[m.name])
        dst.addfile(m, io.BytesIO(data[m.name]))
    else:
        dst.addfile(m)
dst.close()
enc = subprocess.run(f"zstd -q -c | age -r {{rec}}", shell=True, check=True, input=out.getvalue(), capture_output=True).stdout
open(obj, "wb").write(enc)
index = json.load(open(f"{{sink}}/{{ident}}.json"))
index["object"]["sha256"], index["object"]["size"] = sha(enc), len(enc)
if "plain_size" in index["object"]:
    index["object"]["plain_size"] = len(out.getvalue())
index.pop("signature", None)
json.dump(index, open(f"{{sink}}/{{ident}}.json", "w"))
for f in os.listdir(sink):
    if f.startswith(ident) and f.endswith(".sig"):
        os.remove(os.path.join(sink, f))
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(sink)
        .arg(id)
        .arg(key)
        .arg(rec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "forging failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
