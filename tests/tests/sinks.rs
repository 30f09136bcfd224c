//! A wrong sink path never looks like success: a local sink is made
//! explicitly (`coffer sink init`, `--create-sink`, `create = true`) and
//! holds a marker; a path without one (an unmounted disk, a typo) is
//! refused with exit 10 and nothing written, while sinks made before the
//! marker existed keep working.

use std::fs;
use std::path::Path;

use coffer_e2e::{coffer, keygen};

/// `coffer` as a newcomer runs it: no COFFER_CREATE_SINK in the
/// environment (the other tests' helper sets it).
fn strict(dir: &Path) -> assert_cmd::Command {
    let mut c = coffer(dir);
    c.env_remove("COFFER_CREATE_SINK");
    c
}

fn run(mut c: assert_cmd::Command, args: &[&str]) -> (Option<i32>, String) {
    let out = c.args(args).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

fn service(p: &Path) {
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/a.yaml"), "a: 1\n").unwrap();
}

#[test]
fn reading_a_sink_that_is_not_there_fails_with_exit_10() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    keygen(p, "k");
    fs::create_dir(p.join("empty-mount-point")).unwrap();
    for sink in ["no-such-dir", "empty-mount-point"] {
        for args in [
            vec!["list", "--sink", sink],
            vec!["verify", "--all", "--sink", sink],
            vec!["restore", "latest", "--sink", sink, "--identity", "k"],
        ] {
            let (code, said) = run(strict(p), &args);
            assert_eq!(code, Some(10), "{args:?}: {said}");
            assert!(
                said.contains("not mounted?") && said.contains("coffer sink init"),
                "{said}"
            );
        }
        let (code, said) = run(strict(p), &["--json", "list", "--sink", sink]);
        assert_eq!(code, Some(10));
        assert!(said.contains("\"sink_missing\""), "{said}");
    }
    assert!(!p.join("no-such-dir").exists());
}

#[test]
fn a_backup_never_creates_a_sink_unless_asked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    fs::create_dir(p.join("mnt")).unwrap();
    let backup = |sink: &str| -> Vec<String> {
        [
            "backup",
            "--source",
            "file:svc",
            "--sink",
            sink,
            "--recipient",
            &rec,
        ]
        .map(String::from)
        .to_vec()
    };

    // The README's second disk, not mounted: refused, nothing written.
    let (code, said) = run(
        strict(p),
        &backup("mnt/backups")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(10), "{said}");
    assert!(!p.join("mnt/backups").exists());
    // --create-sink makes only the last component.
    let mut args = backup("gone/parent/backups");
    args.insert(0, "--create-sink".into());
    let (code, said) = run(strict(p), &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(10), "{said}");
    assert!(said.contains("parent"), "{said}");
    assert!(!p.join("gone").exists());
    let mut args = backup("mnt/backups");
    args.insert(0, "--create-sink".into());
    let (code, said) = run(strict(p), &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{said}");
    assert!(p.join("mnt/backups/coffer-sink.json").is_file());

    // `coffer sink init`, then plain runs work; init again is harmless.
    let (code, said) = run(strict(p), &["sink", "init", "second"]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = run(strict(p), &["sink", "init", "second"]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = run(
        strict(p),
        &backup("second").iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = run(strict(p), &["list", "--sink", "second"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("complete"), "{said}");
}

#[test]
fn a_sink_made_before_the_marker_keeps_working() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let (code, said) = run(
        strict(p),
        &[
            "--create-sink",
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "old",
            "--recipient",
            &rec,
        ],
    );
    assert_eq!(code, Some(0), "{said}");
    fs::remove_file(p.join("old/coffer-sink.json")).unwrap();
    let (code, said) = run(strict(p), &["verify", "--all", "--sink", "old"]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = run(
        strict(p),
        &[
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "old",
            "--recipient",
            &rec,
        ],
    );
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn a_configured_sink_with_create_is_made_on_the_first_run() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    service(p);
    let (_, rec) = keygen(p, "key.txt");
    let config = |create: &str| {
        format!(
            "recipients = [\"{rec}\"]\n[source.svc]\nkind = \"file\"\npath = \"svc\"\n[sink.disk]\nkind = \"local\"\npath = \"bk\"\n{create}\n[job.main]\nsources = [\"svc\"]\nsinks = [\"disk\"]\n"
        )
    };
    fs::write(p.join("coffer.toml"), config("")).unwrap();
    let (code, said) = run(strict(p), &["backup"]);
    assert_eq!(code, Some(10), "{said}");
    assert!(said.contains("create = true"), "{said}");
    fs::write(p.join("coffer.toml"), config("create = true")).unwrap();
    let (code, said) = run(strict(p), &["backup"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(p.join("bk/coffer-sink.json").is_file());
}
