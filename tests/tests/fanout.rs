//! End-to-end: fan-out options of `coffer backup` against real servers — a
//! three-sink job (local + S3 on moto_server + SFTP on a private sshd) with
//! the SFTP server down: optional sinks, required sinks (exit 4, partial)
//! and a quorum.

use std::fs;
use std::path::Path;
use std::process::Output;

use coffer_e2e::moto_server::MotoServer;
use coffer_e2e::ssh_server::SshServer;
use coffer_e2e::{coffer, keygen, only_object};
use sha2::{Digest, Sha256};

const BUCKET: &str = "coffer-fanout";

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `coffer` with the AWS environment moto accepts.
fn coffer_aws(dir: &Path) -> assert_cmd::Command {
    let mut c = coffer(dir);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    c
}

/// The servers and the work directory of a test.
struct Setup<'a> {
    dir: &'a Path,
    recipient: &'a str,
    moto: &'a MotoServer,
    ssh: &'a SshServer,
}

/// A config with job `svc` writing to `local` (directory `local_dir`),
/// `s3` (prefix `prefix`) and `sftp`; `sftp_extra` and `job_extra` are
/// appended to those tables.
fn write_config(
    setup: &Setup<'_>,
    local_dir: &str,
    prefix: &str,
    sftp_extra: &str,
    job_extra: &str,
) -> std::path::PathBuf {
    let Setup {
        dir,
        recipient,
        moto,
        ssh,
    } = setup;
    let path = dir.join(format!("{local_dir}.toml"));
    fs::write(
        &path,
        format!(
            r#"recipients = ["{recipient}"]

[job.svc]
sources = ["svc"]
sinks = ["local", "s3", "sftp"]
{job_extra}

[source.svc]
kind = "file"
path = "svc"

[sink.local]
kind = "local"
path = "{local_dir}"

[sink.s3]
kind = "s3"
bucket = "{BUCKET}"
prefix = "{prefix}"
endpoint = "{endpoint}"
region = "us-east-1"

[sink.sftp]
kind = "sftp"
host = "127.0.0.1"
port = {port}
user = "{user}"
path = "{data}/bk"
key = "{key}"
known-hosts = "{known_hosts}"
{sftp_extra}
"#,
            endpoint = moto.endpoint(),
            port = ssh.port(),
            user = ssh.user(),
            data = ssh.data_dir().display(),
            key = ssh.client_key().display(),
            known_hosts = ssh.known_hosts().display(),
        ),
    )
    .unwrap();
    path
}

fn run(dir: &Path, config: &Path, json: bool) -> Output {
    let mut c = coffer_aws(dir);
    c.arg("--config").arg(config);
    if json {
        c.arg("--json");
    }
    c.args(["-q", "backup"]).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sink_json<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {v}"))
}

#[test]
fn sftp_down_optional_required_and_quorum() {
    let Some(moto) = MotoServer::start() else { return };
    let Some(mut ssh) = SshServer::start() else { return };
    moto.create_bucket(BUCKET);
    // The SFTP server is down: its port is closed.
    ssh.kill();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_key, recipient) = keygen(dir, "key.txt");
    fs::create_dir_all(dir.join("svc")).unwrap();
    let setup = Setup {
        dir,
        recipient: &recipient,
        moto: &moto,
        ssh: &ssh,
    };
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(dir.join("svc/blob.bin"), &data).unwrap();
    fs::write(dir.join("svc/app.yaml"), "a: 1\n").unwrap();

    // 1. SFTP optional (TOML): success on the other two, which hold
    //    identical objects; the output says SFTP failed and was optional.
    let cfg = write_config(&setup, "bk-opt", "opt", "optional = true", "");
    let started = std::time::Instant::now();
    let out = run(dir, &cfg, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("sink sftp"))
        .unwrap_or_else(|| panic!("no sftp line: {stdout}"));
    assert!(line.contains("(optional)") && line.contains("FAILED"), "{line}");
    assert!(
        stdout.contains("sink local (") && stdout.contains("sink s3 ("),
        "{stdout}"
    );
    let local = fs::read(only_object(&dir.join("bk-opt"), ".coffer")).unwrap();
    let s3_keys: Vec<String> = moto
        .keys(BUCKET)
        .into_iter()
        .filter(|k| k.starts_with("opt/") && k.ends_with(".coffer"))
        .collect();
    assert_eq!(s3_keys.len(), 1, "{s3_keys:?}");
    assert_eq!(sha256(&local), sha256(&moto.get_object(BUCKET, &s3_keys[0])));
    assert!(local.len() > 1024);
    // Nothing reached the SFTP data directory.
    assert!(
        !ssh.data_dir().join("bk").exists() || fs::read_dir(ssh.data_dir().join("bk")).unwrap().count() == 0
    );

    // 2. Same job with SFTP required: partial, exit 4, naming the sink.
    let cfg = write_config(&setup, "bk-req", "req", "", "");
    let out = run(dir, &cfg, true);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sftp = sink_json(&v, "sftp");
    assert_eq!(sftp["ok"], false, "{v}");
    assert_eq!(sftp["optional"], false, "{v}");
    assert!(sftp["error"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    assert_eq!(sink_json(&v, "local")["ok"], true);
    assert_eq!(sink_json(&v, "s3")["ok"], true);
    assert_eq!(v["partial"], true);
    only_object(&dir.join("bk-req"), ".coffer");
    let out = run(dir, &cfg, false);
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("required sink(s) failed: sftp"), "{stderr}");

    // 3. quorum = 2 of 3 with SFTP (required) down: success.
    let cfg = write_config(&setup, "bk-q2", "q2", "", "quorum = 2");
    let out = run(dir, &cfg, true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["stored_on"].as_u64(), v["quorum"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(sink_json(&v, "sftp")["ok"], false);
    let out = run(dir, &cfg, false);
    assert!(text(&out.stdout).contains("quorum: stored on 2 of 3 sinks, 2 required"));

    // 4. quorum = 3 of 3: short of the quorum, partial (exit 4) — even if
    //    the sink is marked optional.
    let cfg = write_config(&setup, "bk-q3", "q3", "optional = true", "quorum = 3");
    let out = run(dir, &cfg, false);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("short of the quorum of 3"),
        "{}",
        text(&out.stderr)
    );

    // 5. One-off flags: --sink-optional adds an optional sink.
    let out = coffer_aws(dir)
        .args([
            "--json",
            "-q",
            "backup",
            "--source",
            "file:svc",
            "--recipient",
            &recipient,
        ])
        .args(["--sink", "bk-flags"])
        .args(["--sink-optional", &ssh.url("bk")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sinks = v["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 2, "{v}");
    assert_eq!(
        (sinks[1]["optional"].as_bool(), sinks[1]["ok"].as_bool()),
        (Some(true), Some(false))
    );
    // …and marks a job's own sink optional.
    let cfg = write_config(&setup, "bk-flag2", "f2", "", "");
    let out = coffer_aws(dir)
        .arg("--config")
        .arg(&cfg)
        .args(["-q", "backup", "--sink-optional", "sftp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // 6. With the server back, the required job stores on all three, and
    //    the three objects are identical.
    ssh.restart();
    let setup = Setup {
        dir,
        recipient: &recipient,
        moto: &moto,
        ssh: &ssh,
    };
    let cfg = write_config(&setup, "bk-all", "all", "", "");
    let out = run(dir, &cfg, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let local = fs::read(only_object(&dir.join("bk-all"), ".coffer")).unwrap();
    let sftp = fs::read(only_object(&ssh.data_dir().join("bk"), ".coffer")).unwrap();
    assert_eq!(sha256(&local), sha256(&sftp));
}

#[test]
fn bad_quorum_is_a_config_error() {
    let Some(moto) = MotoServer::start() else { return };
    let Some(ssh) = SshServer::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_key, recipient) = keygen(dir, "key.txt");
    fs::create_dir_all(dir.join("svc")).unwrap();
    let setup = Setup {
        dir,
        recipient: &recipient,
        moto: &moto,
        ssh: &ssh,
    };
    for q in ["quorum = 4", "quorum = 0"] {
        let cfg = write_config(&setup, "bk", "p", "", q);
        let out = run(dir, &cfg, false);
        assert_eq!(out.status.code(), Some(2), "{q}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("quorum") && stderr.contains("bk.toml:3"),
            "{stderr}"
        );
    }
    let cfg = write_config(&setup, "bk", "p", "optional = \"yes\"", "");
    let out = run(dir, &cfg, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("optional must be true or false"));
}
