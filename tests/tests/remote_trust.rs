//! End-to-end: retention, signed snapshots and sink locks on the remote
//! sinks — the real binary against S3 (moto_server) and, where it is
//! cheap, SFTP (a private sshd).
//!
//! - signed snapshots: a genuine one restores with `--trusted-signer`; one
//!   signed by another key and an unsigned one are refused (exit 3) with
//!   nothing written; an index overwritten through the S3 API is detected;
//! - retention: a `backup --time` history, `prune --dry-run --json`, a real
//!   prune deleting the index before the object (moto's request log), a
//!   pinned snapshot surviving;
//! - locks: a held exclusive lock stops backup and prune naming its holder;
//!   two prunes started at once delete each snapshot exactly once; `coffer
//!   unlock` removes a stale lock with a warning.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::moto_server::MotoServer;
use coffer_e2e::ssh_server::SshServer;
use coffer_e2e::{coffer, coffer_bin, json_ok, keygen, prune_decisions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BUCKET: &str = "coffer-trust";

/// `s3://BUCKET/PREFIX` on the moto server.
fn s3_url(moto: &MotoServer, prefix: &str) -> String {
    format!(
        "s3://{BUCKET}/{prefix}?endpoint={}&region=us-east-1",
        moto.endpoint()
    )
}

/// `coffer` with the AWS environment moto accepts.
fn coffer_aws(dir: &Path) -> assert_cmd::Command {
    let mut c = coffer(dir);
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("COFFER_LOCK_REFRESH_SECS")
        .env_remove("COFFER_LOCK_STALE_SECS")
        .env_remove("COFFER_SIGNING_KEY");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A work directory with `data/seed.json` and an age identity.
fn setup() -> (tempfile::TempDir, PathBuf, String) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("seed.json"), b"{\"issuers\": 3}\n").unwrap();
    let (identity, recipient) = keygen(t.path(), "id.txt");
    (t, identity, recipient)
}

/// `coffer keygen --signing -o name`: (key file, public key line).
fn signing_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = coffer(dir)
        .args(["keygen", "--signing", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout).trim().to_string();
    assert!(public.starts_with("coffer-sign-ed25519:"), "{public}");
    (path, public)
}

/// The output of a one-off backup of `data` to `sink`, signed with `key`
/// if given, recorded at `time` if given.
fn backup_out(dir: &Path, sink: &str, recipient: &str, key: Option<&Path>, time: Option<&str>) -> Output {
    let mut c = coffer_aws(dir);
    c.args([
        "--json",
        "-q",
        "backup",
        "--source",
        "file:data",
        "--name",
        "svc",
        "--recipient",
        recipient,
        "--sink",
        sink,
    ]);
    if let Some(k) = key {
        c.arg("--signing-key").arg(k);
    }
    if let Some(t) = time {
        c.args(["--time", t]);
    }
    c.output().unwrap()
}

/// [`backup_out`] that must succeed; returns the snapshot id.
fn backup(dir: &Path, sink: &str, recipient: &str, key: Option<&Path>, time: Option<&str>) -> String {
    let out = backup_out(dir, sink, recipient, key, time);
    assert!(out.status.success(), "backup failed: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// `coffer restore ID --target T --trusted-signer K`: (exit code, stderr).
fn restore(
    dir: &Path,
    sink: &str,
    id: &str,
    identity: &Path,
    target: &Path,
    trusted: Option<&str>,
) -> (i32, String) {
    let mut c = coffer_aws(dir);
    c.args(["restore", id, "--sink", sink, "--identity"])
        .arg(identity)
        .arg("--target")
        .arg(target);
    if let Some(t) = trusted {
        c.args(["--trusted-signer", t]);
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap(), text(&out.stderr))
}

/// Keys under `prefix/` in the bucket, without the prefix, sorted.
fn s3_keys(moto: &MotoServer, prefix: &str) -> Vec<String> {
    let p = format!("{prefix}/");
    let mut v: Vec<String> = moto
        .keys(BUCKET)
        .into_iter()
        .filter_map(|k| k.strip_prefix(&p).map(str::to_string))
        .collect();
    v.sort();
    v
}

/// The lock objects under `prefix/locks/`.
fn s3_locks(moto: &MotoServer, prefix: &str) -> Vec<String> {
    s3_keys(moto, prefix)
        .into_iter()
        .filter(|k| k.starts_with("locks/"))
        .collect()
}

/// Snapshot keys (everything but locks) under `prefix/`.
fn s3_snapshot_keys(moto: &MotoServer, prefix: &str) -> Vec<String> {
    s3_keys(moto, prefix)
        .into_iter()
        .filter(|k| !k.starts_with("locks/"))
        .collect()
}

/// Now as RFC 3339 (UTC, seconds).
fn now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_string()
}

/// A lock object as a process on another host would have written it.
fn lock_json(kind: &str, holder: &str, host: &str, pid: u32, refreshed: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "kind": kind, "holder": holder, "host": host, "pid": pid,
        "created": refreshed, "refreshed": refreshed, "id": "00000000deadbeef",
    }))
    .unwrap()
}

/// `(id, keep, reasons, deleted)` of each snapshot of a prune's JSON for one sink.
fn decisions(v: &Value) -> Vec<(String, bool, Vec<String>, bool)> {
    let deleted = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["deleted"].as_bool().unwrap());
    prune_decisions(v)
        .into_iter()
        .zip(deleted)
        .map(|((id, keep, reasons), deleted)| (id, keep, reasons, deleted))
        .collect()
}

/// The keys under `prefix/` that moto was asked to delete, in order.
fn deletes(moto: &MotoServer, prefix: &str) -> Vec<String> {
    let p = format!("{prefix}/");
    moto.recorded_deletes(BUCKET)
        .into_iter()
        .filter_map(|k| k.strip_prefix(&p).map(str::to_string))
        .collect()
}

#[test]
fn signed_snapshots_on_s3_are_checked_before_anything_is_written() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let (t, identity, recipient) = setup();
    let dir = t.path();
    let (good_key, good_pub) = signing_keygen(dir, "good.key");
    let (evil_key, evil_pub) = signing_keygen(dir, "evil.key");
    let url = s3_url(&moto, "signed");

    let genuine = backup(dir, &url, &recipient, Some(&good_key), None);
    let forged = backup(dir, &url, &recipient, Some(&evil_key), None);
    let unsigned = backup(dir, &url, &recipient, None, None);
    let keys = s3_keys(&moto, "signed");
    assert!(keys.contains(&format!("{genuine}.sig")), "{keys:?}");
    assert!(keys.contains(&format!("{forged}.sig")), "{keys:?}");
    assert!(!keys.iter().any(|k| k == &format!("{unsigned}.sig")), "{keys:?}");
    assert!(
        s3_locks(&moto, "signed").is_empty(),
        "every backup released its lock"
    );

    // Another key's signature, and none at all: refused, nothing written.
    for (id, why) in [(&forged, "not a trusted signer"), (&unsigned, "unsigned")] {
        let target = dir.join(format!("out-{id}"));
        let (code, err) = restore(dir, &url, id, &identity, &target, Some(&good_pub));
        assert_eq!(code, 3, "{id}: {err}");
        assert!(err.contains(why), "{id}: {err}");
        assert!(!target.exists(), "nothing written for {id}");
    }
    // Whoever trusts the other key accepts the other key's snapshot.
    let (code, err) = restore(
        dir,
        &url,
        &forged,
        &identity,
        &dir.join("out-evil"),
        Some(&evil_pub),
    );
    assert_eq!(code, 0, "{err}");

    // The genuine one restores.
    let target = dir.join("out-genuine");
    let (code, err) = restore(dir, &url, &genuine, &identity, &target, Some(&good_pub));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(target.join("seed.json")).unwrap(), b"{\"issuers\": 3}\n");

    // list tells them apart.
    let out = coffer_aws(dir)
        .args(["--json", "list", "--sink", &url, "--trusted-signer", &good_pub])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let snaps = v[0]["snapshots"].as_array().unwrap();
    let state = |id: &str| {
        snaps.iter().find(|s| s["id"] == id).unwrap()["signature"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(&genuine), "trusted");
    assert_eq!(state(&forged), "untrusted-signer");
    assert_eq!(state(&unsigned), "unsigned");

    // One byte of the genuine index changed through the S3 API (JSON
    // whitespace: still a valid index): the signature no longer matches.
    let index_key = format!("signed/{genuine}.json");
    let mut bytes = moto.get_object(BUCKET, &index_key);
    let pos = bytes.iter().position(|&b| b == b'\n').unwrap();
    bytes.insert(pos, b' ');
    moto.put_object(BUCKET, &index_key, &bytes);
    assert_eq!(moto.get_object(BUCKET, &index_key), bytes, "tampered on S3");
    let target = dir.join("out-tampered");
    let (code, err) = restore(dir, &url, &genuine, &identity, &target, Some(&good_pub));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad signature"), "{err}");
    assert!(!target.exists());
    // A bad signature fails even with no signer trusted.
    let out = coffer_aws(dir)
        .args(["verify", &genuine, "--sink", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // The attack that matters: another bundle (valid age to the same
    // recipient, other content) put in place of a signed snapshot's
    // object, with its hash and size written into the signed index.
    fs::write(dir.join("data/seed.json"), b"{\"issuers\": 666}\n").unwrap();
    let evil = backup(dir, &s3_url(&moto, "attacker"), &recipient, None, None);
    fs::write(dir.join("data/seed.json"), b"{\"issuers\": 3}\n").unwrap();
    let second = backup(dir, &url, &recipient, Some(&good_key), None);
    let evil_obj = moto.get_object(BUCKET, &format!("attacker/{evil}.coffer"));
    let second_key = format!("signed/{second}.json");
    let mut index: Value = serde_json::from_slice(&moto.get_object(BUCKET, &second_key)).unwrap();
    index["object"]["sha256"] = json!(sha256(&evil_obj));
    index["object"]["size"] = json!(evil_obj.len());
    moto.put_object(BUCKET, &second_key, &serde_json::to_vec_pretty(&index).unwrap());
    moto.put_object(BUCKET, &format!("signed/{second}.coffer"), &evil_obj);
    let target = dir.join("out-swapped");
    let (code, err) = restore(dir, &url, &second, &identity, &target, Some(&good_pub));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad signature"), "{err}");
    assert!(!target.exists(), "nothing of the attacker's bundle was written");
}

#[test]
fn signed_snapshots_and_locks_on_sftp() {
    let Some(ssh) = SshServer::start() else { return };
    let (t, identity, recipient) = setup();
    let dir = t.path();
    let (key, public) = signing_keygen(dir, "sign.key");
    let url = ssh.url("bk");
    let remote = ssh.data_dir().join("bk");

    let genuine = backup(dir, &url, &recipient, Some(&key), None);
    let unsigned = backup(dir, &url, &recipient, None, None);
    assert!(remote.join(format!("{genuine}.sig")).exists());
    let target = dir.join("out-unsigned");
    let (code, err) = restore(dir, &url, &unsigned, &identity, &target, Some(&public));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unsigned"), "{err}");
    assert!(!target.exists());
    let target = dir.join("out-genuine");
    let (code, err) = restore(dir, &url, &genuine, &identity, &target, Some(&public));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(target.join("seed.json")).unwrap(), b"{\"issuers\": 3}\n");
    // Tampered on the server.
    let index = remote.join(format!("{genuine}.json"));
    let mut bytes = fs::read(&index).unwrap();
    let pos = bytes.iter().position(|&b| b == b'\n').unwrap();
    bytes.insert(pos, b' ');
    fs::write(&index, &bytes).unwrap();
    let target = dir.join("out-tampered");
    let (code, err) = restore(dir, &url, &genuine, &identity, &target, Some(&public));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad signature"), "{err}");
    assert!(!target.exists());

    // A live exclusive lock of another host stops backup and prune.
    let locks = remote.join("locks");
    fs::create_dir_all(&locks).unwrap();
    let live = locks.join("exclusive-000000000001.json");
    fs::write(&live, lock_json("exclusive", "prune", "ghost-host", 4242, &now())).unwrap();
    let out = backup_out(dir, &url, &recipient, None, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sink is locked by prune on host ghost-host pid 4242"),
        "{}",
        text(&out.stderr)
    );
    let out = coffer_aws(dir)
        .args(["prune", "--sink", &url, "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("locked by prune on host ghost-host pid 4242"));
    assert!(index.exists() && remote.join(format!("{unsigned}.json")).exists());
    assert_eq!(fs::read_dir(&locks).unwrap().count(), 1, "only the foreign lock");

    // The same lock, unrefreshed since 2020: stale; unlock removes it.
    fs::write(
        &live,
        lock_json("exclusive", "prune", "ghost-host", 4242, "2020-01-01T00:00:00Z"),
    )
    .unwrap();
    fs::File::options()
        .write(true)
        .open(&live)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800))
        .unwrap();
    let out = coffer_aws(dir).args(["unlock", "--sink", &url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("removed the stale lock held by prune on host ghost-host pid 4242"),
        "{}",
        text(&out.stderr)
    );
    assert!(!live.exists());
    let out = coffer_aws(dir)
        .args(["prune", "--sink", &url, "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!remote.join(format!("{genuine}.json")).exists());
    assert!(remote.join(format!("{unsigned}.json")).exists());
    assert_eq!(
        fs::read_dir(&locks).unwrap().count(),
        0,
        "prune released its lock"
    );
}

/// Backup times: two in January, two on one February day, two in March.
const HISTORY: [&str; 6] = [
    "2026-01-31T10:00:00Z",
    "2026-02-27T09:00:00Z",
    "2026-02-28T08:00:00Z",
    "2026-02-28T20:00:00Z",
    "2026-03-01T10:00:00Z",
    "2026-03-02T10:00:00Z",
];

#[test]
fn retention_on_s3_deletes_index_before_object_and_spares_pins() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let (t, _identity, recipient) = setup();
    let dir = t.path();
    let (key, public) = signing_keygen(dir, "sign.key");
    let url = s3_url(&moto, "ret");
    let ids: Vec<String> = HISTORY
        .iter()
        .map(|time| backup(dir, &url, &recipient, Some(&key), Some(time)))
        .collect();
    let before = s3_snapshot_keys(&moto, "ret");
    assert_eq!(before.len(), 18, "index, object, signature each: {before:?}");
    for (id, time) in ids.iter().zip(HISTORY) {
        let index: Value =
            serde_json::from_slice(&moto.get_object(BUCKET, &format!("ret/{id}.json"))).unwrap();
        assert_eq!(index["created_at"], time, "--time recorded");
    }

    let prune = |extra: &[&str]| {
        coffer_aws(dir)
            .args(["--json", "prune", "--sink", &url])
            .args(extra)
            .output()
            .unwrap()
    };
    let v = json_ok(&prune(&["--keep-daily", "2", "--keep-monthly", "3", "--dry-run"]));
    assert_eq!(v[0]["dry_run"], true);
    let r = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let want = vec![
        (
            ids[5].clone(),
            true,
            r(&["daily 1/2 (2026-03-02)", "monthly 1/3 (2026-03)", "newest"]),
            false,
        ),
        (ids[4].clone(), true, r(&["daily 2/2 (2026-03-01)"]), false),
        (ids[3].clone(), true, r(&["monthly 2/3 (2026-02)"]), false),
        (ids[2].clone(), false, vec![], false),
        (ids[1].clone(), false, vec![], false),
        (ids[0].clone(), true, r(&["monthly 3/3 (2026-01)"]), false),
    ];
    assert_eq!(decisions(&v[0]), want);
    assert_eq!(
        s3_snapshot_keys(&moto, "ret"),
        before,
        "a dry run deletes nothing"
    );
    assert!(s3_locks(&moto, "ret").is_empty());

    // Pin one of the two the policy drops.
    let out = coffer_aws(dir)
        .args(["pin", &ids[2], "--sink", &url, "--reason", "audit"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s3_keys(&moto, "ret").contains(&format!("{}.pin", ids[2])));

    moto.start_recording();
    let v = json_ok(&prune(&["--keep-daily", "2", "--keep-monthly", "3"]));
    let got = decisions(&v[0]);
    assert_eq!(got[3], (ids[2].clone(), true, r(&["pinned"]), false));
    assert_eq!(got[4], (ids[1].clone(), false, vec![], true));
    assert_eq!(got.iter().filter(|d| d.3).count(), 1, "{got:?}");
    let keys = s3_snapshot_keys(&moto, "ret");
    assert!(!keys.iter().any(|k| k.starts_with(&ids[1])), "{keys:?}");
    assert_eq!(keys.len(), 16, "{keys:?}");

    // Keep only the newest: the pinned one survives, three more go.
    let v = json_ok(&prune(&["--keep-last", "1"]));
    let deleted: Vec<&str> = v[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["deleted"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [&ids[4], &ids[3], &ids[0]]);
    let mut want_left = Vec::new();
    for id in [&ids[2], &ids[5]] {
        for ext in ["coffer", "json", "sig"] {
            want_left.push(format!("{id}.{ext}"));
        }
    }
    want_left.push(format!("{}.pin", ids[2]));
    want_left.sort();
    assert_eq!(s3_snapshot_keys(&moto, "ret"), want_left);
    assert!(s3_locks(&moto, "ret").is_empty(), "prune released its lock");

    // What S3 saw: per snapshot, the index deleted first, then the object,
    // then the signature; each once.
    let dels: Vec<String> = deletes(&moto, "ret")
        .into_iter()
        .filter(|k| !k.starts_with("locks/"))
        .collect();
    let mut want_dels = Vec::new();
    for id in [&ids[1], &ids[4], &ids[3], &ids[0]] {
        for ext in ["json", "coffer", "sig"] {
            want_dels.push(format!("{id}.{ext}"));
        }
    }
    assert_eq!(dels, want_dels);

    // What is left is intact and trusted.
    let out = coffer_aws(dir)
        .args(["verify", "--all", "--sink", &url, "--trusted-signer", &public])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn a_held_lock_on_s3_stops_backup_and_prune_naming_its_holder() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let (t, _identity, recipient) = setup();
    let dir = t.path();
    let url = s3_url(&moto, "held");
    for time in &HISTORY[..3] {
        backup(dir, &url, &recipient, None, Some(time));
    }
    let before = s3_snapshot_keys(&moto, "held");
    assert_eq!(before.len(), 6);
    let lock_key = "held/locks/exclusive-000000000001.json";
    moto.put_object(
        BUCKET,
        lock_key,
        &lock_json("exclusive", "prune", "ghost-host", 4242, &now()),
    );

    let out = backup_out(dir, &url, &recipient, None, Some(HISTORY[3]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("sink is locked by prune on host ghost-host pid 4242 since"),
        "{err}"
    );
    assert!(err.contains("coffer unlock"), "{err}");
    assert_eq!(
        s3_snapshot_keys(&moto, "held"),
        before,
        "the refused backup wrote nothing"
    );

    let out = coffer_aws(dir)
        .args(["prune", "--sink", &url, "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("sink is locked by prune on host ghost-host pid 4242"),
        "{err}"
    );
    assert_eq!(
        s3_snapshot_keys(&moto, "held"),
        before,
        "the refused prune deleted nothing"
    );
    assert_eq!(
        s3_locks(&moto, "held"),
        ["locks/exclusive-000000000001.json"],
        "refused acquirers leave no lock behind"
    );

    // The holder is live, so plain unlock keeps it; --force removes it.
    let out = coffer_aws(dir).args(["unlock", "--sink", &url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kept the live lock held by prune on host ghost-host pid 4242"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s3_locks(&moto, "held").len(), 1);
    let out = coffer_aws(dir)
        .args(["unlock", "--sink", &url, "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("removed the LIVE lock held by prune on host ghost-host pid 4242"),
        "{}",
        text(&out.stderr)
    );
    assert!(s3_locks(&moto, "held").is_empty());

    let out = coffer_aws(dir)
        .args(["prune", "--sink", &url, "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s3_snapshot_keys(&moto, "held").len(), 2);
    assert!(s3_locks(&moto, "held").is_empty(), "prune released its lock");
}

#[test]
fn two_prunes_started_at_once_on_s3_delete_each_snapshot_once() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let (t, _identity, recipient) = setup();
    let dir = t.path();
    // A few rounds: the two prunes race differently each time.
    for round in 0..3 {
        let prefix = format!("race{round}");
        let url = s3_url(&moto, &prefix);
        let ids: Vec<String> = HISTORY
            .iter()
            .map(|time| backup(dir, &url, &recipient, None, Some(time)))
            .collect();
        moto.start_recording();
        let spawn = || {
            std::process::Command::new(coffer_bin())
                .env("COFFER_CREATE_SINK", "true")
                .current_dir(dir)
                .args(["--json", "prune", "--sink", &url, "--keep-last", "1"])
                .env_remove("COFFER_CONFIG")
                .env_remove("COFFER_LOCK_REFRESH_SECS")
                .env_remove("COFFER_LOCK_STALE_SECS")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test-secret")
                .env_remove("AWS_ENDPOINT_URL")
                .env_remove("AWS_PROFILE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let mut deleted: BTreeMap<String, usize> = BTreeMap::new();
        let mut ran = 0;
        for o in &outs {
            if o.status.success() {
                ran += 1;
                let v: Value = serde_json::from_slice(&o.stdout).unwrap();
                for s in v[0]["snapshots"].as_array().unwrap() {
                    if s["deleted"] == true {
                        *deleted.entry(s["id"].as_str().unwrap().to_string()).or_default() += 1;
                    }
                }
            } else {
                let err = text(&o.stderr);
                assert_eq!(o.status.code(), Some(1), "round {round}: {err}");
                assert!(
                    err.contains("sink is locked by prune"),
                    "round {round}: the only failure allowed is the lock: {err}"
                );
            }
        }
        eprintln!("round {round}: {ran} of the 2 prunes ran");
        assert!(ran >= 1, "round {round}: at least one prune ran");
        let want: BTreeMap<String, usize> = ids[..5].iter().map(|id| (id.clone(), 1)).collect();
        assert_eq!(
            deleted, want,
            "round {round}: each snapshot deleted once, by one prune"
        );
        // On the wire too: one DELETE per key, whoever sent it.
        let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
        for k in deletes(&moto, &prefix) {
            if !k.starts_with("locks/") {
                *per_key.entry(k).or_default() += 1;
            }
        }
        assert!(
            per_key.values().all(|&n| n == 1),
            "round {round}: a key deleted twice: {per_key:?}"
        );
        assert_eq!(per_key.len(), 10, "round {round}: {per_key:?}");
        assert_eq!(
            s3_snapshot_keys(&moto, &prefix),
            [format!("{}.coffer", ids[5]), format!("{}.json", ids[5])]
        );
        assert!(
            s3_locks(&moto, &prefix).is_empty(),
            "round {round}: locks released"
        );
    }
}

/// The stale timeout of `unlock_removes_a_stale_lock_on_s3_with_a_warning`.
const STALE_SECS: u64 = 8;

#[test]
fn unlock_removes_a_stale_lock_on_s3_with_a_warning() {
    let Some(moto) = MotoServer::start() else { return };
    moto.create_bucket(BUCKET);
    let (t, _identity, recipient) = setup();
    let dir = t.path();
    let url = s3_url(&moto, "stale");
    backup(dir, &url, &recipient, None, Some(HISTORY[0]));
    // A crashed prune's lock. Its own `refreshed` says 2020, but S3 dates
    // the object now, and a lock is only as old as the later of the two:
    // live for now.
    let key = "stale/locks/exclusive-000000000004.json";
    moto.put_object(
        BUCKET,
        key,
        &lock_json("exclusive", "prune", "ghost-host", 999, "2020-01-01T00:00:00Z"),
    );
    let planted = Instant::now();
    let fast = |c: &mut assert_cmd::Command| {
        c.env("COFFER_LOCK_REFRESH_SECS", "1")
            .env("COFFER_LOCK_STALE_SECS", STALE_SECS.to_string());
    };
    let mut c = coffer_aws(dir);
    fast(&mut c);
    let out = c.args(["unlock", "--sink", &url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kept the live lock held by prune on host ghost-host pid 999"),
        "{}",
        text(&out.stderr)
    );
    let backup = || {
        let mut c = coffer_aws(dir);
        fast(&mut c);
        c.args([
            "-q",
            "backup",
            "--source",
            "file:data",
            "--recipient",
            &recipient,
            "--sink",
            &url,
        ])
        .output()
        .unwrap()
    };
    let out = backup();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("sink is locked by prune on host ghost-host pid 999"));

    assert!(
        planted.elapsed() < Duration::from_secs(STALE_SECS),
        "the machine is too slow for this test's timing: {:?}",
        planted.elapsed()
    );

    // Unrefreshed for longer than COFFER_LOCK_STALE_SECS: stale.
    std::thread::sleep(Duration::from_secs(STALE_SECS + 2).saturating_sub(planted.elapsed()));
    let out = backup();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ignoring a stale lock held by prune on host ghost-host pid 999"),
        "{}",
        text(&out.stderr)
    );
    let mut c = coffer_aws(dir);
    fast(&mut c);
    let out = c.args(["--json", "unlock", "--sink", &url]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: sink")
            && text(&out.stderr).contains("removed the stale lock held by prune on host ghost-host pid 999"),
        "{}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["removed"][0]["key"], "locks/exclusive-000000000004.json");
    assert_eq!(v[0]["removed"][0]["stale"], true);
    assert!(v[0]["kept"].as_array().unwrap().is_empty());
    assert!(s3_locks(&moto, "stale").is_empty());
    assert_eq!(s3_snapshot_keys(&moto, "stale").len(), 4, "both snapshots intact");
}
