//! The first ten minutes: help that tells the truth, usage errors with
//! exit 2, config errors that name file and line, completions and man
//! pages generated from the parser.

use std::fs;

use coffer_e2e::coffer;

fn output(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = coffer(dir).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_exit_code_and_says_what_each_sink_flag_does() {
    let d = tempfile::tempdir().unwrap();
    let (code, help, _) = output(d.path(), &["--help"]);
    assert_eq!(code, Some(0));
    assert!(help.contains("130 interrupted"), "{help}");
    assert!(!help.contains("[env: COFFER_CONFIG="), "{help}");
    for cmd in ["restore", "list", "verify", "show"] {
        let (_, help, _) = output(d.path(), &[cmd, "--help"]);
        assert!(!help.contains("fan out"), "{cmd}: {help}");
        assert!(help.contains("A sink to read"), "{cmd}: {help}");
    }
    let (_, help, _) = output(d.path(), &["backup", "--help"]);
    assert!(help.contains("fan out"), "{help}");
    let (_, help, _) = output(d.path(), &["restore", "--help"]);
    assert!(!help.contains("COFFER_IDENTITY="), "{help}");
}

#[test]
fn usage_mistakes_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::write(p.join("coffer.toml"), "# mine\n").unwrap();
    let (code, _, err) = output(p, &["init"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(p.join("coffer.toml")).unwrap(), "# mine\n");
    let (code, _, err) = output(p, &["--config", "nope.toml", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("nope.toml") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn config_value_errors_name_the_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, rec, _) = output(p, &["keygen", "-o", "key.txt"]);
    let rec = rec.trim();
    let config = |compression: &str, path: &str| {
        format!(
            "recipients = [\"{rec}\"]\n{compression}\n\n[source.seeds]\nkind = \"file\"\npath = \"{path}\"\n\n[sink.local]\nkind = \"local\"\npath = \"bk\"\n\n[job.main]\nsources = [\"seeds\"]\nsinks = [\"local\"]\n"
        )
    };
    fs::create_dir(p.join("data")).unwrap();
    fs::write(p.join("coffer.toml"), config("compression = \"zstd:99\"", "data")).unwrap();
    let (code, _, err) = output(p, &["backup"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("coffer.toml:2: compression"), "{err}");

    fs::write(p.join("coffer.toml"), config("", "no-such-dir")).unwrap();
    let (code, _, err) = output(p, &["backup"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("coffer.toml:4: [source.seeds]"), "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
}

#[test]
fn keygen_prints_the_fingerprint_the_wrong_key_hint_names() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = output(d.path(), &["keygen", "-o", "key.txt"]);
    assert_eq!(code, Some(0));
    assert!(out.trim().starts_with("age1"), "{out}");
    assert!(err.contains("fingerprint: age:"), "{err}");
    let (_, out, _) = output(d.path(), &["--json", "keygen", "-o", "key2.txt"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["fingerprint"].as_str().unwrap().starts_with("age:"), "{v}");
}

#[test]
fn completions_and_man_pages_are_generated_from_the_flags() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let (code, out, err) = output(p, &["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        assert!(out.contains("coffer") && out.contains("restore"), "{shell}");
        assert!(out.contains("--trusted-signer"), "{shell}");
    }
    let (_, bash, _) = output(p, &["completions", "bash"]);
    fs::write(p.join("coffer.bash"), bash).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(p.join("coffer.bash"))
        .status()
        .unwrap();
    assert!(syntax.success());
    let (code, _, _) = output(p, &["completions", "tcsh"]);
    assert_eq!(code, Some(2));

    let (code, page, _) = output(p, &["man"]);
    assert_eq!(code, Some(0));
    assert!(page.starts_with(".ie") || page.contains(".TH coffer"), "{page}");
    assert!(page.contains("restore"), "{page}");
    let (code, _, err) = output(p, &["man", "-o", "man1"]);
    assert_eq!(code, Some(0), "{err}");
    for page in ["coffer.1", "coffer-backup.1", "coffer-restore.1"] {
        let text = fs::read_to_string(p.join("man1").join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}
