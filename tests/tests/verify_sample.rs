//! `coffer verify --sample`: a rotating subset per run, remembered on the
//! sink, so every snapshot is checked once per cycle; without a key.

use std::collections::BTreeSet;
use std::fs;

use coffer_e2e::{coffer, json_ok, keygen};
use serde_json::Value;

#[test]
fn sampled_runs_cover_every_snapshot_once_per_cycle() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/a.yaml"), "a: 1\n").unwrap();
    let (_, rec) = keygen(p, "key.txt");
    let ids: Vec<String> = (1..=5)
        .map(|day| {
            let out = coffer(p)
                .args([
                    "--json",
                    "backup",
                    "--source",
                    "file:svc",
                    "--sink",
                    "bk",
                    "--recipient",
                    &rec,
                ])
                .args(["--time", &format!("2026-01-0{day}T00:00:00Z")])
                .output()
                .unwrap();
            json_ok(&out)["id"].as_str().unwrap().to_string()
        })
        .collect();
    let sample = || {
        let out = coffer(p)
            .args(["--json", "verify", "--sink", "bk", "--sample", "40%"])
            .output()
            .unwrap();
        let v: Value = json_ok(&out);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["sample"]["cycle"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let runs = [sample(), sample(), sample()];
    let sizes: Vec<usize> = runs.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let covered: BTreeSet<String> = runs.iter().flatten().map(|(id, _)| id.clone()).collect();
    assert_eq!(covered, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert!(runs.iter().flatten().all(|(_, cycle)| *cycle == 1));
    // The next run starts cycle 2 with the oldest.
    let next = sample();
    assert_eq!(next, vec![(ids[0].clone(), 2), (ids[1].clone(), 2)]);

    // A corrupt snapshot in the sample fails the run (exit 3); the text
    // output says how far the cycle got.
    let obj = p.join(format!("bk/{}.coffer", ids[2]));
    let mut bytes = fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&obj, bytes).unwrap();
    let out = coffer(p)
        .args(["verify", "--sink", "bk", "--sample", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("FAILED") && said.contains("4 of 5"), "{said}");
    // Flags that choose the snapshots themselves conflict.
    let out = coffer(p)
        .args(["verify", "--all", "--sample", "10%", "--sink", "bk"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
