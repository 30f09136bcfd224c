//! Sink locks between coffer processes on the local sink: a held prune
//! lock stops backups and other prunes, concurrent prunes never both
//! delete, a prune runs beside a backup without touching its snapshot,
//! and `coffer unlock` breaks stale (and, forced, live) locks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use coffer_e2e::{coffer, coffer_bin, keygen};
use serde_json::{Value, json};

fn setup() -> (tempfile::TempDir, PathBuf, String) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a.txt"), b"alpha\n").unwrap();
    let (identity, recipient) = keygen(t.path(), "id.txt");
    (t, identity, recipient)
}

fn backup_at(dir: &Path, recipient: &str, time: &str) -> std::process::Output {
    coffer(dir)
        .args([
            "backup",
            "--source",
            "file:data",
            "--sink",
            "sink",
            "--recipient",
            recipient,
            "--time",
            time,
        ])
        .output()
        .unwrap()
}

fn indexes(sink: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sink)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != coffer_e2e::SINK_MARKER)
        .collect();
    v.sort();
    v
}

/// A lock object as another host's process would have written it.
fn write_lock(
    sink: &Path,
    name: &str,
    holder: &str,
    host: &str,
    pid: u32,
    refreshed: &str,
    stale_mtime: bool,
) -> PathBuf {
    let dir = sink.join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let kind = if name.starts_with("exclusive") {
        "exclusive"
    } else {
        "shared"
    };
    let lock = json!({
        "kind": kind, "holder": holder, "host": host, "pid": pid,
        "created": refreshed, "refreshed": refreshed, "id": "00000000deadbeef",
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
    if stale_mtime {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800); // 2020-01-01
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    path
}

fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // RFC 3339 without a date library: let coffer's own format do it.
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_held_prune_lock_stops_backups_and_other_prunes() {
    let (t, _id, recipient) = setup();
    let dir = t.path();
    for time in [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ] {
        assert!(backup_at(dir, &recipient, time).status.success());
    }
    let sink = dir.join("sink");
    let before = indexes(&sink);
    let lock = write_lock(
        &sink,
        "exclusive-000000000001.json",
        "prune",
        "ghost-host",
        4242,
        &now(),
        false,
    );

    let out = backup_at(dir, &recipient, "2026-01-04T00:00:00Z");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sink is locked by prune on host ghost-host pid 4242 since"),
        "{err}"
    );
    assert!(err.contains("coffer unlock"), "the hint names the way out: {err}");
    assert_eq!(indexes(&sink), before, "the refused backup wrote nothing");

    let out = coffer(dir)
        .args(["prune", "--sink", "sink", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by prune on host ghost-host pid 4242"));
    assert_eq!(indexes(&sink), before, "the second prune deleted nothing");
    // Only the foreign lock is left: refused acquirers clean up after themselves.
    assert_eq!(std::fs::read_dir(sink.join("locks")).unwrap().count(), 1);

    std::fs::remove_file(lock).unwrap();
    let out = coffer(dir)
        .args(["prune", "--sink", "sink", "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(indexes(&sink).len(), 1);
    assert_eq!(
        std::fs::read_dir(sink.join("locks")).unwrap().count(),
        0,
        "prune released its lock"
    );
}

#[test]
fn two_concurrent_prunes_never_both_delete() {
    let (t, _id, recipient) = setup();
    let dir = t.path();
    for day in 1..=6 {
        assert!(
            backup_at(dir, &recipient, &format!("2026-01-0{day}T00:00:00Z"))
                .status
                .success()
        );
    }
    let spawn = || {
        std::process::Command::new(coffer_bin())
            .env("COFFER_CREATE_SINK", "true")
            .current_dir(dir)
            .args(["--json", "prune", "--sink", "sink", "--keep-last", "1"])
            .env_remove("COFFER_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let mut deleted = 0;
    let mut ran = 0;
    for o in &outs {
        if o.status.success() {
            ran += 1;
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            deleted += v[0]["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["deleted"] == true)
                .count();
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("sink is locked by prune"),
                "the only failure allowed is the lock: {err}"
            );
        }
    }
    assert!(ran >= 1, "at least one prune ran");
    assert_eq!(deleted, 5, "each snapshot was deleted exactly once, by one prune");
    assert_eq!(indexes(&dir.join("sink")).len(), 1);
}

#[test]
fn a_prune_beside_a_running_backup_never_deletes_its_snapshot() {
    let (t, identity, recipient) = setup();
    let dir = t.path();
    for time in ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"] {
        assert!(backup_at(dir, &recipient, time).status.success());
    }
    // Enough incompressible data that the backup runs for a while.
    let big = dir.join("data/big.bin");
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut buf = vec![0u8; 192 << 20];
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&big, &buf).unwrap();
    drop(buf);

    let sink = dir.join("sink");
    let backup = std::process::Command::new(coffer_bin())
        .env("COFFER_CREATE_SINK", "true")
        .current_dir(dir)
        .args([
            "--json",
            "backup",
            "--source",
            "file:data",
            "--sink",
            "sink",
            "--recipient",
            &recipient,
        ])
        .args(["--compression", "none"])
        .env("COFFER_LOCK_REFRESH_SECS", "1")
        .env_remove("COFFER_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the backup's shared lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    let shared = loop {
        let found = std::fs::read_dir(sink.join("locks")).ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("shared-"))
        });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "the backup never took its shared lock");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lock: Value = serde_json::from_slice(&std::fs::read(&shared).unwrap()).unwrap();
    assert_eq!(lock["holder"], "backup");
    assert_eq!(lock["pid"], backup.id());
    // The lock file is written before the backup checks that no prune
    // holds the sink (it yields to one that does): wait until it holds the
    // lock, which its upload in progress (a `.coffer-tmp-*` file outside
    // `locks/`) shows, so the prunes below run beside a backup that holds it.
    while !has_upload_in_progress(&sink) {
        assert!(Instant::now() < deadline, "the backup never started its upload");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Prune runs meanwhile (shared locks do not block it), keeping only
    // the newest *indexed* snapshot; the object being written has none.
    let mut prunes = 0;
    while shared.exists() && prunes < 20 {
        let out = coffer(dir)
            .args(["prune", "--sink", "sink", "--keep-last", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        prunes += 1;
    }
    assert!(prunes >= 1);
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!shared.exists(), "the backup released its lock");
    let out = coffer(dir)
        .args(["verify", &id, "--sink", "sink"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the new snapshot is intact: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = identity;
}

/// Whether a put into the local sink at `root` is in progress: a
/// `.coffer-tmp-*` file anywhere outside `locks/`.
fn has_upload_in_progress(root: &Path) -> bool {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && name != "locks" {
                dirs.push(e.path());
            } else if name.starts_with(".coffer-tmp-") {
                return true;
            }
        }
    }
    false
}

#[test]
fn unlock_breaks_stale_locks_with_a_warning_and_live_ones_only_when_forced() {
    let (t, _id, recipient) = setup();
    let dir = t.path();
    let sink = dir.join("sink");
    let stale = write_lock(
        &sink,
        "exclusive-000000000003.json",
        "prune",
        "ghost-host",
        999,
        "2020-01-01T00:00:00Z",
        true,
    );

    // Acquirers ignore a stale lock, with a warning.
    let out = backup_at(dir, &recipient, "2026-01-01T00:00:00Z");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ignoring a stale lock held by prune on host ghost-host pid 999"),
        "{err}"
    );

    let out = coffer(dir).args(["unlock", "--sink", "sink"]).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: sink sink: removed the stale lock held by prune on host ghost-host pid 999"),
        "{err}"
    );
    assert!(!stale.exists());

    let live = write_lock(
        &sink,
        "shared-0123456789abcdef.json",
        "backup",
        "busy-host",
        77,
        &now(),
        false,
    );
    let out = coffer(dir).args(["unlock", "--sink", "sink"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("kept the live lock held by backup on host busy-host pid 77")
    );
    assert!(live.exists());
    let out = coffer(dir)
        .args(["--json", "unlock", "--sink", "sink", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("removed the LIVE lock held by backup on host busy-host pid 77")
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["removed"][0]["lock"]["holder"], "backup");
    assert!(!live.exists());
}

#[test]
fn the_catalog_ignores_locks() {
    let (t, _id, recipient) = setup();
    let dir = t.path();
    assert!(
        backup_at(dir, &recipient, "2026-01-01T00:00:00Z")
            .status
            .success()
    );
    write_lock(
        &dir.join("sink"),
        "shared-00000000000000aa.json",
        "backup",
        "h",
        1,
        &now(),
        false,
    );
    let out = coffer(dir)
        .args(["--json", "list", "--sink", "sink"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["snapshots"].as_array().unwrap().len(), 1);
    assert!(v[0]["incomplete"].as_array().unwrap().is_empty());
    assert!(v[0]["unreadable"].as_array().unwrap().is_empty());
}

/// A lock as a process of this host, boot and PID namespace writes it.
fn write_local_lock(sink: &Path, name: &str, holder: &str, pid: u32) -> PathBuf {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let now = jiff_now();
    let dir = sink.join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let kind = if name.starts_with("exclusive") {
        "exclusive"
    } else {
        "shared"
    };
    let lock = json!({
        "kind": kind, "holder": holder, "host": host.trim(), "pid": pid,
        "created": now, "refreshed": now, "id": "00000000feedbeef",
        "scope": format!("{}/{}", boot.trim(), ns.display()),
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
    path
}

/// Now as RFC 3339 (UTC), from `date`.
fn jiff_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_killed_prune_on_this_host_blocks_nothing_and_plain_unlock_removes_its_lock() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_, rec) = keygen(dir, "key.txt");
    std::fs::create_dir_all(dir.join("svc")).unwrap();
    std::fs::write(dir.join("svc/a.yaml"), "a: 1\n").unwrap();
    let backup = || {
        coffer(dir)
            .args([
                "backup",
                "--source",
                "file:svc",
                "--sink",
                "sink",
                "--recipient",
                &rec,
            ])
            .output()
            .unwrap()
    };
    assert!(backup().status.success());
    // The lock a prune killed with SIGKILL a moment ago left behind: fresh,
    // of this host, its PID gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let lock = write_local_lock(&dir.join("sink"), "exclusive-000000000001.json", "prune", dead);
    let out = backup();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stale lock"));
    // A live one of this host (this test's PID) still blocks.
    let live = write_local_lock(
        &dir.join("sink"),
        "exclusive-000000000002.json",
        "prune",
        std::process::id(),
    );
    assert_eq!(backup().status.code(), Some(1));
    std::fs::remove_file(&live).unwrap();
    // Plain unlock (no --force) removes the dead one.
    let out = coffer(dir).args(["unlock", "--sink", "sink"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!lock.exists());
}

/// A sink where no lock can be written (here its `locks` folder is a
/// file) is left out of the run and reported failed: nothing is written
/// there unlocked, where a prune or a chunk sweep would not see the run.
#[test]
fn a_sink_that_cannot_be_locked_is_left_out_never_written_unlocked() {
    let (t, _identity, recipient) = setup();
    let p = t.path();
    for sink in ["ok", "blocked"] {
        let out = coffer(p).args(["sink", "init", sink]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(p.join("blocked/locks"), b"not a folder").unwrap();
    let run = |sinks: &[&str]| {
        let mut cmd = coffer(p);
        cmd.args(["backup", "--source", "file:data", "--recipient", &recipient]);
        for s in sinks {
            cmd.args(["--sink", s]);
        }
        let out = cmd.output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), said)
    };
    let written = |sink: &str| -> Vec<String> {
        std::fs::read_dir(p.join(sink))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".coffer") || (n.ends_with(".json") && n != coffer_e2e::SINK_MARKER))
            .collect()
    };
    let (code, said) = run(&["ok", "blocked"]);
    assert_ne!(code, Some(0), "a required sink failed:\n{said}");
    assert!(said.contains("cannot take its lock"), "{said}");
    assert_eq!(indexes(&p.join("ok")).len(), 1, "{said}");
    assert_eq!(written("blocked"), Vec::<String>::new(), "{said}");
    // Every sink unlockable: the run fails and writes nothing.
    let (code, said) = run(&["blocked"]);
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("every sink failed") && said.contains("cannot take its lock"),
        "{said}"
    );
    assert_eq!(written("blocked"), Vec::<String>::new(), "{said}");
}
