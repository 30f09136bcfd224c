//! End-to-end tests of `coffer copy` between local sinks: no key needed,
//! identical snapshots skipped, a corrupt source object refused with
//! nothing left on the target, trusted signers enforced.

use std::fs;
use std::path::Path;

use coffer_e2e::{coffer, files_under, keygen};
use serde_json::Value;

fn backup(dir: &Path, rec: &str, extra: &[&str]) -> String {
    let out = coffer(dir)
        .args([
            "--json",
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "a",
            "--recipient",
            rec,
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn copy_json(dir: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let out = coffer(dir).args(["--json", "copy"]).args(args).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v)
}

#[test]
fn copy_all_then_skip_then_refuse_a_corrupt_object() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir(p.join("svc")).unwrap();
    fs::write(p.join("svc/app.yaml"), "x: 1\n").unwrap();
    let (_, rec) = keygen(p, "key.txt");
    let one = backup(p, &rec, &["--keep-forever"]);
    let two = backup(p, &rec, &[]);

    let (code, v) = copy_json(p, &["--all", "--from", "a", "--to", "b"]);
    assert_eq!(code, Some(0), "{v}");
    let st: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, ["copied", "copied"]);
    for id in [&one, &two] {
        for suffix in ["coffer", "json"] {
            assert_eq!(
                fs::read(p.join(format!("a/{id}.{suffix}"))).unwrap(),
                fs::read(p.join(format!("b/{id}.{suffix}"))).unwrap()
            );
        }
    }
    assert!(p.join(format!("b/{one}.pin")).exists(), "the pin travels with it");
    assert!(
        !files_under(&p.join("b")).iter().any(|f| f.starts_with("locks/")),
        "lock released"
    );

    let (code, v) = copy_json(p, &["--latest", "--from", "a", "--to", "b"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["snapshots"][0]["status"], "skipped");

    // Same size, one bit flipped at the source: refused, exit 3, nothing on c.
    let obj = p.join(format!("a/{two}.coffer"));
    let mut bytes = fs::read(&obj).unwrap();
    let n = bytes.len() - 100;
    bytes[n] ^= 1;
    fs::write(&obj, bytes).unwrap();
    let (code, v) = copy_json(p, &[&two, "--from", "a", "--to", "c"]);
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(v["snapshots"][0]["error"]["kind"], "integrity");
    assert!(
        files_under(&p.join("c"))
            .iter()
            .all(|f| f.starts_with("locks/") || !f.contains(&two)),
        "{:?}",
        files_under(&p.join("c"))
    );
    assert!(!p.join(format!("c/{two}.coffer")).exists() && !p.join(format!("c/{two}.json")).exists());
}

#[test]
fn copy_refuses_unsigned_snapshots_when_signers_are_trusted() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir(p.join("svc")).unwrap();
    fs::write(p.join("svc/app.yaml"), "x: 1\n").unwrap();
    let (_, rec) = keygen(p, "key.txt");
    let out = coffer(p)
        .args(["--json", "keygen", "--signing", "-o", "s.key"])
        .output()
        .unwrap();
    let signer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let signer = signer["signer"].as_str().unwrap().to_string();
    let unsigned = backup(p, &rec, &[]);
    let signed = backup(p, &rec, &["--signing-key", "s.key"]);
    let (code, v) = copy_json(
        p,
        &["--all", "--from", "a", "--to", "b", "--trusted-signer", &signer],
    );
    assert_eq!(code, Some(3), "{v}");
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps[0]["id"], unsigned.as_str());
    assert!(
        snaps[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unsigned")
    );
    assert_eq!(snaps[1]["id"], signed.as_str());
    assert_eq!(snaps[1]["signature"], "trusted");
    assert!(p.join(format!("b/{signed}.sig")).exists());
    assert!(!p.join(format!("b/{unsigned}.coffer")).exists());
}
