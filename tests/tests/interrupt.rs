//! A backup killed with SIGKILL at any point leaves no snapshot that looks
//! complete and no visible partial object.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::{coffer, coffer_bin, keygen};

#[test]
fn kill_9_mid_backup_leaves_nothing_complete() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec) = keygen(p, "key.txt");
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
    for delay_ms in [30u64, 150, 400] {
        let mut child = Command::new(coffer_bin())
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
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        let names: Vec<String> = fs::read_dir(p.join("bk"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let visible: Vec<_> = names.iter().filter(|n| !n.starts_with(".coffer-tmp")).collect();
        if finished {
            eprintln!(
                "backup finished within {:?}; nothing to interrupt",
                start.elapsed()
            );
            continue;
        }
        // A killed run may have stored its object but never its index; the
        // object alone is never listed as a snapshot.
        assert!(
            visible.iter().all(|n| !n.ends_with(".json")),
            "an index appeared for a killed backup: {visible:?}"
        );
        let out = coffer(p)
            .args(["--json", "list", "--sink", "bk"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v[0]["snapshots"].as_array().unwrap().len(),
            0,
            "after kill at {delay_ms} ms"
        );
        // Clean for the next round.
        let _ = fs::remove_dir_all(p.join("bk"));
    }
    // And an uninterrupted run still succeeds afterwards.
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:data",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .assert()
        .success();
}
