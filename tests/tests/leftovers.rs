//! Leftovers of killed runs: a restore killed with `kill -9` leaves staged
//! `.coffer-tmp-*` files (a merged `.env` among them) that the next restore
//! removes; a killed backup's temp object in the sink is removed by the
//! next backup at once (its writer is gone), not after hours.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::{backup_cmd, coffer, coffer_bin, keygen, noise};

fn temps(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".coffer-tmp-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A key `key.txt` and an uncompressed backup of `big` to sink `bk`;
/// returns the key file's path.
fn back_up_big(p: &Path) -> String {
    let (key, rec) = keygen(p, "key.txt");
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:big",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .args(["--compression", "none"])
        .assert()
        .success();
    key.to_str().unwrap().to_string()
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(coffer_bin())
        .env("COFFER_CREATE_SINK", "true")
        .args(args)
        .current_dir(dir)
        .env_remove("COFFER_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` with SIGKILL once `dir` holds at least `n` temp files;
/// returns them.
fn kill_when_temps(child: &mut Child, dir: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = temps(dir);
        if found.len() >= n {
            child.kill().unwrap();
            child.wait().unwrap();
            return found;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before staging {n} temp files");
        }
        assert!(Instant::now() < deadline, "no temp files appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_restore_removes_what_a_killed_restore_staged() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/.env"), "PORT=1\nAPP_SECRET=hunter2-value\n").unwrap();
    fs::create_dir_all(p.join("big")).unwrap();
    fs::write(p.join("big/blob.bin"), noise(160 << 20)).unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let key = key.to_str().unwrap();
    coffer(p)
        .args(["backup", "--source", "env:svc/.env#APP_*", "--source", "file:big"])
        .args(["--sink", "bk", "--recipient", &rec, "--compression", "none"])
        .assert()
        .success();
    fs::create_dir(p.join("out")).unwrap();
    let args = [
        "restore",
        "latest",
        "--sink",
        "bk",
        "--identity",
        key,
        "--target",
        "out",
    ];
    let mut child = spawn(p, &args);
    // The .env merge is staged first, then the big file.
    let left = kill_when_temps(&mut child, &p.join("out"), 2);
    let secret_left = left
        .iter()
        .any(|n| fs::read(p.join("out").join(n)).is_ok_and(|b| b.windows(7).any(|w| w == b"hunter2")));
    assert!(secret_left, "the staged .env is among the leftovers: {left:?}");

    let out = coffer(p).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("remove-leftover"), "{said}");
    assert_eq!(temps(&p.join("out")), Vec::<String>::new());
    assert_eq!(fs::read(p.join("out/blob.bin")).unwrap().len(), 160 << 20);
    assert_eq!(
        fs::read_to_string(p.join("out/.env")).unwrap(),
        "APP_SECRET=hunter2-value\n"
    );
}

#[test]
fn a_backup_removes_the_temp_object_of_a_killed_backup_at_once() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("big")).unwrap();
    fs::write(p.join("big/blob.bin"), noise(160 << 20)).unwrap();
    fs::create_dir_all(p.join("small")).unwrap();
    fs::write(p.join("small/a.txt"), "a").unwrap();
    let (_, rec) = keygen(p, "key.txt");
    // The sink exists before the killed run.
    backup_cmd(p, "file:small", "bk", &rec).assert().success();
    let args = [
        "backup",
        "--source",
        "file:big",
        "--sink",
        "bk",
        "--recipient",
        &rec,
        "--compression",
        "none",
    ];
    let mut child = spawn(p, &args);
    let left = kill_when_temps(&mut child, &p.join("bk"), 1);
    assert_eq!(temps(&p.join("bk")), left);
    backup_cmd(p, "file:small", "bk", &rec).assert().success();
    assert_eq!(temps(&p.join("bk")), Vec::<String>::new());
}

/// The temp files a killed restore left below the target's root (the tar
/// lists every directory, so each is known to the plan) are swept too.
#[test]
fn a_restore_sweeps_a_killed_restores_temps_in_every_directory_it_writes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("big/a/b")).unwrap();
    fs::write(p.join("big/a/b/blob.bin"), noise(160 << 20)).unwrap();
    fs::write(p.join("big/a/small.txt"), "small").unwrap();
    let key = back_up_big(p);
    let key = key.as_str();
    fs::create_dir(p.join("out")).unwrap();
    let args = [
        "restore",
        "latest",
        "--sink",
        "bk",
        "--identity",
        key,
        "--target",
        "out",
    ];
    let mut child = spawn(p, &args);
    let deep = p.join("out/a/b");
    let left = kill_when_temps(&mut child, &deep, 1);
    assert!(!left.is_empty());
    let out = coffer(p).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("remove-leftover"), "{said}");
    assert_eq!(
        temps(&deep),
        Vec::<String>::new(),
        "plaintext left below the root"
    );
    assert_eq!(temps(&p.join("out/a")), Vec::<String>::new());
    assert_eq!(fs::read(deep.join("blob.bin")).unwrap().len(), 160 << 20);
}

/// A restore into a directory that does not exist yet stages it whole in a
/// hidden `.coffer-tmp-*` directory beside it, renamed into place at
/// commit. Killed, it leaves that directory (plaintext): the next restore
/// there removes it, and leaves only the restored directory.
#[test]
fn a_killed_restore_into_a_new_directory_leaves_a_staged_root_the_next_one_removes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("big/sub")).unwrap();
    for i in 0..4 {
        fs::write(p.join(format!("big/sub/blob{i}.bin")), noise(40 << 20)).unwrap();
    }
    let key = back_up_big(p);
    let key = key.as_str();
    fs::create_dir(p.join("fresh")).unwrap();
    let args = [
        "restore",
        "latest",
        "--sink",
        "bk",
        "--identity",
        key,
        "--target",
        "fresh/out",
    ];
    let mut child = spawn(p, &args);
    let left = kill_when_temps(&mut child, &p.join("fresh"), 1);
    assert!(
        !p.join("fresh/out").exists(),
        "nothing is visible before the commit"
    );
    assert!(p.join("fresh").join(&left[0]).is_dir(), "{left:?}");

    let out = coffer(p).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("remove-leftover"), "{said}");
    let names: Vec<String> = fs::read_dir(p.join("fresh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out"], "the staged root of the killed restore is gone");
    assert_eq!(
        fs::read(p.join("fresh/out/sub/blob3.bin")).unwrap().len(),
        40 << 20
    );
}
