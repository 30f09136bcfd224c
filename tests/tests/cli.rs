//! End-to-end tests of the `coffer` binary: every command, and every bad
//! input of the foundation issue, on the local sink.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use coffer_e2e::{backup_cmd, coffer, copy_dir, files_under, keygen, only_object};
use predicates::prelude::*;
use serde_json::Value;

const SECRET: &str = "s3cr3t-p4ssw0rd-value";

/// A small service: config file, seed dir, .env with a secret.
fn service(dir: &Path) {
    fs::create_dir_all(dir.join("svc/etc")).unwrap();
    fs::create_dir_all(dir.join("svc/data/nested")).unwrap();
    fs::write(
        dir.join("svc/etc/app.yaml"),
        "port: 8447\nname: issuer-directory\n",
    )
    .unwrap();
    fs::write(dir.join("svc/data/seed.json"), "[{\"id\": 1}]\n").unwrap();
    fs::write(dir.join("svc/data/nested/ünï code.txt"), "unicode name\n").unwrap();
    fs::set_permissions(dir.join("svc/data/seed.json"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(
        dir.join("svc/.env"),
        format!(
            "# compose env\nPORT=8447\nAPP_MONGO_URI=mongodb://app:{SECRET}@db:27017/app\nAPP_MONGO_DB=app\n"
        ),
    )
    .unwrap();
}

fn backup_oneoff(dir: &Path, recipient: &str) -> Value {
    let out = coffer(dir)
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc/etc/app.yaml",
            "--source",
            "file:svc/data",
        ])
        .args([
            "--source",
            "env:svc/.env#APP_MONGO_*",
            "--sink",
            "bk",
            "--recipient",
            recipient,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains(SECRET), "secret in backup output");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn keygen_writes_private_file_and_refuses_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let (key, rec) = keygen(d.path(), "key.txt");
    let meta = fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = fs::read_to_string(&key).unwrap();
    assert!(text.contains("AGE-SECRET-KEY-1"));
    assert!(text.contains(&rec));
    coffer(d.path())
        .args(["keygen", "-o", "key.txt"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("refusing to overwrite"));
}

#[test]
fn init_writes_an_example_that_parses() {
    let d = tempfile::tempdir().unwrap();
    coffer(d.path()).arg("init").assert().success();
    assert!(d.path().join("coffer.toml").exists());
    coffer(d.path())
        .arg("init")
        .assert()
        .failure()
        .stderr(predicate::str::contains("--force"));
    // It parses, and refuses to back up with no recipient, saying what to
    // do. Without COFFER_CREATE_SINK (which `coffer()` sets): what the
    // config says is what counts.
    let p = d.path();
    coffer(p)
        .env_remove("COFFER_CREATE_SINK")
        .arg("backup")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no recipient"))
        .stderr(predicate::str::contains("hint"));
    // Filled in (a recipient; the files its sources name), it backs up at
    // once: its local sink has `create = true`, so the first run makes it,
    // with no `coffer sink init` and no --create-sink before.
    fs::create_dir_all(p.join("etc")).unwrap();
    fs::write(p.join("etc/service.yaml"), "port: 8447\n").unwrap();
    fs::create_dir_all(p.join("data")).unwrap();
    fs::write(p.join("data/seed.json"), "[{\"id\": 1}]\n").unwrap();
    fs::write(
        p.join(".env"),
        format!("PORT=8447\nSERVICE_MONGO_URI=mongodb://app:{SECRET}@db:27017/app\n"),
    )
    .unwrap();
    let (_, rec) = keygen(p, "key.txt");
    let config = fs::read_to_string(p.join("coffer.toml")).unwrap();
    assert_eq!(config.matches("recipients = [\n").count(), 1, "{config}");
    let config = config.replacen("recipients = [\n", &format!("recipients = [\n  \"{rec}\",\n"), 1);
    fs::write(p.join("coffer.toml"), config).unwrap();
    assert!(!p.join("backups").exists());
    coffer(p)
        .env_remove("COFFER_CREATE_SINK")
        .arg("backup")
        .assert()
        .success();
    assert!(p.join("backups/coffer-sink.json").is_file());
    let out = coffer(p)
        .env_remove("COFFER_CREATE_SINK")
        .args(["--json", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["sink"], "local");
    assert_eq!(list[0]["snapshots"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["snapshots"][0]["state"], "complete");
    assert_eq!(list[0]["snapshots"][0]["job"], "service");
}

#[test]
fn roundtrip_oneoff_backup_list_show_verify_restore() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    let b = backup_oneoff(p, &rec);
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["sinks"][0]["ok"], true);
    assert_eq!(b["sources"].as_array().unwrap().len(), 3);

    // The index is public and holds no secret nor path of the secret.
    let index = fs::read_to_string(p.join(format!("bk/{id}.json"))).unwrap();
    assert!(!index.contains(SECRET));
    let idx: Value = serde_json::from_str(&index).unwrap();
    assert_eq!(idx["id"], id.as_str());
    assert_eq!(idx["object"]["sha256"].as_str().unwrap().len(), 64);
    let obj = fs::read(p.join(format!("bk/{id}.coffer"))).unwrap();
    assert!(
        !String::from_utf8_lossy(&obj).contains(SECRET),
        "plaintext secret in object"
    );
    assert!(obj.starts_with(b"age-encryption.org/v1"));

    let out = coffer(p)
        .args(["--json", "list", "--sink", "bk"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["snapshots"][0]["id"], id.as_str());
    assert_eq!(list[0]["snapshots"][0]["state"], "complete");

    coffer(p)
        .args(["show", &id[..12], "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains(&id));
    coffer(p)
        .args(["show", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("all checked"))
        .stdout(predicate::str::contains(SECRET).not());
    coffer(p)
        .args(["verify", "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ok"));
    coffer(p)
        .args(["verify", "--all", "--deep", "--sink", "bk", "--identity"])
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("files match SHA256SUMS"));

    // Dry run lists key names, changes nothing.
    let out = coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--dry-run",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("APP_MONGO_URI") && !text.contains(SECRET), "{text}");
    assert!(!p.join("out").exists(), "dry run wrote something");

    coffer(p)
        .args(["restore", &id, "--sink", "bk", "--target", "out", "--identity"])
        .arg(&key)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(p.join("out/app.yaml")).unwrap(),
        "port: 8447\nname: issuer-directory\n"
    );
    assert_eq!(
        fs::read_to_string(p.join("out/seed.json")).unwrap(),
        "[{\"id\": 1}]\n"
    );
    assert_eq!(
        fs::metadata(p.join("out/seed.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(
        fs::read_to_string(p.join("out/nested/ünï code.txt")).unwrap(),
        "unicode name\n"
    );
    let env = fs::read_to_string(p.join("out/.env")).unwrap();
    assert!(env.contains(&format!("APP_MONGO_URI=mongodb://app:{SECRET}@db:27017/app")));
    assert!(
        !env.contains("PORT="),
        "only the selected keys are restored: {env}"
    );
    assert_eq!(
        fs::metadata(p.join("out/.env")).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn restore_to_original_paths_merges_env_and_replaces_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    backup_oneoff(p, &rec);
    // Damage the service.
    fs::write(p.join("svc/etc/app.yaml"), "broken\n").unwrap();
    fs::write(
        p.join("svc/.env"),
        "# edited\nPORT=9000\nAPP_MONGO_URI=wrong\nNEW=1\n",
    )
    .unwrap();
    // No config declares these one-off sources and the snapshot is
    // unsigned: the places it recorded are refused, named, nothing written…
    coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--identity"])
        .arg(&key)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("svc/etc/app.yaml"))
        .stderr(predicate::str::contains("--to-origin"));
    assert_eq!(
        fs::read_to_string(p.join("svc/etc/app.yaml")).unwrap(),
        "broken\n"
    );
    // …until the user accepts them.
    coffer(p)
        .args(["restore", "latest", "--sink", "bk", "--to-origin", "--identity"])
        .arg(&key)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(p.join("svc/etc/app.yaml")).unwrap(),
        "port: 8447\nname: issuer-directory\n"
    );
    let env = fs::read_to_string(p.join("svc/.env")).unwrap();
    assert!(
        env.starts_with("# edited\nPORT=9000\n"),
        "other lines kept: {env}"
    );
    assert!(env.contains(&format!("APP_MONGO_URI=mongodb://app:{SECRET}@db:27017/app")));
    assert!(env.contains("NEW=1\n") && env.contains("APP_MONGO_DB=app"));
}

#[test]
fn restore_only_one_source() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    backup_oneoff(p, &rec);
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--only",
            "env",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .success();
    assert_eq!(files_under(&p.join("out")), vec![".env".to_string()]);
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--only",
            "nope",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("its sources"));
}

#[test]
fn wrong_key_fails_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let (other, _) = keygen(p, "other.txt");
    backup_oneoff(p, &rec);
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&other)
        .assert()
        .code(5)
        .stderr(predicate::str::contains("none of the given identities"))
        // The key's fingerprint, to compare with `coffer show`'s recipients.
        .stderr(predicate::str::contains("they are the keys of recipients age:"));
    assert!(files_under(&p.join("out")).is_empty());
}

#[test]
fn corrupt_or_truncated_object_is_refused_before_writing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    backup_oneoff(p, &rec);
    let obj = only_object(&p.join("bk"), ".coffer");
    let good = fs::read(&obj).unwrap();

    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    fs::write(&obj, &bad).unwrap();
    coffer(p)
        .args(["verify", "--sink", "bk"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("SHA-256"));
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("does not match"));
    assert!(files_under(&p.join("out")).is_empty());

    fs::write(&obj, &good[..good.len() - 100]).unwrap();
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("truncated"));
    assert!(files_under(&p.join("out")).is_empty());
    // `list` reports the size mismatch without any key.
    coffer(p)
        .args(["list", "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains("size-mismatch"));

    fs::remove_file(&obj).unwrap();
    coffer(p)
        .args(["verify", "--sink", "bk"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("missing"));
}

#[test]
fn missing_index_or_unknown_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    backup_oneoff(p, &rec);
    coffer(p)
        .args([
            "restore",
            "20200101T000000Z-00000000",
            "--sink",
            "bk",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot"));
    fs::remove_file(only_object(&p.join("bk"), ".json")).unwrap();
    coffer(p)
        .args(["list", "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no snapshots"))
        .stdout(predicate::str::contains("incomplete"));
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("holds no snapshot"));
    assert!(!p.join("out").exists());
}

#[test]
fn fan_out_to_two_sinks_writes_identical_objects() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    coffer(p)
        .args(["backup", "--source", "file:svc", "--sink", "a", "--sink"])
        .arg(format!("file://{}", p.join("b").display()))
        .args(["--recipient", &rec])
        .assert()
        .success();
    let a = fs::read(only_object(&p.join("a"), ".coffer")).unwrap();
    let b = fs::read(only_object(&p.join("b"), ".coffer")).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        fs::read(only_object(&p.join("a"), ".json")).unwrap(),
        fs::read(only_object(&p.join("b"), ".json")).unwrap()
    );
}

#[test]
fn a_failed_sink_is_a_partial_failure() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    fs::write(p.join("not-a-dir"), "x").unwrap();
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "good",
            "--sink",
            "not-a-dir/sub",
        ])
        .args(["--recipient", &rec])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sinks"][0]["ok"], true);
    assert_eq!(v["sinks"][1]["ok"], false);
    only_object(&p.join("good"), ".json");

    // Every sink failing is an error with no snapshot.
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "not-a-dir/x",
            "--recipient",
            &rec,
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("every sink failed"));
}

#[test]
fn passphrase_mode() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    coffer(p)
        .env("COFFER_PASSPHRASE", "correct horse battery staple")
        .args([
            "backup",
            "--source",
            "file:svc/etc",
            "--sink",
            "bk",
            "--passphrase",
        ])
        .assert()
        .success();
    let (_, rec) = keygen(p, "key.txt");
    coffer(p)
        .env("COFFER_PASSPHRASE", "x")
        .args([
            "backup",
            "--source",
            "file:svc/etc",
            "--sink",
            "bk",
            "--passphrase",
            "--recipient",
            &rec,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("only recipient"));
    coffer(p)
        .env("COFFER_PASSPHRASE", "wrong")
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--passphrase",
            "--target",
            "out",
        ])
        .assert()
        .code(5);
    assert!(!p.join("out").exists());
    coffer(p)
        .env("COFFER_PASSPHRASE", "correct horse battery staple")
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--passphrase",
            "--target",
            "out",
        ])
        .assert()
        .success();
    assert!(p.join("out/app.yaml").exists());
}

#[test]
fn bad_config_and_inputs_give_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    fs::write(p.join("bad.toml"), "recipients = [\n[job.x]\n").unwrap();
    coffer(p)
        .args(["--config", "bad.toml", "backup"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.toml:"));

    fs::write(
        p.join("unknown.toml"),
        format!("recipients = [\"{rec}\"]\n[job.j]\nsources = [\"c\"]\nsinks = [\"s\"]\n\n[source.c]\nkind = \"file\"\npth = \"svc\"\n\n[sink.s]\nkind = \"local\"\npath = \"bk\"\n"),
    )
    .unwrap();
    coffer(p)
        .args(["--config", "unknown.toml", "backup"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown.toml:6"))
        .stderr(predicate::str::contains("pth"));

    fs::write(
        p.join("badjob.toml"),
        "[job.j]\nsources = [\"nope\"]\nsinks = []\n",
    )
    .unwrap();
    coffer(p)
        .args(["--config", "badjob.toml", "backup"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown source `nope`"));

    coffer(p)
        .args(["--config", "missing.toml", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.toml"));

    coffer(p)
        .args([
            "backup",
            "--source",
            "file:does/not/exist",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("does/not/exist"));
    coffer(p)
        .args(["backup", "--source", "file:svc", "--sink", "bk"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no recipient"));
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--recipient",
            "age1garbage",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a valid recipient"));
    coffer(p)
        .args([
            "backup",
            "--source",
            "env:svc/.env#NOPE_*",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("NOPE_*"));
    coffer(p)
        .args([
            "backup",
            "--source",
            "bogus:x",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown source kind"));
    coffer(p).args(["backup", "--bogus-flag"]).assert().code(2);
    // Nothing was left behind by the failed runs (but the sink that
    // --create-sink, set by the test helper, made).
    let left: Vec<String> = files_under(&p.join("bk"))
        .into_iter()
        .filter(|f| f != coffer_e2e::SINK_MARKER)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    #[cfg(unix)]
    if !is_root() {
        fs::create_dir(p.join("locked")).unwrap();
        fs::set_permissions(p.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        coffer(p)
            .args([
                "backup",
                "--source",
                "file:locked",
                "--sink",
                "bk",
                "--recipient",
                &rec,
            ])
            .assert()
            .failure();
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn backup_time_flag_sets_snapshot_time() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc/etc",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .args([
            "--time",
            "2025-01-31T23:59:00Z",
            "--name",
            "imported",
            "--tag",
            "runbook",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("20250131T235900Z-"));
    assert_eq!(v["job"], "imported");
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc/etc",
            "--sink",
            "bk",
            "--recipient",
            &rec,
            "--time",
            "yesterday",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("RFC 3339"));
}

#[test]
fn example_configs_run() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    copy_dir(&root.join("examples/quickstart"), &p.join("qs"));
    let _ = fs::remove_dir_all(p.join("qs/backups"));
    let qs = p.join("qs");
    coffer(&qs)
        .arg("backup")
        .assert()
        .success()
        .stdout(predicate::str::contains("issuer-directory"));
    coffer(&qs)
        .args(["verify", "--deep", "--identity", "demo-identity.txt"])
        .assert()
        .success();
    coffer(&qs)
        .args([
            "restore",
            "latest",
            "--identity",
            "demo-identity.txt",
            "--target",
            "restored",
            // The database needs a server (--mongo-uri): the quick-start
            // test restores it.
            "--only",
            "file",
            "--only",
            "env",
        ])
        .assert()
        .success();
    assert_eq!(
        fs::read(qs.join("restored/issuer-directory.yaml")).unwrap(),
        fs::read(qs.join("etc/issuer-directory.yaml")).unwrap()
    );
    // The init example parses too (checked in init_writes_an_example_that_parses).
}

#[test]
fn keygen_json_needs_an_output_file() {
    let d = tempfile::tempdir().unwrap();
    coffer(d.path())
        .args(["--json", "keygen"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-o FILE"));
}

#[test]
fn a_corrupt_newest_index_is_never_skipped_silently() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc/etc",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .args(["--time", "2026-01-01T00:00:00Z"])
        .assert()
        .success();
    let newest = backup_oneoff(p, &rec);
    let index = p.join(format!("bk/{}.json", newest["id"].as_str().unwrap()));
    let mut bytes = fs::read(&index).unwrap();
    bytes[10] = b'#';
    fs::write(&index, bytes).unwrap();
    coffer(p)
        .args(["verify", "--all", "--sink", "bk"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("unreadable index"));
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("newest snapshot's index"));
    assert!(!p.join("out").exists());
}

#[test]
fn sources_colliding_under_target_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("a")).unwrap();
    fs::create_dir_all(p.join("b")).unwrap();
    fs::write(p.join("a/config.yaml"), "a\n").unwrap();
    fs::write(p.join("b/config.yaml"), "b\n").unwrap();
    let (key, rec) = keygen(p, "key.txt");
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:a/config.yaml",
            "--source",
            "file:b/config.yaml",
        ])
        .args(["--sink", "bk", "--recipient", &rec])
        .assert()
        .success();
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("both restore to"));
    assert!(files_under(&p.join("out")).is_empty());
    // One at a time works.
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--target",
            "out",
            "--only",
            "config.yaml-2",
            "--identity",
        ])
        .arg(&key)
        .assert()
        .success();
    assert_eq!(fs::read_to_string(p.join("out/config.yaml")).unwrap(), "b\n");
}

#[test]
fn config_rejects_bad_source_names_and_passphrase_with_recipients() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    fs::write(
        p.join("c.toml"),
        "[job.j]\nsources = [\"a/b\"]\nsinks = [\"s\"]\n[source.\"a/b\"]\nkind = \"file\"\npath = \"svc\"\n[sink.s]\nkind = \"local\"\npath = \"bk\"\n",
    )
    .unwrap();
    coffer(p)
        .args(["--config", "c.toml", "backup"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid source name"));
    fs::write(
        p.join("d.toml"),
        "[job.j]\nsources = [\"c\"]\nsinks = [\"s\"]\nrecipients = [\"age1x\"]\npassphrase-file = \"p\"\n[source.c]\nkind = \"file\"\npath = \"svc\"\n[sink.s]\nkind = \"local\"\npath = \"bk\"\n",
    )
    .unwrap();
    coffer(p)
        .args(["--config", "d.toml", "backup"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "both `recipients` and `passphrase-file`",
        ));
}

#[test]
fn a_closed_stdout_ends_the_run_quietly_like_sigpipe() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
    fs::write(p.join("f"), "x").unwrap();
    for _ in 0..2 {
        backup_cmd(p, "file:f", "bk", &rec).arg("-q").assert().success();
    }
    // `coffer list | head -0`: nobody reads what it prints.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(coffer_e2e::coffer_bin())
        .current_dir(p)
        .args(["list", "--sink", "bk"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
