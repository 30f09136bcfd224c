//! The sink conformance kit against a real OpenSSH sshd, plus SFTP fault
//! cases: unknown and changed host keys, a refused key, an unreachable
//! host, a server killed mid-upload.

use coffer_e2e::ssh_server as common;

use std::time::{Duration, Instant};

use coffer_core::testkit::temp_files;
use coffer_core::{ByteStream, Bytes, ErrorKind, PutOptions, Registry, Sink, SinkExt};
use coffer_sink_sftp::{SftpSink, SftpSinkConfig};
use common::SshServer;
use futures::StreamExt;

fn config(ssh: &SshServer, sub: &str) -> SftpSinkConfig {
    SftpSinkConfig::new(
        "127.0.0.1",
        ssh.port(),
        ssh.user(),
        ssh.data_dir().join(sub).display().to_string(),
        ssh.client_key(),
    )
    .with_known_hosts(ssh.known_hosts())
}

fn body(len: usize, chunk: usize) -> ByteStream {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<coffer_core::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_sshd() {
    let Some(ssh) = SshServer::start() else { return };
    let sink = SftpSink::from_url(&ssh.url("suite")).unwrap();
    coffer_core::testkit::sink_suite(&sink).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !temp_files(&ssh.data_dir()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "temp files left: {:?}",
            temp_files(&ssh.data_dir())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_files_with_private_modes() {
    use std::os::unix::fs::PermissionsExt;
    let Some(ssh) = SshServer::start() else { return };
    let sink = SftpSink::new(config(&ssh, "modes/root"));
    let n = sink
        .put(
            "a/b.coffer",
            body(3 * 1024 * 1024 + 1, 70_000),
            PutOptions::create(),
        )
        .await
        .unwrap();
    let file = ssh.data_dir().join("modes/root/a/b.coffer");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), n);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(sink.get_bytes("a/b.coffer").await.unwrap().len() as u64, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_upload_fails_clearly_and_a_rerun_succeeds() {
    let Some(mut ssh) = SshServer::start() else { return };
    let sink =
        SftpSink::new(config(&ssh, "kill").with_timeouts(Duration::from_secs(5), Duration::from_secs(5)));
    sink.check().await.unwrap();
    let err = coffer_core::testkit::server_killed_mid_upload(
        std::sync::Arc::new(sink.clone()),
        &mut Sshd(&mut ssh),
        256 * 1024,
        Duration::from_millis(20),
        Duration::from_millis(800),
        Duration::from_secs(20),
    )
    .await;
    assert!(err.is_temporary(), "{err:?}");
    // Resume-safe cleanup of what the killed upload left.
    assert_eq!(sink.cleanup_stale_temp(Duration::ZERO).await.unwrap(), 1);
    assert!(temp_files(&ssh.data_dir()).is_empty());
}

/// The private sshd, for the kit: while it is down, the partial upload is
/// only a temp file, which is never listed.
struct Sshd<'a>(&'a mut SshServer);

impl coffer_core::testkit::ServerControl for Sshd<'_> {
    fn kill(&mut self) {
        self.0.kill();
    }
    fn while_down(&mut self) {
        assert!(!self.0.data_dir().join("kill/k.coffer").exists());
        let leftovers = temp_files(&self.0.data_dir());
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
    fn restart(&mut self) {
        self.0.restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_connection_dropped() {
    let Some(mut ssh) = SshServer::start() else { return };
    let sink = SftpSink::new(config(&ssh, "re"));
    sink.put_bytes("a", Bytes::from_static(b"1"), PutOptions::create())
        .await
        .unwrap();
    ssh.restart(); // drops the connection
    assert_eq!(sink.list("").await.unwrap().len(), 1);
    assert_eq!(sink.get_bytes("a").await.unwrap(), "1");
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_unless_asked() {
    let Some(ssh) = SshServer::start() else { return };
    let empty = ssh.data_dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let started = Instant::now();
    let err = SftpSink::new(config(&ssh, "x").with_known_hosts(&empty))
        .check()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    assert!(err.to_string().contains("SHA256:"), "{err}");
    assert!(err.hint().unwrap().contains("ssh-keyscan"), "{err:?}");

    let err = SftpSink::new(config(&ssh, "x").with_known_hosts(ssh.wrong_known_hosts()))
        .check()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("man-in-the-middle"), "{err}");

    SftpSink::new(
        config(&ssh, "x")
            .with_known_hosts(&empty)
            .with_insecure_accept_host_key(true),
    )
    .check()
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refused_key_says_check_authorized_keys() {
    let Some(ssh) = SshServer::start() else { return };
    let mut c = config(&ssh, "x");
    c.key = ssh.other_key();
    let err = SftpSink::new(c).list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    assert!(err.hint().unwrap().contains("authorized_keys"), "{err:?}");
    let mut c = config(&ssh, "x");
    c.key = ssh.data_dir().join("no-such-key");
    let err = SftpSink::new(c).list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err:?}");
}

#[tokio::test]
async fn an_unreachable_host_fails_within_the_connect_timeout() {
    let Some(ssh) = SshServer::start() else { return };
    // Nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config(&ssh, "x");
    c.port = port;
    let err = SftpSink::new(c.clone()).list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    // Something listens but never speaks SSH.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    c.port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let err = SftpSink::new(c.with_timeouts(Duration::from_secs(2), Duration::from_secs(2)))
        .list("")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
fn urls_and_tables_reach_the_same_sink() {
    let mut reg = Registry::new();
    coffer_sink_sftp::register(&mut reg);
    let sink = reg
        .sink_from_url("sftp://me@host.example:2222/backups?key=/k&known-hosts=/kh")
        .unwrap();
    assert_eq!(
        sink.info().to_string(),
        "sftp:sftp://me@host.example:2222/backups"
    );
    let table: coffer_core::toml::Table =
        "host = \"host.example\"\nport = 2222\nuser = \"me\"\npath = \"backups\"\nkey = \"id\""
            .parse()
            .unwrap();
    let sink = reg
        .sink_factory("sftp")
        .unwrap()
        .from_config("nas", table, std::path::Path::new("/etc/coffer"))
        .unwrap();
    assert_eq!(sink.info().location, "sftp://me@host.example:2222/backups");
}

/// An ssh-agent of the test's own, on a private socket; killed on drop.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is installed by scripts/test.sh");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }

    fn add(&self, key: &std::path::Path) {
        let out = std::process::Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn authenticates_with_the_keys_of_an_ssh_agent() {
    let Some(ssh) = SshServer::start() else { return };
    let agent = Agent::start();
    // Wrong key first, right key second: every key of the agent is offered.
    agent.add(&ssh.other_key());
    agent.add(&ssh.client_key());
    let mut c = config(&ssh, "agent");
    c.key = std::path::PathBuf::new();
    c.agent_socket = Some(agent.socket.clone());
    let sink = SftpSink::new(c.clone());
    sink.put_bytes("a.txt", Bytes::from_static(b"via agent"), PutOptions::create())
        .await
        .unwrap();
    assert_eq!(&sink.get_bytes("a.txt").await.unwrap()[..], b"via agent");

    // An agent with only a refused key: a clear PermissionDenied.
    let lonely = Agent::start();
    lonely.add(&ssh.other_key());
    c.agent_socket = Some(lonely.socket.clone());
    let err = SftpSink::new(c.clone()).list("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err:?}");
    // No agent reachable: says what to do.
    c.agent_socket = Some(ssh.data_dir().join("no-agent.sock"));
    let err = SftpSink::new(c).list("").await.unwrap_err();
    assert!(err.to_string().contains("ssh-agent"), "{err}");
}
