//! End-to-end tests of removable media on real filesystems: each test
//! mounts its own tmpfs as the medium (tests run as root; without the
//! right to mount they skip, or fail when CI=true), and a guard unmounts it
//! even when the test panics.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::{Tmpfs, coffer, coffer_bin, files_under, keygen, require_tool};
use serde_json::Value;

/// A tiny service to back up.
fn service(dir: &Path) {
    fs::create_dir_all(dir.join("svc/data")).unwrap();
    fs::write(dir.join("svc/app.yaml"), "port: 8447\n").unwrap();
    fs::write(dir.join("svc/data/seed.json"), "[{\"id\": 1}]\n").unwrap();
}

fn ok(out: &std::process::Output) -> &std::process::Output {
    assert!(
        out.status.success(),
        "failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&ok(out).stdout).unwrap()
}

/// Backs up `svc` to the local sink `bk` with extra args; returns the id.
fn backup(dir: &Path, extra: &[&str]) -> String {
    let out = coffer(dir)
        .args(["--json", "backup", "--source", "file:svc", "--sink", "bk"])
        .args(extra)
        .output()
        .unwrap();
    json(&out)["id"].as_str().unwrap().to_string()
}

fn media_init(dir: &Path, m: &Tmpfs, label: &str) {
    ok(&coffer(dir)
        .args(["media", "init"])
        .arg(m.path())
        .args(["--label", label, "--set", "weekly"])
        .output()
        .unwrap());
}

/// Files on the medium, without the (empty) lock folder's content.
fn medium_files(m: &Tmpfs) -> Vec<String> {
    files_under(m.path())
}

/// Appends `mib` MiB of random bytes to `path`.
fn random_file(path: &Path, mib: usize) {
    let mut buf = vec![0u8; mib << 20];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    fs::write(path, buf).unwrap();
}

#[test]
fn an_unmounted_path_is_refused_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    service(d.path());
    let (_, rec) = keygen(d.path(), "key.txt");
    backup(d.path(), &["--recipient", &rec]);
    // The empty mount point of an unplugged disk: a plain directory.
    let plain = d.path().join("mnt-usb");
    fs::create_dir(&plain).unwrap();
    let out = coffer(d.path())
        .args(["export", "--from", "bk", "--to"])
        .arg(format!("media:{}?labels=OFFSITE-A", plain.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a mount point"), "{err}");
    assert!(err.contains("hint:") && err.contains("mount"), "{err}");
    assert!(files_under(&plain).is_empty(), "{:?}", files_under(&plain));
    // `media init` refuses it too.
    let out = coffer(d.path())
        .args(["media", "init"])
        .arg(&plain)
        .args(["--label", "OFFSITE-A"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(files_under(&plain).is_empty());
}

#[test]
fn a_medium_with_the_wrong_label_is_refused() {
    let Some(m) = Tmpfs::new("16m") else { return };
    let d = tempfile::tempdir().unwrap();
    service(d.path());
    let (_, rec) = keygen(d.path(), "key.txt");
    backup(d.path(), &["--recipient", &rec]);
    media_init(d.path(), &m, "OFFSITE-C");
    for query in ["?labels=OFFSITE-A,OFFSITE-B", "?set=monthly"] {
        let out = coffer(d.path())
            .args(["export", "--from", "bk", "--to", &m.url(query)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{query}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("label OFFSITE-C (set weekly), which this sink does not accept"),
            "{err}"
        );
    }
    // An uninitialized medium is refused as well.
    let Some(blank) = Tmpfs::new("16m") else { return };
    let out = coffer(d.path())
        .args(["export", "--from", "bk", "--to", &blank.url("")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("coffer media init"));
    assert_eq!(medium_files(&m), ["coffer-media.json"]);
    assert!(medium_files(&blank).is_empty());
}

#[test]
fn a_too_small_medium_is_refused_before_writing() {
    let Some(m) = Tmpfs::new("8m") else { return };
    let d = tempfile::tempdir().unwrap();
    service(d.path());
    random_file(&d.path().join("svc/data/blob.bin"), 12);
    let (_, rec) = keygen(d.path(), "key.txt");
    backup(d.path(), &["--recipient", &rec, "--compression", "none"]);
    media_init(d.path(), &m, "OFFSITE-A");
    let out = coffer(d.path())
        .args(["export", "--from", "bk", "--to", &m.url("?labels=OFFSITE-A")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("not enough space on the medium"), "{all}");
    assert!(all.contains("MiB needed") && all.contains("MiB free"), "{all}");
    // Nothing but the identity file: no object, no temp file, no kit.
    assert_eq!(medium_files(&m), ["coffer-media.json"]);
}

#[test]
fn a_backup_straight_to_a_filling_medium_is_refused_before_writing() {
    // 14 MiB medium, 3 MiB incompressible snapshots, margin 4 MiB + 1 %: the
    // largest snapshot already there is the estimate for the next one.
    let Some(m) = Tmpfs::new("14m") else { return };
    let d = tempfile::tempdir().unwrap();
    service(d.path());
    random_file(&d.path().join("svc/data/blob.bin"), 3);
    let (_, rec) = keygen(d.path(), "key.txt");
    media_init(d.path(), &m, "OFFSITE-A");
    let sink = m.url("?labels=OFFSITE-A");
    let run = || {
        coffer(d.path())
            .args([
                "backup",
                "--source",
                "file:svc",
                "--sink",
                &sink,
                "--recipient",
                &rec,
            ])
            .args(["--compression", "none"])
            .output()
            .unwrap()
    };
    let mut stored = 0;
    let refused = loop {
        let out = run();
        if !out.status.success() {
            break out;
        }
        stored += 1;
        assert!(stored < 5, "the medium never filled up");
    };
    assert!(stored >= 1, "the first backup should fit");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(all.contains("not enough space on the medium"), "{all}");
    assert!(all.contains("MiB needed"), "{all}");
    // The estimate is the size of a snapshot already there (≥ 3 MiB), not 0.
    let object: u64 = all
        .split(" for the object")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no object estimate in: {all}"));
    assert!(object >= 3 << 20, "estimate {object} bytes: {all}");
    // No temp file, no partial object: only the snapshots that fitted.
    let files = medium_files(&m);
    assert!(files.iter().all(|f| !f.contains(".coffer-tmp")), "{files:?}");
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".coffer")).count(),
        stored,
        "{files:?}"
    );
}

#[test]
fn export_then_import_round_trip_restores_and_sha256sum_checks_the_medium() {
    let Some(m) = Tmpfs::new("64m") else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (key, rec) = keygen(p, "key.txt");
    let out = ok(&coffer(p)
        .args(["--json", "keygen", "--signing", "-o", "sign.key"])
        .output()
        .unwrap())
    .clone();
    let signer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let signer = signer["signer"].as_str().unwrap().to_string();
    let first = backup(p, &["--recipient", &rec, "--signing-key", "sign.key"]);
    fs::write(p.join("svc/app.yaml"), "port: 9000\n").unwrap();
    let second = backup(p, &["--recipient", &rec, "--signing-key", "sign.key"]);
    media_init(p, &m, "OFFSITE-A");

    let v = json(
        &coffer(p)
            .args([
                "--json",
                "export",
                "--all",
                "--from",
                "bk",
                "--to",
                &m.url("?set=weekly"),
            ])
            .args(["--trusted-signer", &signer])
            .output()
            .unwrap(),
    );
    let statuses: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["copied", "copied"]);
    let files = medium_files(&m);
    for f in [
        "RESTORE.txt",
        "SHA256SUMS",
        "trusted-signers.txt",
        "custody.log",
        "coffer-media.json",
        &format!("{first}.coffer"),
        &format!("{second}.json"),
        &format!("{second}.sig"),
    ] {
        assert!(files.contains(&f.to_string()), "{f} missing: {files:?}");
    }
    let restore_txt = fs::read_to_string(m.path().join("RESTORE.txt")).unwrap();
    for needle in [
        "sha256sum -c SHA256SUMS",
        "age -d -i key.txt",
        "zstd -d",
        "tar x",
        "mongorestore",
        &second,
    ] {
        assert!(restore_txt.contains(needle), "RESTORE.txt lacks {needle}");
    }
    assert!(
        fs::read_to_string(m.path().join("trusted-signers.txt"))
            .unwrap()
            .contains(&signer)
    );

    // At the far side, with no coffer: every file on the medium checks out.
    if require_tool("sha256sum") {
        let out = Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(m.path())
            .output()
            .unwrap();
        ok(&out);
        let listed = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(listed, files.len() - 1, "every file but SHA256SUMS itself");
    }

    // Exporting again skips both; the custody log only grows.
    let log1 = fs::read_to_string(m.path().join("custody.log")).unwrap();
    let out = ok(&coffer(p)
        .args(["export", "--all", "--from", "bk", "--to", &m.url("")])
        .output()
        .unwrap())
    .clone();
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("skipped").count(), 2);
    let log2 = fs::read_to_string(m.path().join("custody.log")).unwrap();
    assert!(log2.starts_with(&log1) && log2.lines().count() == 2);

    // Import with the trusted signers the medium carries, then restore.
    let signers = m.path().join("trusted-signers.txt");
    let v = json(
        &coffer(p)
            .args([
                "--json",
                "import",
                "--from",
                &m.url("?labels=OFFSITE-A"),
                "--to",
                "offline",
            ])
            .arg("--trusted-signer")
            .arg(&signers)
            .output()
            .unwrap(),
    );
    assert!(
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "copied")
    );
    assert_eq!(v["custody_logged"], true);
    let log3 = fs::read_to_string(m.path().join("custody.log")).unwrap();
    let last: Value = serde_json::from_str(log3.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "import");
    assert!(last["who"].as_str().unwrap().contains('@'));
    assert_eq!(last["ids"].as_array().unwrap().len(), 2);
    if require_tool("sha256sum") {
        // The import updated the custody line of SHA256SUMS: still all OK.
        ok(&Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(m.path())
            .output()
            .unwrap());
    }
    // Import again: already present.
    let out = ok(&coffer(p)
        .args(["import", "--from", &m.url(""), "--to", "offline"])
        .output()
        .unwrap())
    .clone();
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 0, skipped 2"));

    ok(&coffer(p)
        .args(["restore", "latest", "--sink", "offline", "--target", "restored"])
        .arg("--identity")
        .arg(&key)
        .arg("--trusted-signer")
        .arg(&signers)
        .output()
        .unwrap());
    let restored = files_under(&p.join("restored"));
    let yaml = restored
        .iter()
        .find(|f| f.ends_with("app.yaml"))
        .expect("app.yaml restored");
    assert_eq!(
        fs::read_to_string(p.join("restored").join(yaml)).unwrap(),
        "port: 9000\n"
    );
}

#[test]
fn passphrase_bundles_cross_the_gap() {
    let Some(m) = Tmpfs::new("16m") else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let out = coffer(p)
        .env("COFFER_PASSPHRASE", "correct horse battery staple")
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--passphrase",
        ])
        .output()
        .unwrap();
    let id = json(&out)["id"].as_str().unwrap().to_string();
    media_init(p, &m, "OFFSITE-A");
    ok(&coffer(p)
        .args(["export", &id, "--from", "bk", "--to", &m.url("")])
        .output()
        .unwrap());
    assert!(
        fs::read_to_string(m.path().join(format!("{id}.json")))
            .unwrap()
            .contains("passphrase")
    );
    ok(&coffer(p)
        .args(["import", "--from", &m.url(""), "--to", "far"])
        .output()
        .unwrap());
    ok(&coffer(p)
        .env("COFFER_PASSPHRASE", "correct horse battery staple")
        .args(["restore", &id, "--sink", "far", "--passphrase", "--target", "out"])
        .output()
        .unwrap());
    assert!(
        files_under(&p.join("out"))
            .iter()
            .any(|f| f.ends_with("seed.json"))
    );
}

#[test]
fn a_bit_flipped_on_the_medium_is_refused_and_the_others_imported() {
    let Some(m) = Tmpfs::new("32m") else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let a = backup(p, &["--recipient", &rec]);
    let b = backup(p, &["--recipient", &rec]);
    let c = backup(p, &["--recipient", &rec]);
    media_init(p, &m, "OFFSITE-A");
    ok(&coffer(p)
        .args(["export", "--all", "--from", "bk", "--to", &m.url("")])
        .output()
        .unwrap());
    // One bit of b's ciphertext, and a truncation of c's.
    let obj = m.path().join(format!("{b}.coffer"));
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&obj, &bytes).unwrap();
    let obj_c = m.path().join(format!("{c}.coffer"));
    let len = fs::metadata(&obj_c).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&obj_c)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    if require_tool("sha256sum") {
        let out = Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(m.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "sha256sum -c notices the damage");
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{b}.coffer: FAILED")));
    }

    let out = coffer(p)
        .args(["import", "--from", &m.url(""), "--to", "far"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{b} REFUSED")) && stdout.contains("SHA-256"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{c} REFUSED")) && stdout.contains("truncated"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{a} imported")), "{stdout}");
    let far = files_under(&p.join("far"));
    assert!(far.contains(&format!("{a}.json")) && far.contains(&format!("{a}.coffer")));
    assert!(
        !far.iter().any(|f| f.starts_with(&b) || f.starts_with(&c)),
        "nothing of the refused snapshots: {far:?}"
    );
    let log = fs::read_to_string(m.path().join("custody.log")).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["refused"].as_array().unwrap().len(), 2);
    // The good one verifies on the target.
    ok(&coffer(p)
        .args(["verify", "--all", "--sink", "far"])
        .output()
        .unwrap());
}

#[test]
fn a_killed_export_leaves_no_complete_looking_snapshot() {
    let Some(m) = Tmpfs::new("300m") else { return };
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    random_file(&p.join("svc/data/blob.bin"), 100);
    let (_, rec) = keygen(p, "key.txt");
    let id = backup(p, &["--recipient", &rec, "--compression", "none"]);
    media_init(p, &m, "OFFSITE-A");

    let mut child = Command::new(coffer_bin())
        .env("COFFER_CREATE_SINK", "true")
        .current_dir(p)
        .args(["export", "--from", "bk", "--to", &m.url("")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the object is being written (a temp file with data).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed_mid_copy = false;
    while Instant::now() < deadline {
        let writing = fs::read_dir(m.path()).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".coffer-tmp-")
                && e.metadata().is_ok_and(|md| md.len() > 8 << 20)
        });
        if writing {
            killed_mid_copy = child.try_wait().unwrap().is_none();
            child.kill().unwrap();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert!(
        killed_mid_copy,
        "the export finished before it could be killed mid-copy"
    );

    let files = medium_files(&m);
    assert!(
        !files.contains(&format!("{id}.json")) && !files.contains(&format!("{id}.coffer")),
        "no index, no object under its name: {files:?}"
    );
    let v = json(
        &coffer(p)
            .args(["--json", "list", "--sink", &m.url("")])
            .output()
            .unwrap(),
    );
    assert!(v[0]["snapshots"].as_array().unwrap().is_empty(), "{v}");
    // Re-running completes it (the killed run's lock is stale by then, or
    // shared locks do not exclude each other).
    ok(&coffer(p)
        .args(["export", "--from", "bk", "--to", &m.url("")])
        .output()
        .unwrap());
    ok(&coffer(p)
        .args(["verify", &id, "--sink", &m.url("")])
        .output()
        .unwrap());
}

/// What standard tools extracted into `p/out` is the service as backed
/// up, its `app.yaml` saying `port: PORT`.
fn extracted_as_backed_up(p: &Path, port: u16) {
    assert_eq!(
        fs::read(p.join("svc/blob.bin")).unwrap(),
        fs::read(p.join("out/files/svc/blob.bin")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(p.join("out/files/svc/app.yaml")).unwrap(),
        format!("port: {port}\n")
    );
}

/// A 32 MiB medium and a service with a 2 MiB random file, and a key
/// (file, recipient); `None` (skipped, or failed under CI) where age,
/// zstd, tar or sha256sum or the right to mount is missing.
fn standard_tools_setup() -> Option<(Tmpfs, tempfile::TempDir, std::path::PathBuf, String)> {
    for tool in ["age", "zstd", "tar", "sha256sum"] {
        if !require_tool(tool) {
            return None;
        }
    }
    let m = Tmpfs::new("32m")?;
    let d = tempfile::tempdir().unwrap();
    service(d.path());
    random_file(&d.path().join("svc/blob.bin"), 2);
    let (key, rec) = keygen(d.path(), "key.txt");
    Some((m, d, key, rec))
}

/// Chunked snapshots cross the gap too: the medium carries every pack
/// they need, and RESTORE.txt's chunked section, run by `sh` as written
/// there, restores the newest one with standard tools alone.
#[test]
fn chunked_snapshots_cross_the_gap_and_the_kit_restores_them_without_coffer() {
    let Some((m, d, key, rec)) = standard_tools_setup() else {
        return;
    };
    let p = d.path();
    backup(p, &["--recipient", &rec, "--format", "chunked"]);
    fs::write(p.join("svc/app.yaml"), "port: 9100\n").unwrap();
    let second = backup(p, &["--recipient", &rec, "--format", "chunked"]);
    media_init(p, &m, "OFFSITE-C");
    ok(&coffer(p)
        .args(["export", "--all", "--from", "bk", "--to", &m.url("")])
        .output()
        .unwrap());
    let files = medium_files(&m);
    assert!(files.iter().any(|f| f.starts_with("data/")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("keys/dedup-")), "{files:?}");
    // The kit's chunked section, as a person would paste it.
    let kit = fs::read_to_string(m.path().join("RESTORE.txt")).unwrap();
    let start = kit.find("     KEY=key.txt").expect("a chunked section");
    let script: String = kit[start..]
        .lines()
        .take_while(|l| l.starts_with("     ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(script.contains(&second), "names the newest snapshot:\n{script}");
    fs::copy(&key, p.join("out-key.txt")).unwrap();
    fs::create_dir(p.join("out")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            script
                .replace("KEY=key.txt", &format!("KEY={}", key.display()))
                .replace("SINK=/mnt/usb", &format!("SINK={}", m.path().display())),
        )
        .current_dir(p.join("out"))
        .output()
        .unwrap();
    ok(&out);
    extracted_as_backed_up(p, 9100);
    // And with coffer, from the medium.
    ok(&coffer(p)
        .args(["restore", &second, "--sink", &m.url(""), "--identity"])
        .arg(&key)
        .args(["--target", "via-coffer"])
        .output()
        .unwrap());
}

/// A signing key pair made by `coffer keygen --signing`: (file, public key).
fn signing_key(dir: &Path, name: &str) -> String {
    let v = json(
        &coffer(dir)
            .args(["--json", "keygen", "--signing", "-o", name])
            .output()
            .unwrap(),
    );
    v["signer"].as_str().unwrap().to_string()
}

/// `export --format bundle` writes a chunked snapshot as one age file on
/// the medium: `age -d | zstd -d | tar x` and `sha256sum -c` open it, its
/// index is signed again by the exporting key (the original signer's
/// signature covered the chunk list, not this object), and coffer
/// verifies and restores it. Missing keys are refused before anything is
/// written; an index-less object a killed export left is replaced.
#[test]
fn a_chunked_snapshot_exported_as_a_bundle_opens_with_the_standard_tools() {
    let Some((m, d, key, rec)) = standard_tools_setup() else {
        return;
    };
    let p = d.path();
    let (_, other) = keygen(p, "other.txt");
    let origin = signing_key(p, "origin.key");
    let exporter = signing_key(p, "export.key");
    let signed = [
        "--recipient",
        &rec,
        "--format",
        "chunked",
        "--signing-key",
        "origin.key",
    ];
    backup(p, &signed);
    fs::write(p.join("svc/app.yaml"), "port: 9200\n").unwrap();
    let second = backup(p, &signed);
    media_init(p, &m, "OFFSITE-D");
    // `export ID --format bundle`, trusting the original signer when
    // `trusted`.
    let export_as = |id: &str, trusted: bool, extra: &[&str]| {
        let trust = if trusted {
            vec!["--trusted-signer", origin.as_str()]
        } else {
            vec![]
        };
        coffer(p)
            .args([
                "export",
                id,
                "--from",
                "bk",
                "--to",
                &m.url(""),
                "--format",
                "bundle",
            ])
            .args(trust)
            .args(extra)
            .output()
            .unwrap()
    };
    let key_arg = key.to_str().unwrap();
    let keys = [
        "--identity",
        key_arg,
        "--recipient",
        &rec,
        "--signing-key",
        "export.key",
    ];
    // Refused before anything is written: no identity; a recipient of the
    // snapshot not given; a signed snapshot and no key to sign the bundle.
    let before = medium_files(&m);
    for (extra, needle) in [
        (
            vec!["--recipient", rec.as_str(), "--signing-key", "export.key"],
            "no identity was given",
        ),
        (
            vec![
                "--identity",
                key_arg,
                "--recipient",
                other.as_str(),
                "--signing-key",
                "export.key",
            ],
            "are neither in the config nor given with --recipient",
        ),
        (
            vec!["--identity", key_arg, "--recipient", rec.as_str()],
            "no signing key was given",
        ),
    ] {
        let out = export_as(&second, true, &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{extra:?}");
        assert!(
            err.contains(needle) || String::from_utf8_lossy(&out.stdout).contains(needle),
            "{extra:?}: {err}"
        );
        assert_eq!(medium_files(&m), before, "{extra:?} wrote to the medium");
    }
    // A signature nobody checked is never vouched for; keys belong to
    // --format bundle only.
    for (extra, needle) in [
        (vec!["--format", "bundle"], "no trusted signer names"),
        (vec!["--format", "chunked"], "for --format bundle only"),
    ] {
        let out = coffer(p)
            .args(["export", &second, "--from", "bk", "--to", &m.url("")])
            .args(extra)
            .args(keys)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{needle}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle)
                || String::from_utf8_lossy(&out.stdout).contains(needle),
            "{needle}"
        );
        assert_eq!(medium_files(&m), before);
    }
    // What a killed export leaves: an object without its index, a
    // signature of a run before.
    fs::write(m.path().join(format!("{second}.coffer")), b"half a bundle").unwrap();
    fs::write(m.path().join(format!("{second}.sig")), b"{}").unwrap();
    ok(&export_as(&second, true, &keys));
    let files = medium_files(&m);
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("data/") || f.ends_with(".chunks")),
        "{files:?}"
    );
    let index: Value =
        serde_json::from_slice(&fs::read(m.path().join(format!("{second}.json"))).unwrap()).unwrap();
    assert!(index.get("chunks").is_none(), "{index}");
    assert_eq!(index["object"]["key"], format!("{second}.coffer"));
    let object = m.path().join(format!("{second}.coffer"));
    let sum = Command::new("sha256sum").arg(&object).output().unwrap();
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(index["object"]["sha256"].as_str().unwrap()));
    // The kit lists the exporting key beside the trusted one.
    let signers = fs::read_to_string(m.path().join("trusted-signers.txt")).unwrap();
    assert!(
        signers.contains(&origin) && signers.contains(&exporter),
        "{signers}"
    );
    let kit = fs::read_to_string(m.path().join("RESTORE.txt")).unwrap();
    assert!(
        kit.contains(&format!("/mnt/usb/{second}.coffer | zstd -d | tar x")),
        "{kit}"
    );

    // Standard tools alone.
    fs::create_dir(p.join("out")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i {} {} | zstd -d | tar x && sha256sum -c SHA256SUMS",
            key.display(),
            object.display()
        ))
        .current_dir(p.join("out"))
        .output()
        .unwrap();
    ok(&out);
    extracted_as_backed_up(p, 9200);

    // coffer trusts the bundle by the exporting key, not the original's.
    let verify = |signer: &str| {
        coffer(p)
            .args([
                "verify",
                &second,
                "--sink",
                &m.url(""),
                "--trusted-signer",
                signer,
            ])
            .output()
            .unwrap()
    };
    assert_eq!(verify(&origin).status.code(), Some(3));
    ok(&verify(&exporter));
    ok(&coffer(p)
        .args(["restore", &second, "--sink", &m.url(""), "--identity"])
        .arg(&key)
        .args(["--trusted-signer", &exporter, "--target", "via-coffer"])
        .output()
        .unwrap());
    assert_eq!(
        fs::read(p.join("svc/blob.bin")).unwrap(),
        fs::read(p.join("via-coffer/blob.bin")).unwrap()
    );
    // An unsigned snapshot's bundle stays unsigned, whatever key is given.
    fs::write(p.join("svc/app.yaml"), "port: 9300\n").unwrap();
    let unsigned = backup(p, &["--recipient", &rec, "--format", "chunked"]);
    ok(&export_as(&unsigned, false, &keys));
    assert!(m.path().join(format!("{unsigned}.coffer")).exists());
    assert!(!m.path().join(format!("{unsigned}.sig")).exists());
    // Exporting again skips it.
    let again = ok(&export_as(&second, true, &keys)).clone();
    assert!(String::from_utf8_lossy(&again.stdout).contains("skipped"));
}
