//! End-to-end: one backup fanned out to a local directory, S3 (moto_server)
//! and SFTP (a private sshd) at once, then restored from the remote sinks.

use std::fs;
use std::path::Path;

use coffer_e2e::moto_server::MotoServer;
use coffer_e2e::ssh_server::SshServer;
use coffer_e2e::{coffer, keygen, only_object};
use sha2::{Digest, Sha256};

const BUCKET: &str = "coffer-e2e";

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn s3_url(moto: &MotoServer) -> String {
    format!(
        "s3://{BUCKET}/snapshots?endpoint={}&region=us-east-1",
        moto.endpoint()
    )
}

/// `coffer` with the AWS environment moto accepts.
fn coffer_aws(dir: &Path) -> assert_cmd::Command {
    let mut c = coffer(dir);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-never-printed")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    c
}

#[test]
fn three_sinks_get_identical_objects_and_restore_from_each() {
    let Some(moto) = MotoServer::start() else { return };
    let Some(ssh) = SshServer::start() else { return };
    moto.create_bucket(BUCKET);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (key, recipient) = keygen(dir, "key.txt");
    fs::create_dir_all(dir.join("svc")).unwrap();
    // Several MiB of incompressible data so S3 uses a multipart upload.
    let data: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(dir.join("svc/blob.bin"), &data).unwrap();
    fs::write(dir.join("svc/app.yaml"), "a: 1\n").unwrap();

    let out = coffer_aws(dir)
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc",
            "--compression",
            "none",
        ])
        .args([
            "--sink",
            "local-bk",
            "--sink",
            &s3_url(&moto),
            "--sink",
            &ssh.url("bk"),
        ])
        .args(["--recipient", &recipient])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {stderr}");
    assert!(!stderr.contains("test-secret-never-printed"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sinks = json["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 3, "{json}");

    let local = fs::read(only_object(&dir.join("local-bk"), ".coffer")).unwrap();
    let sftp = fs::read(only_object(&ssh.data_dir().join("bk"), ".coffer")).unwrap();
    let s3_key = moto
        .keys(BUCKET)
        .into_iter()
        .find(|k| k.ends_with(".coffer"))
        .expect("an object on S3");
    let s3 = moto.get_object(BUCKET, &s3_key);
    assert!(local.len() > 12 << 20);
    assert_eq!(sha256(&local), sha256(&s3), "S3 object differs");
    assert_eq!(sha256(&local), sha256(&sftp), "SFTP object differs");

    // Each remote sink restores the data by itself.
    for (name, sink) in [("s3", s3_url(&moto)), ("sftp", ssh.url("bk"))] {
        let target = dir.join(format!("restore-{name}"));
        let out = coffer_aws(dir)
            .args(["restore", "latest", "--sink", &sink, "--identity"])
            .arg(&key)
            .arg("--target")
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore from {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let restored = crate::find_file(&target, "blob.bin").expect("blob restored");
        assert_eq!(sha256(&fs::read(restored).unwrap()), sha256(&data), "{name}");
    }
}

#[test]
fn unreachable_remote_sinks_fail_clearly_and_quickly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fs::write(dir.join("k"), "x").unwrap();
    let started = std::time::Instant::now();
    let out = coffer_aws(dir)
        .args([
            "list",
            "--sink",
            &format!("s3://b/p?endpoint=http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    let out = coffer_aws(dir)
        .args([
            "list",
            "--sink",
            &format!("sftp://u@127.0.0.1:{port}/p?key={}", dir.join("k").display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// The first file named `name` under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}
