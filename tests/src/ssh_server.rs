//! A real SSH/SFTP server for tests: a private OpenSSH `sshd` (Debian
//! `openssh-server`) with its own config, host key, authorized key and
//! data directory in a temp dir, on 127.0.0.1 and a free port, killed
//! (with its session processes) on drop.
//!
//! Shared by the crate tests of `coffer-sink-sftp` and the end-to-end
//! tests (`tests/src/lib.rs` includes this file). Std and libc only.
//!
//! When `/usr/sbin/sshd` or `ssh-keygen` is missing a test skips with a
//! message, except with `CI=true`, where it fails.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

const SSHD: &str = "/usr/sbin/sshd";

/// A running private sshd, killed on drop.
pub struct SshServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _tmp: TempDir,
    user: String,
}

/// A temp directory removed on drop (std only).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SshServer {
    /// Starts a server, or returns `None` (after printing why) when sshd is
    /// missing outside CI. Panics in CI or when it fails to start.
    pub fn start() -> Option<SshServer> {
        let have_keygen = Command::new("sh")
            .args(["-c", "command -v ssh-keygen"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !Path::new(SSHD).exists() || !have_keygen {
            let msg = "sshd or ssh-keygen not found: run scripts/test.sh (apt-get install openssh-server)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg} (CI fails instead)");
            return None;
        }
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = std::env::temp_dir().join(format!(
            "coffer-sshd-{}-{:x}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (free_port() as u128) << 20
        ));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let tmp = TempDir(dir.clone());
        for (name, comment) in [
            ("host_key", "host"),
            ("client_key", "client"),
            ("other_key", "other"),
        ] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(dir.join(name)));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        let user = current_user();
        let mut s = SshServer {
            child: None,
            port: free_port(),
            dir,
            _tmp: tmp,
            user,
        };
        s.write_known_hosts();
        s.restart();
        Some(s)
    }

    fn write_known_hosts(&self) {
        let host_pub = std::fs::read_to_string(self.dir.join("host_key.pub")).expect("host key");
        std::fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {}", self.port, host_pub.trim()),
        )
        .expect("known_hosts");
        // A known_hosts file listing another key for this host.
        let other = std::fs::read_to_string(self.dir.join("other_key.pub")).expect("other key");
        std::fs::write(
            self.dir.join("wrong_known_hosts"),
            format!("[127.0.0.1]:{} {}", self.port, other.trim()),
        )
        .expect("wrong known_hosts");
    }

    /// (Re)starts sshd on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let d = &self.dir;
        let cfg = d.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
                 Subsystem sftp internal-sftp\n",
                port = self.port,
                d = d.display()
            ),
        )
        .expect("sshd_config");
        let mut child = Command::new(SSHD)
            .arg("-f")
            .arg(&cfg)
            .args(["-D", "-E"])
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
                panic!("sshd exited early with {status}: {log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sshd did not listen on port {} within 20 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Kills sshd and every session process it started (its process group).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // sshd's session processes call setsid(), so neither sshd's
            // process group nor its death ends them: kill every descendant
            // (a real crash of the host). Not with the `kill` program:
            // procps' `kill -KILL -PGID` signalled every process here.
            for pid in descendants(c.id()) {
                // SAFETY: plain syscall on processes this fixture started.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login name (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key (authorized on the server).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// A private key the server does not accept.
    pub fn other_key(&self) -> PathBuf {
        self.dir.join("other_key")
    }

    /// A known_hosts file listing the server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// A known_hosts file listing a different key for the server.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.dir.join("wrong_known_hosts")
    }

    /// The data directory on the server (absolute).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `sftp://USER@127.0.0.1:PORT//DATA/sub?key=…&known-hosts=…`.
    pub fn url(&self, sub: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}/{}/{sub}?key={}&known-hosts={}",
            self.user,
            self.port,
            self.data_dir().display(),
            self.client_key().display(),
            self.known_hosts().display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The pids of `root` and all its descendants (from /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.retain(|p| *p > 1);
    out
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
