//! A backup killed with SIGKILL at any point leaves no snapshot that looks
//! complete and no visible partial object.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::{backup_cmd, coffer, coffer_bin, keygen};

#[test]
fn kill_9_mid_backup_leaves_nothing_complete() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    fs::create_dir(p.join("data")).unwrap();
    // Incompressible data so the run lasts a while even in release builds.
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..48 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(p.join(format!("data/blob{i}.bin")), &buf).unwrap();
    }
    let mut interrupted = 0;
    for delay_ms in [5u64, 20, 60, 150, 400] {
        let mut child = Command::new(coffer_bin())
            .env("COFFER_CREATE_SINK", "true")
            .current_dir(p)
            .args([
                "backup",
                "--source",
                "file:data",
                "--sink",
                "bk",
                "--recipient",
                &rec,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        let names: Vec<String> = fs::read_dir(p.join("bk"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let indexed = names
            .iter()
            .any(|n| n.ends_with(".json") && n != coffer_e2e::SINK_MARKER);
        // Killed before it made the sink: nothing there at all.
        let listed = if p.join("bk").exists() {
            let out = coffer(p)
                .args(["--json", "list", "--sink", "bk"])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v[0]["snapshots"].as_array().unwrap().len()
        } else {
            0
        };
        if indexed {
            // The kill came after the index was written: the run had
            // finished, and what `list` shows must be a whole, valid snapshot.
            eprintln!(
                "kill at {delay_ms} ms ({:?}) came after the backup finished",
                start.elapsed()
            );
            assert_eq!(listed, 1);
            coffer(p)
                .args(["verify", "--deep", "--sink", "bk", "--identity"])
                .arg(&key)
                .assert()
                .success();
        } else {
            interrupted += 1;
            // Killed mid-way: no index, so nothing is listed as a snapshot
            // (a stored object alone counts as an interrupted backup).
            assert_eq!(listed, 0, "after kill at {delay_ms} ms: {names:?}");
        }
        let _ = fs::remove_dir_all(p.join("bk"));
    }
    assert!(
        interrupted > 0,
        "no run was interrupted mid-way; the test proved nothing"
    );
    // And an uninterrupted run still succeeds afterwards.
    backup_cmd(p, "file:data", "bk", &rec).assert().success();
}
