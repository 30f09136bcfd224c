//! A coffer bundle opens with standard tools alone: `age -d`, `zstd -d` or
//! `gzip -d`, GNU `tar x`, and `sha256sum -c SHA256SUMS`.

use std::fs;
use std::path::Path;
use std::process::Command;

use coffer_e2e::{coffer, keygen, only_object, require_tool};

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn interop(compression: &str, decompress: &str) {
    for tool in ["age", "zstd", "tar", "sha256sum", "gzip"] {
        if !require_tool(tool) {
            return;
        }
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc/conf/sub")).unwrap();
    fs::write(p.join("svc/conf/a.yaml"), "a: 1\n").unwrap();
    fs::write(p.join("svc/conf/sub/b.json"), "{\"b\": 2}\n").unwrap();
    std::os::unix::fs::symlink("a.yaml", p.join("svc/conf/link.yaml")).unwrap();
    fs::write(p.join("svc/.env"), "KEEP=1\nAPP_SECRET=hunter2\n").unwrap();
    let (key, rec) = keygen(p, "key.txt");
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc/conf",
            "--source",
            "env:svc/.env#APP_*",
        ])
        .args(["--sink", "bk", "--recipient", &rec, "--compression", compression])
        .assert()
        .success();
    let obj = only_object(&p.join("bk"), ".coffer");
    fs::create_dir(p.join("x")).unwrap();
    let script = format!(
        "age -d -i {} {} | {decompress} | tar -x -C x && cd x && sha256sum -c SHA256SUMS",
        key.display(),
        obj.display()
    );
    let checked = sh(p, &script);
    assert!(checked.contains("files/conf/a.yaml: OK"), "{checked}");
    assert!(checked.contains("files/conf/sub/b.json: OK"), "{checked}");
    assert!(checked.contains("secrets/env/.env: OK"), "{checked}");
    assert_eq!(
        fs::read_to_string(p.join("x/files/conf/sub/b.json")).unwrap(),
        "{\"b\": 2}\n"
    );
    assert_eq!(
        fs::read_link(p.join("x/files/conf/link.yaml")).unwrap().to_str(),
        Some("a.yaml")
    );
    assert_eq!(
        fs::read_to_string(p.join("x/secrets/env/.env")).unwrap(),
        "APP_SECRET=hunter2\n"
    );
    let mode = fs::metadata(p.join("x/secrets/env/.env")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(p.join("x/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["entries"].as_array().unwrap().len(), 3);
    assert!(p.join("x/sources.json").exists());
}

#[test]
fn zstd_bundle_opens_with_age_zstd_tar_sha256sum() {
    interop("zstd", "zstd -d");
}

#[test]
fn gzip_bundle_opens_with_age_gzip_tar_sha256sum() {
    interop("gzip", "gzip -d");
}

#[test]
fn uncompressed_bundle_opens_with_age_tar() {
    interop("none", "cat");
}

#[test]
fn coffer_restores_what_age_cli_can_read_with_ssh_keys() {
    for tool in ["age", "ssh-keygen"] {
        if !require_tool(tool) {
            return;
        }
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    sh(p, "ssh-keygen -q -t ed25519 -N '' -f id_ed25519");
    fs::create_dir(p.join("conf")).unwrap();
    fs::write(p.join("conf/a.txt"), "ssh works\n").unwrap();
    let pubkey = fs::read_to_string(p.join("id_ed25519.pub")).unwrap();
    let (_, rec) = keygen(p, "key.txt");
    // Two recipients at once: an SSH key and an age key.
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:conf",
            "--sink",
            "bk",
            "--recipient",
            pubkey.trim(),
            "--recipient",
            &rec,
        ])
        .assert()
        .success();
    coffer(p)
        .args([
            "restore",
            "latest",
            "--sink",
            "bk",
            "--identity",
            "id_ed25519",
            "--target",
            "out",
        ])
        .assert()
        .success();
    assert_eq!(fs::read_to_string(p.join("out/a.txt")).unwrap(), "ssh works\n");
    let obj = only_object(&p.join("bk"), ".coffer");
    let listing = sh(
        p,
        &format!("age -d -i id_ed25519 {} | zstd -d | tar -t", obj.display()),
    );
    assert!(listing.contains("files/conf/a.txt"));
    coffer(p)
        .args(["keygen", "--ssh", "id_ed25519.pub"])
        .assert()
        .success()
        .stdout(predicates::str::starts_with("ssh-ed25519 "));
}
