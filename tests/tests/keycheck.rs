//! `coffer keycheck`: the key-escrow drill — each identity against the
//! newest snapshot of each job, without restoring.

use std::fs;

use coffer_e2e::{coffer, json_ok, keygen};
use serde_json::Value;

#[test]
fn each_identity_is_proved_against_each_jobs_newest_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/a.yaml"), "a: 1\n".repeat(50_000)).unwrap();
    let (a, rec_a) = keygen(p, "a.txt");
    let (b, rec_b) = keygen(p, "b.txt");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let backup = |job: &str, recs: &[&str]| {
        let mut c = coffer(p);
        c.args([
            "--json", "backup", "--source", "file:svc", "--sink", "bk", "--name", job,
        ]);
        for r in recs {
            c.args(["--recipient", r]);
        }
        json_ok(&c.output().unwrap())["id"].as_str().unwrap().to_string()
    };
    // An old snapshot of `web` that `b` opens does not count: only the newest.
    backup("web", &[&rec_b]);
    let web = backup("web", &[&rec_a]);
    let db = backup("db", &[&rec_a, &rec_b]);

    let out = coffer(p)
        .args(["keycheck", "--sink", "bk", "-i", a])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches(" opens").count(), 2, "{said}");

    let out = coffer(p)
        .args(["--json", "keycheck", "--sink", "bk", "-i", a, "-i", b])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], false);
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4, "{v}");
    let ok = |snap: &str, key: &str| {
        checks
            .iter()
            .find(|c| c["snapshot"] == snap && c["identity"] == key)
            .unwrap()["ok"]
            .as_bool()
            .unwrap()
    };
    assert!(ok(&web, a) && !ok(&web, b) && ok(&db, a) && ok(&db, b), "{v}");
    assert!(!said.contains("AGE-SECRET-KEY"));

    // A damaged first chunk is an integrity failure (exit 3), not a lost key.
    let obj = p.join(format!("bk/{db}.coffer"));
    let mut bytes = fs::read(&obj).unwrap();
    let at = bytes.len().min(4_000) - 10;
    bytes[at] ^= 0xff;
    fs::write(&obj, bytes).unwrap();
    let out = coffer(p)
        .args(["keycheck", "--sink", "bk", "-i", a])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A chunked snapshot is checked on its first chunk (an age file of its
/// own): the right key opens it, another does not.
#[test]
fn chunked_snapshots_are_checked_on_their_first_chunk() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/a.yaml"), "a: 1\n".repeat(50_000)).unwrap();
    let (a, rec_a) = keygen(p, "a.txt");
    let (b, _) = keygen(p, "b.txt");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    json_ok(
        &coffer(p)
            .args([
                "--json", "backup", "--format", "chunked", "--source", "file:svc", "--sink", "bk",
            ])
            .args(["--recipient", &rec_a])
            .output()
            .unwrap(),
    );
    let out = coffer(p)
        .args(["keycheck", "--sink", "bk", "-i", a])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = coffer(p)
        .args(["keycheck", "--sink", "bk", "-i", b])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
