//! End-to-end tests of retention: `coffer prune` (dry run, JSON, real
//! deletes), pins, per-sink policies, `backup --prune` and
//! `--keep-forever`, on histories made with `backup --time`.

use std::fs;
use std::path::Path;

use coffer_e2e::{coffer, json_ok, keygen, prune_decisions};
use predicates::prelude::*;
use serde_json::Value;

/// A tiny service to back up.
fn service(dir: &Path) {
    fs::create_dir_all(dir.join("svc")).unwrap();
    fs::write(dir.join("svc/app.yaml"), "port: 8447\n").unwrap();
}

/// Backs up `svc` as job `job` to each of `sinks` at `time`; returns the id.
fn backup_at(dir: &Path, rec: &str, job: &str, sinks: &[&str], time: &str) -> String {
    let mut c = coffer(dir);
    c.args([
        "--json",
        "backup",
        "--source",
        "file:svc",
        "--recipient",
        rec,
        "--name",
        job,
        "--time",
        time,
    ]);
    for s in sinks {
        c.args(["--sink", s]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Top-level object names in a local sink, sorted (no lock folder, no temp files).
fn objects(sink: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(sink)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != coffer_e2e::SINK_MARKER)
        .collect();
    v.sort();
    v
}

const HISTORY: [&str; 6] = [
    "2026-01-31T10:00:00Z",
    "2026-02-27T09:00:00Z",
    "2026-02-28T08:00:00Z",
    "2026-02-28T20:00:00Z",
    "2026-03-01T10:00:00Z",
    "2026-03-02T10:00:00Z",
];

#[test]
fn dry_run_json_then_prune_deletes_index_and_object() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let ids: Vec<String> = HISTORY
        .iter()
        .map(|t| backup_at(p, &rec, "svc", &["bk"], t))
        .collect();
    let before = objects(&p.join("bk"));
    assert_eq!(before.len(), 12);

    // The same policy for the dry runs and the real prune.
    const PRUNE: [&str; 7] = [
        "prune",
        "--sink",
        "bk",
        "--keep-daily",
        "2",
        "--keep-monthly",
        "3",
    ];
    let out = coffer(p)
        .arg("--json")
        .args(PRUNE)
        .arg("--dry-run")
        .output()
        .unwrap();
    let v = json_ok(&out);
    assert_eq!(v.as_array().unwrap().len(), 1, "one object per sink");
    let s = &v[0];
    assert_eq!(s["dry_run"], true);
    let got = prune_decisions(s);
    let want: Vec<(String, bool, Vec<String>)> = vec![
        (
            ids[5].clone(),
            true,
            vec![
                "daily 1/2 (2026-03-02)".into(),
                "monthly 1/3 (2026-03)".into(),
                "newest".into(),
            ],
        ),
        (ids[4].clone(), true, vec!["daily 2/2 (2026-03-01)".into()]),
        (ids[3].clone(), true, vec!["monthly 2/3 (2026-02)".into()]),
        (ids[2].clone(), false, vec![]),
        (ids[1].clone(), false, vec![]),
        (ids[0].clone(), true, vec!["monthly 3/3 (2026-01)".into()]),
    ];
    assert_eq!(got, want);
    for snap in s["snapshots"].as_array().unwrap() {
        assert_eq!(snap["job"], "svc");
        assert!(snap["time"].as_str().unwrap().starts_with("2026-"));
    }
    assert_eq!(objects(&p.join("bk")), before, "a dry run deletes nothing");

    // Human output says what it would do.
    coffer(p)
        .args(PRUNE)
        .arg("--dry-run")
        .assert()
        .success()
        .stdout(predicate::str::contains("daily 1/2 (2026-03-02)"))
        .stdout(predicate::str::contains(format!("delete  {}", ids[2])))
        .stdout(predicate::str::contains("dry run"));

    // The real prune removes both the index and the object of exactly those two.
    let prune = || json_ok(&coffer(p).arg("--json").args(PRUNE).output().unwrap());
    let v = prune();
    let deleted: Vec<&str> = v[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["deleted"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [ids[2].as_str(), ids[1].as_str()]);
    let after = objects(&p.join("bk"));
    for (i, id) in ids.iter().enumerate() {
        let present = [format!("{id}.json"), format!("{id}.coffer")].map(|k| after.contains(&k));
        if i == 1 || i == 2 {
            assert_eq!(present, [false, false], "{id} should be gone: {after:?}");
        } else {
            assert_eq!(present, [true, true], "{id} should stay: {after:?}");
        }
    }
    // The kept snapshots still verify, and a second prune deletes nothing.
    coffer(p)
        .args(["verify", "--sink", "bk", "--all"])
        .assert()
        .success();
    let v = prune();
    assert!(prune_decisions(&v[0]).iter().all(|(_, keep, _)| *keep));
    assert_eq!(objects(&p.join("bk")).len(), 8);
}

#[test]
fn pinned_snapshots_survive_until_unpinned() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let ids: Vec<String> = HISTORY[..3]
        .iter()
        .map(|t| backup_at(p, &rec, "svc", &["bk"], t))
        .collect();
    coffer(p)
        .args(["pin", &ids[0][..20], "--sink", "bk", "--reason", "audit 2026"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("pinned {}", ids[0])));
    let marker: Value =
        serde_json::from_slice(&fs::read(p.join(format!("bk/{}.pin", ids[0]))).unwrap()).unwrap();
    assert_eq!(marker["reason"], "audit 2026");
    assert!(marker["pinned_at"].is_string() && marker["host"].is_string());

    // `list` shows it, and the pin is not mistaken for a snapshot.
    let v = json_ok(
        &coffer(p)
            .args(["--json", "list", "--sink", "bk"])
            .output()
            .unwrap(),
    );
    let snaps = v[0]["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    assert_eq!(v[0]["incomplete"].as_array().unwrap().len(), 0);
    let pinned: Vec<bool> = snaps.iter().map(|s| s["pinned"].as_bool().unwrap()).collect();
    assert_eq!(pinned, [true, false, false]);
    coffer(p)
        .args(["list", "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains("complete,pinned"));

    let v = json_ok(
        &coffer(p)
            .args(["--json", "prune", "--sink", "bk", "--keep-last", "1"])
            .output()
            .unwrap(),
    );
    let got = prune_decisions(&v[0]);
    assert_eq!(
        got[0],
        (ids[2].clone(), true, vec!["last 1/1".into(), "newest".into()])
    );
    assert_eq!(got[1], (ids[1].clone(), false, vec![]));
    assert_eq!(got[2], (ids[0].clone(), true, vec!["pinned".into()]));
    let left = objects(&p.join("bk"));
    assert!(left.contains(&format!("{}.coffer", ids[0])) && left.contains(&format!("{}.json", ids[0])));
    assert!(!left.iter().any(|k| k.starts_with(&ids[1])), "{left:?}");

    coffer(p)
        .args(["unpin", &ids[0], "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains("unpinned"));
    coffer(p)
        .args(["unpin", &ids[0], "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains("was not pinned"));
    coffer(p)
        .args(["prune", "--sink", "bk", "--keep-last", "1"])
        .assert()
        .success();
    let left = objects(&p.join("bk"));
    assert_eq!(left, [format!("{}.coffer", ids[2]), format!("{}.json", ids[2])]);
}

#[test]
fn empty_policy_deletes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    for t in &HISTORY[..3] {
        backup_at(p, &rec, "svc", &["bk"], t);
    }
    let before = objects(&p.join("bk"));
    // No config and no flags; then a zero count, which is no rule either.
    for extra in [&[][..], &["--keep-daily", "0"][..]] {
        let v = json_ok(
            &coffer(p)
                .args(["--json", "prune", "--sink", "bk"])
                .args(extra)
                .output()
                .unwrap(),
        );
        assert_eq!(v[0]["policies"][0]["empty"], true);
        for (_, keep, reasons) in prune_decisions(&v[0]) {
            assert!(keep);
            assert_eq!(reasons, ["no policy"]);
        }
    }
    coffer(p)
        .args(["prune", "--sink", "bk"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "no retention policy: nothing is deleted",
        ));
    assert_eq!(objects(&p.join("bk")), before);
}

fn write_config(p: &Path, rec: &str, job_retention: &str, sink_b_retention: &str) {
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{rec}\"]\n\n[job.svc]\nsources = [\"app\"]\nsinks = [\"a\", \"b\"]\n{job_retention}\n\n\
             [source.app]\nkind = \"file\"\npath = \"svc\"\n\n\
             [sink.a]\nkind = \"local\"\npath = \"sink-a\"\n\n\
             [sink.b]\nkind = \"local\"\npath = \"sink-b\"\n{sink_b_retention}\n"
        ),
    )
    .unwrap();
}

#[test]
fn backup_prune_applies_job_policy_and_sink_override() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    write_config(
        p,
        &rec,
        "retention = { keep-last = 2 }",
        "retention = { keep-last = 1 }   # the removable media",
    );
    let mut ids = Vec::new();
    for t in &HISTORY[..3] {
        let out = coffer(p)
            .args(["--json", "backup", "--prune", "--time", t])
            .output()
            .unwrap();
        let v = json_ok(&out);
        assert_eq!(v["prune"].as_array().unwrap().len(), 2, "pruned both sinks: {v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let names = |dir: &str| objects(&p.join(dir));
    assert_eq!(
        names("sink-a"),
        [
            format!("{}.coffer", ids[1]),
            format!("{}.json", ids[1]),
            format!("{}.coffer", ids[2]),
            format!("{}.json", ids[2])
        ]
    );
    assert_eq!(
        names("sink-b"),
        [format!("{}.coffer", ids[2]), format!("{}.json", ids[2])]
    );

    // `prune` reads the same policies; flags replace them; --job selects.
    let v = json_ok(
        &coffer(p)
            .args(["--json", "prune", "--dry-run", "--job", "svc"])
            .output()
            .unwrap(),
    );
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["policies"][0]["from"], "[job.svc]");
    assert_eq!(v[1]["policies"][0]["from"], "[sink.b]");
    let v = json_ok(
        &coffer(p)
            .args(["--json", "prune", "--dry-run", "--sink", "a", "--keep-last", "1"])
            .output()
            .unwrap(),
    );
    assert_eq!(v[0]["policies"][0]["from"], "flags");
    assert_eq!(prune_decisions(&v[0]).iter().filter(|d| d.1).count(), 1);

    // A pin made by --keep-forever survives the prune of the next backup.
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--keep-forever",
            "--prune",
            "--time",
            HISTORY[3],
        ])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let forever = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["pinned_on"], serde_json::json!(["a", "b"]));
    backup_at(p, &rec, "svc", &["b"], HISTORY[4]);
    coffer(p).args(["prune", "--sink", "b"]).assert().success();
    let b = names("sink-b");
    assert!(
        b.contains(&format!("{forever}.pin")) && b.contains(&format!("{forever}.coffer")),
        "{b:?}"
    );
    assert_eq!(b.len(), 5, "pinned (3 objects) + newest (2): {b:?}");
}

#[test]
fn backup_prune_without_policy_is_refused_before_backing_up() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--recipient",
            &rec,
            "--prune",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no retention policy"))
        .stderr(predicate::str::contains("hint"));
    assert!(!p.join("bk").exists() || objects(&p.join("bk")).is_empty());
}

#[test]
fn bad_retention_input_gives_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    backup_at(p, &rec, "svc", &["bk"], HISTORY[0]);
    coffer(p)
        .args(["prune", "--sink", "bk", "--keep-within", "3x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown unit `x`"))
        .stderr(predicate::str::contains("e.g. 30d"));
    coffer(p)
        .args(["prune", "--sink", "bk", "--keep-daily", "-1"])
        .assert()
        .code(2);
    coffer(p)
        .args([
            "prune",
            "--sink",
            "bk",
            "--keep-last",
            "1",
            "--timezone",
            "Mars/Olympus",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown time zone `Mars/Olympus`"));

    write_config(p, &rec, "retention = { keep-dayly = 30 }", "");
    coffer(p)
        .args(["prune", "--dry-run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("coffer.toml:"))
        .stderr(predicate::str::contains("keep-dayly"));
    write_config(p, &rec, "[job.svc.retention]\nkeep-within = \"30\"", "");
    coffer(p)
        .args(["prune", "--dry-run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no unit"));
    write_config(p, &rec, "", "retention = { keep-last = \"two\" }");
    coffer(p)
        .args(["prune", "--dry-run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("[sink.b] retention"))
        .stderr(predicate::str::contains("coffer.toml:"));
    // A valid table form parses, and the sink plugin never sees `retention`.
    write_config(
        p,
        &rec,
        "[job.svc.retention]\nkeep-daily = 30\nkeep-monthly = 12\ntimezone = \"Europe/Berlin\"",
        "retention = { keep-monthly = 12 }",
    );
    // Both sinks exist (a prune of a sink never made fails with exit 10).
    backup_at(p, &rec, "svc", &["a", "b"], HISTORY[1]);
    coffer(p)
        .args(["prune", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "keep-daily 30, keep-monthly 12, timezone Europe/Berlin",
        ));
}

#[test]
fn init_example_keeps_30_daily_and_12_monthly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    coffer(p).arg("init").assert().success();
    backup_at(p, &rec, "service", &["local"], HISTORY[0]);
    let v = json_ok(&coffer(p).args(["--json", "prune", "--dry-run"]).output().unwrap());
    assert_eq!(v[0]["sink"], "local");
    assert_eq!(v[0]["policies"][0]["from"], "[job.service]");
    assert_eq!(
        v[0]["policies"][0]["policy"],
        serde_json::json!({ "keep-daily": 30, "keep-monthly": 12 })
    );
}
