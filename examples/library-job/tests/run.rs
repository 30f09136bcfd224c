//! The library example runs a configured job's backup and a drill with no
//! CLI code: the snapshot it makes is on the sink, the drill's evidence
//! beside it, its checks pass, and its observer saw the run's notes.

use std::fs;
use std::process::Command;

use serde_json::Value;

#[test]
fn a_job_is_backed_up_and_drilled_through_the_library_alone() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("app/conf")).unwrap();
    fs::write(p.join("app/conf/app.yaml"), "port: 8443\n").unwrap();
    let key = coffer_core_key(p);
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{key}\"]\n\
             [source.app]\nkind = \"file\"\npath = \"app\"\n\
             [sink.local]\nkind = \"local\"\npath = \"store\"\n\
             [job.main]\nsources = [\"app\"]\nsinks = [\"local\"]\n\
             [[job.main.checks]]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = 1\ninterval = 1\n"
        ),
    )
    .unwrap();
    let run = |config: &str| {
        Command::new(env!("CARGO_BIN_EXE_coffer-job"))
            .current_dir(p)
            .args([config, "main", "key.txt"])
            .output()
            .unwrap()
    };
    // The job's http check cannot pass (nothing listens on port 1): the
    // drill fails on it, and says so.
    let out = run("coffer.toml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["drill_passed"], false, "{v}");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks[0]["kind"], "restore", "{v}");
    assert_eq!(checks[0]["passed"], true, "{v}");
    assert!(
        checks.iter().any(|c| c["kind"] == "http" && c["passed"] == false),
        "{v}"
    );
    // Without the failing check it passes; the snapshot and the drill's
    // evidence are on the sink, and the observer got the run's notes.
    let text = fs::read_to_string(p.join("coffer.toml")).unwrap();
    let cut = text.find("[[job.main.checks]]").unwrap();
    fs::write(p.join("coffer.toml"), &text[..cut]).unwrap();
    let out = run("coffer.toml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["drill_passed"], true, "{v}");
    let snapshot = v["snapshot"].as_str().unwrap();
    assert!(p.join(format!("store/{snapshot}.coffer")).exists(), "{v}");
    let drill = v["drill"].as_str().unwrap();
    assert!(p.join(format!("store/drills/{drill}.json")).exists(), "{v}");
    assert!(stderr.contains(r#"{"note":"snapshot","value":""#), "{stderr}");
    assert!(
        stderr.contains(r#""metric":"coffer_drill_last_passed""#),
        "{stderr}"
    );
}

/// An age identity in `dir/key.txt`; its recipient.
fn coffer_core_key(dir: &std::path::Path) -> String {
    let key = coffer_core::keys::GeneratedKey::generate();
    fs::write(dir.join("key.txt"), key.file_text()).unwrap();
    key.recipient()
}
