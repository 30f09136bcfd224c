//! The plugin's own binary is the whole coffer command line with the
//! `exec` sink added: a backup to it restores.

use std::fs;
use std::process::Command;

fn coffer_exec(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffer-exec"));
    c.current_dir(dir)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_IDENTITY");
    c
}

#[test]
fn a_backup_through_the_exec_sink_restores() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("app/conf")).unwrap();
    fs::write(p.join("app/conf/app.yaml"), "port: 8443\n").unwrap();
    fs::create_dir(p.join("store")).unwrap();
    let out = coffer_exec(p).args(["keygen", "-o", "key.txt"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recipient = String::from_utf8(out.stdout).unwrap();
    let recipient = recipient
        .split_whitespace()
        .find(|w| w.starts_with("age1"))
        .unwrap();
    fs::write(
        p.join("coffer.toml"),
        format!(
            r#"recipients = ["{recipient}"]
[source.app]
kind = "file"
path = "app"
[sink.offsite]
kind = "exec"
dir = "store"
put = 'mkdir -p "$(dirname "./$COFFER_KEY")" && cat > "./$COFFER_KEY"'
get = 'cat "./$COFFER_KEY"'
list = "find . -ignore_readdir_race -type f -printf '%s;%P\n'"
rename = 'mv -f "./$COFFER_FROM" "./$COFFER_TO"'
delete = 'rm -f "./$COFFER_KEY"'
[job.main]
sources = ["app"]
sinks = ["offsite"]
"#
        ),
    )
    .unwrap();
    let out = coffer_exec(p).args(["--json", "backup"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = coffer_exec(p)
        .args(["verify", "--sink", "offsite"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = coffer_exec(p)
        .args([
            "restore", "latest", "--sink", "offsite", "--target", "out", "-i", "key.txt",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        fs::read_to_string(p.join("out/conf/app.yaml")).unwrap(),
        "port: 8443\n"
    );
    // The built-in plugins are all there too.
    let out = coffer_exec(p)
        .args([
            "backup",
            "--source",
            "file:app",
            "--sink",
            "local-bk",
            "--create-sink",
            "-r",
            recipient,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
