//! End-to-end tests of "a backup that verifies must restore" and "never lose
//! the last good copy": symlinks pointing anywhere, restores of several
//! sources that collide, odd file names, a corrupt newest snapshot under
//! prune, corrupt indexes, and `verify --all --deep` without every key.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

use coffer_e2e::{coffer, files_under, json_ok, keygen, require_tool};
use serde_json::Value;

/// A one-off backup of `sources` to `bk`; returns its id.
fn backup(dir: &Path, rec: &str, sources: &[&str], time: Option<&str>) -> String {
    let mut c = coffer(dir);
    c.args(["--json", "backup", "--sink", "bk", "--recipient", rec]);
    for s in sources {
        c.args(["--source", s]);
    }
    if let Some(t) = time {
        c.args(["--time", t]);
    }
    json_ok(&c.output().unwrap())["id"].as_str().unwrap().to_string()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    coffer(dir).args(args).output().unwrap()
}

/// `coffer restore ID --sink bk --identity KEY --target TARGET`.
fn restore_to(dir: &Path, id: &str, key: &str, target: &str) -> Output {
    run(
        dir,
        &[
            "restore",
            id,
            "--sink",
            "bk",
            "--identity",
            key,
            "--target",
            target,
        ],
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn symlinks_pointing_outside_the_tree_back_up_verify_and_restore() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("app")).unwrap();
    fs::write(p.join("app/data.txt"), "d\n").unwrap();
    symlink("/var/log", p.join("app/log")).unwrap();
    symlink("../common/x", p.join("app/shared")).unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let key = key.to_str().unwrap();
    let id = backup(p, &rec, &["file:app"], None);
    let out = run(p, &["verify", &id, "--sink", "bk", "--deep", "--identity", key]);
    assert!(out.status.success(), "{}", text(&out));

    // Under --target, and at the original path.
    let out = restore_to(p, &id, key, "out");
    assert!(out.status.success(), "{}", text(&out));
    fs::remove_dir_all(p.join("app")).unwrap();
    let out = run(
        p,
        &["restore", &id, "--sink", "bk", "--to-origin", "--identity", key],
    );
    assert!(out.status.success(), "{}", text(&out));
    for root in ["out", "app"] {
        let root = p.join(root);
        assert_eq!(fs::read_link(root.join("log")).unwrap(), Path::new("/var/log"));
        assert_eq!(
            fs::read_link(root.join("shared")).unwrap(),
            Path::new("../common/x")
        );
        assert_eq!(fs::read_to_string(root.join("data.txt")).unwrap(), "d\n");
    }
}

#[test]
fn a_restore_of_sources_that_collide_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (key, rec) = keygen(p, "key.txt");
    let key = key.to_str().unwrap();
    // `a` holds a symlink `log`, `b` a directory `log/`.
    fs::create_dir_all(p.join("a")).unwrap();
    fs::write(p.join("a/x.txt"), "x").unwrap();
    symlink("/var/log", p.join("a/log")).unwrap();
    fs::create_dir_all(p.join("b/log")).unwrap();
    fs::write(p.join("b/log/f"), "f").unwrap();
    // `c` holds a directory `.env/`, and a `.env` file is a source too.
    fs::create_dir_all(p.join("c/.env")).unwrap();
    fs::write(p.join("c/.env/inner"), "i").unwrap();
    fs::write(p.join("c/keep.txt"), "k").unwrap();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/.env"), "APP_KEY=v\n").unwrap();
    for (sources, target) in [
        (["file:a", "file:b"], "out1"),
        (["file:b", "file:a"], "out2"),
        (["file:c", "env:svc/.env#APP_*"], "out3"),
        (["env:svc/.env#APP_*", "file:c"], "out4"),
    ] {
        fs::remove_dir_all(p.join("bk")).ok();
        let id = backup(p, &rec, &sources, None);
        fs::create_dir(p.join(target)).unwrap();
        for dry_run in [true, false] {
            let mut args = vec![
                "restore",
                &id,
                "--sink",
                "bk",
                "--identity",
                key,
                "--target",
                target,
            ];
            if dry_run {
                args.push("--dry-run");
            }
            let out = run(p, &args);
            assert_eq!(out.status.code(), Some(2), "{sources:?}: {}", text(&out));
            let msg = text(&out);
            assert!(msg.contains("nothing was changed"), "{msg}");
            assert!(msg.contains("log") || msg.contains(".env"), "{msg}");
        }
        // Not one file of the first source was committed.
        assert!(
            fs::read_dir(p.join(target)).unwrap().next().is_none(),
            "{sources:?}: {:?}",
            files_under(&p.join(target))
        );
    }
}

#[test]
fn names_with_line_breaks_and_escape_codes_are_stored_checked_and_restored() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let names = [
        "new\nline",
        "carriage\rreturn",
        "back\\slash",
        "red\x1b[31mtext",
        "plain",
    ];
    fs::create_dir_all(p.join("app/dir\nwith break")).unwrap();
    fs::write(p.join("app/dir\nwith break/inner"), "inner").unwrap();
    for (i, n) in names.iter().enumerate() {
        fs::write(p.join("app").join(n), format!("file {i}\n")).unwrap();
    }
    let (key, rec) = keygen(p, "key.txt");
    let key = key.to_str().unwrap();
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--source",
            "file:app",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .output()
        .unwrap();
    let v = json_ok(&out);
    let id = v["id"].as_str().unwrap().to_string();
    let summary = v.to_string();
    assert!(summary.contains("6 files"), "{summary}");
    assert!(!summary.contains("skipped"), "{summary}");

    let out = restore_to(p, &id, key, "out");
    assert!(out.status.success(), "{}", text(&out));
    // Printed escaped: no raw escape code or line break of a name.
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains('\x1b') && !stdout.contains('\r'), "{stdout:?}");
    assert!(stdout.contains("red\\u{1b}[31mtext"), "{stdout}");
    assert!(stdout.contains("new\\nline"), "{stdout}");
    for n in names {
        assert_eq!(
            fs::read(p.join("out").join(n)).unwrap(),
            fs::read(p.join("app").join(n)).unwrap(),
            "{n:?}"
        );
    }
    assert_eq!(fs::read(p.join("out/dir\nwith break/inner")).unwrap(), b"inner");

    // Standard tools check every name, as sha256sum writes them.
    for tool in ["age", "zstd", "tar", "sha256sum"] {
        if !require_tool(tool) {
            return;
        }
    }
    fs::create_dir(p.join("x")).unwrap();
    let script = format!(
        "age -d -i {key} bk/{id}.coffer | zstd -d | tar -x -C x && cd x && sha256sum -c --strict SHA256SUMS"
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let checked = String::from_utf8_lossy(&out.stdout);
    assert_eq!(checked.matches(": OK").count(), 6, "{checked}");
}

/// Flips one byte in the middle of a file, keeping its size.
fn flip_middle_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[test]
fn prune_never_deletes_the_last_good_snapshot_behind_a_corrupt_newest() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/app.yaml"), "port: 8447\n").unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let ids: Vec<String> = [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]
    .iter()
    .map(|t| backup(p, &rec, &["file:svc"], Some(t)))
    .collect();
    flip_middle_byte(&p.join(format!("bk/{}.coffer", ids[2])));

    let out = run(
        p,
        &["--json", "prune", "--sink", "bk", "--keep-last", "1", "--dry-run"],
    );
    let v: Value = json_ok(&out);
    let floors = &v[0]["floors"][0];
    assert_eq!(floors["verified"], ids[1].as_str(), "{v}");
    assert_eq!(floors["corrupt"][0], ids[2].as_str(), "{v}");

    let out = run(p, &["prune", "--sink", "bk", "--keep-last", "1"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("floor: {} verified", ids[1])), "{said}");
    assert!(said.contains("corrupt"), "{said}");
    assert!(said.contains("newest verified"), "{said}");
    assert!(said.contains("no rule keeps it"), "{said}");
    assert!(p.join(format!("bk/{}.json", ids[1])).exists());
    assert!(!p.join(format!("bk/{}.json", ids[0])).exists());
    let out = run(
        p,
        &[
            "restore",
            &ids[1],
            "--sink",
            "bk",
            "--identity",
            key.to_str().unwrap(),
            "--target",
            "out",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(p.join("out/app.yaml")).unwrap(),
        "port: 8447\n"
    );

    // Nothing verifies: nothing is deleted.
    flip_middle_byte(&p.join(format!("bk/{}.coffer", ids[1])));
    let out = run(p, &["--json", "prune", "--sink", "bk", "--keep-last", "1"]);
    let v: Value = json_ok(&out);
    assert!(v[0]["floors"][0]["verified"].is_null(), "{v}");
    assert!(
        v[0]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["keep"] == true),
        "{v}"
    );
    assert!(p.join(format!("bk/{}.json", ids[1])).exists());
}

#[test]
fn a_corrupt_index_is_an_integrity_failure_not_a_missing_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/app.yaml"), "port: 8447\n").unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let key = key.to_str().unwrap();
    let id = backup(p, &rec, &["file:svc"], None);
    let index = p.join(format!("bk/{id}.json"));
    let edited = fs::read_to_string(&index).unwrap().replacen('{', "{ oops", 1);
    fs::write(&index, edited).unwrap();
    for args in [
        vec!["verify", &id, "--sink", "bk"],
        vec!["show", &id, "--sink", "bk"],
        vec![
            "restore",
            &id,
            "--sink",
            "bk",
            "--identity",
            key,
            "--target",
            "out",
        ],
        vec![
            "restore",
            "latest",
            "--sink",
            "bk",
            "--identity",
            key,
            "--target",
            "out",
        ],
    ] {
        let out = run(p, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        let said = text(&out);
        assert!(said.contains("corrupt") && said.contains(&id), "{said}");
        assert!(!said.contains("no snapshot"), "{said}");
    }
    assert!(!p.join("out").exists());
    let out = run(p, &["--json", "list", "--sink", "bk"]);
    let v = json_ok(&out);
    assert!(v[0]["incomplete"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v[0]["unreadable"][0]["key"], format!("{id}.json"));
    let said = text(&run(p, &["list", "--sink", "bk"]));
    assert!(!said.contains("interrupted"), "{said}");
    assert!(said.contains("corrupt"), "{said}");
}

#[test]
fn verify_all_deep_reports_every_snapshot_even_those_no_key_opens() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/app.yaml"), "port: 8447\n").unwrap();
    let (key_a, rec_a) = keygen(p, "a.txt");
    let (_, rec_b) = keygen(p, "b.txt");
    let first = backup(p, &rec_b, &["file:svc"], Some("2026-01-01T00:00:00Z"));
    let second = backup(p, &rec_a, &["file:svc"], Some("2026-01-02T00:00:00Z"));
    let key_a = key_a.to_str().unwrap();
    let args = [
        "--json",
        "verify",
        "--all",
        "--sink",
        "bk",
        "--deep",
        "--identity",
        key_a,
    ];
    let out = run(p, &args);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v.as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    let by_id = |id: &str| results.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id(&first)["error"]["kind"], "decryption", "{v}");
    assert_eq!(by_id(&second)["ok"], true, "{v}");

    // An integrity failure is worse than a missing key: exit 3.
    let third = backup(p, &rec_a, &["file:svc"], Some("2026-01-03T00:00:00Z"));
    flip_middle_byte(&p.join(format!("bk/{third}.coffer")));
    let out = run(p, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
}

#[test]
fn a_stopped_services_volume_comes_back_faithfully() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let vol = p.join("volume");
    fs::create_dir_all(vol.join("data/empty")).unwrap();
    fs::create_dir_all(vol.join("conf")).unwrap();
    fs::write(vol.join("conf/app.yaml"), "a: 1\n").unwrap();
    fs::set_permissions(vol.join("conf/app.yaml"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(vol.join("conf"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(vol.join("data/db.wt"), "pages").unwrap();
    fs::hard_link(vol.join("data/db.wt"), vol.join("data/db-link.wt")).unwrap();
    symlink("db.wt", vol.join("data/current")).unwrap();
    // A sparse file: 8 MiB with one written block in the middle.
    let sparse = fs::File::create(vol.join("data/sparse.bin")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 4 << 20).unwrap();
    drop(sparse);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(vol.join("conf/app.yaml"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(vol.join("data"), Some(999), Some(999)).unwrap();
        lchown(vol.join("data/current"), Some(1111), Some(2222)).unwrap();
    }
    let (key, rec) = keygen(p, "key.txt");
    let id = backup(p, &rec, &["file:volume"], None);
    let out = restore_to(p, &id, key.to_str().unwrap(), "out");
    assert!(out.status.success(), "{}", text(&out));
    let out_dir = p.join("out");
    let meta = |root: &Path, rel: &str| fs::symlink_metadata(root.join(rel)).unwrap();
    for rel in [
        "conf",
        "conf/app.yaml",
        "data",
        "data/empty",
        "data/current",
        "data/sparse.bin",
    ] {
        let (a, b) = (meta(&vol, rel), meta(&out_dir, rel));
        assert_eq!(a.mode() & 0o7777, b.mode() & 0o7777, "{rel}");
        if root {
            assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{rel}");
        }
    }
    assert!(meta(&out_dir, "data/empty").is_dir());
    assert_eq!(
        fs::read_link(out_dir.join("data/current")).unwrap(),
        Path::new("db.wt")
    );
    // Sparse files come back with the same content (dense); hard links as
    // copies (README: *Sources*).
    assert_eq!(
        fs::read(out_dir.join("data/sparse.bin")).unwrap(),
        fs::read(vol.join("data/sparse.bin")).unwrap()
    );
    assert_eq!(fs::read(out_dir.join("data/db-link.wt")).unwrap(), b"pages");
    assert_eq!(meta(&out_dir, "data/db-link.wt").nlink(), 1);
}

/// A restore from a local sink hashes the object while it decrypts it into
/// staging. An object swapped for a forged one of the same size that
/// decrypts fine and is consistent inside (its file, SHA256SUMS and
/// manifest rewritten alike: anyone with the public recipient can make
/// one) but does not match the index's SHA-256 is refused after staging
/// and before anything is committed: exit 3, nothing written, no temp
/// file left.
#[test]
fn a_forged_object_that_decrypts_but_does_not_match_its_index_leaves_nothing() {
    if !(require_tool("age") && require_tool("python3")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("app/sub")).unwrap();
    fs::write(p.join("app/conf.yaml"), "level: 1\n").unwrap();
    fs::write(p.join("app/sub/big.bin"), coffer_e2e::noise(4 << 20)).unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let key = key.to_str().unwrap();
    let out = coffer(p)
        .args([
            "--json",
            "backup",
            "--sink",
            "bk",
            "--recipient",
            &rec,
            "--source",
            "file:app",
        ])
        .args(["--compression", "none"])
        .output()
        .unwrap();
    let id = json_ok(&out)["id"].as_str().unwrap().to_string();
    let object = p.join("bk").join(format!("{id}.coffer"));
    let size = fs::metadata(&object).unwrap().len();
    let script = r#"
import hashlib, subprocess, sys
obj, key, rec = sys.argv[1:4]
plain = subprocess.run(["age", "-d", "-i", key, obj], check=True, capture_output=True).stdout
old, new = b"level: 1\n", b"level: 9\n"
assert plain.count(old) == 1
plain = plain.replace(old, new)
plain = plain.replace(hashlib.sha256(old).hexdigest().encode(), hashlib.sha256(new).hexdigest().encode())
enc = subprocess.run(["age", "-r", rec], input=plain, check=True, capture_output=True).stdout
open(obj, "wb").write(enc)
"#;
    let forged = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&object)
        .args([key, &rec])
        .output()
        .unwrap();
    assert!(
        forged.status.success(),
        "{}",
        String::from_utf8_lossy(&forged.stderr)
    );
    // age's CLI writes a header of its own length: the size may differ too,
    // which the same check after staging finds.
    let _ = size;

    let out = restore_to(p, &id, key, "out");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("object"), "{}", text(&out));
    assert_eq!(
        files_under(&p.join("out")),
        Vec::<String>::new(),
        "nothing may be committed"
    );
    // Staged content of the forged bundle is gone too.
    let left: Vec<String> = files_under(p)
        .into_iter()
        .filter(|n| n.contains(".coffer-tmp-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    // The same over the original paths: the live file is untouched.
    let out = run(
        p,
        &["restore", &id, "--sink", "bk", "--to-origin", "--identity", key],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(fs::read_to_string(p.join("app/conf.yaml")).unwrap(), "level: 1\n");
}
