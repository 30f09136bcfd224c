//! Signed snapshots, end to end: `keygen --signing`, signed backups, and
//! restore / verify / show / list refusing forged, unsigned and tampered
//! snapshots when trusted signers are configured.

use std::path::{Path, PathBuf};

use coffer_e2e::{coffer, keygen, only_object, require_tool};
use serde_json::Value;

/// `coffer keygen --signing -o name`: (key file, public key line).
fn signing_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = coffer(dir)
        .args(["keygen", "--signing", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(public.starts_with("coffer-sign-ed25519:"), "{public}");
    (path, public)
}

fn data(dir: &Path) -> PathBuf {
    let d = dir.join("data");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("seed.json"), b"{\"issuers\": 3}\n").unwrap();
    d
}

/// A one-off backup into `sink`, signed with `key` if given; returns the id.
fn backup(dir: &Path, sink: &Path, recipient: &str, key: Option<&Path>) -> String {
    let mut c = coffer(dir);
    c.args([
        "--json",
        "backup",
        "--source",
        "file:data",
        "--recipient",
        recipient,
        "--sink",
    ])
    .arg(sink);
    if let Some(k) = key {
        c.arg("--signing-key").arg(k);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// `coffer restore ID --target T --trusted-signer K`: (exit code, stderr).
fn restore(
    dir: &Path,
    sink: &Path,
    id: &str,
    identity: &Path,
    target: &Path,
    trusted: &str,
) -> (i32, String) {
    let out = coffer(dir)
        .args(["restore", id, "--sink"])
        .arg(sink)
        .arg("--identity")
        .arg(identity)
        .arg("--target")
        .arg(target)
        .args(["--trusted-signer", trusted])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_signing_writes_a_private_file_and_never_overwrites() {
    let t = tempfile::tempdir().unwrap();
    let (path, public) = signing_keygen(t.path(), "sign.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&public));
    let out = coffer(t.path())
        .args(["keygen", "--signing", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "not overwritten");
    // The secret never reaches stdout or stderr.
    let secret = text
        .lines()
        .find(|l| l.starts_with("COFFER-SIGN-ED25519-SECRET-KEY:"))
        .unwrap();
    let secret = secret.split_once(':').unwrap().1;
    let out = coffer(t.path())
        .args(["keygen", "--signing", "-o"])
        .arg(t.path().join("k2"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
}

#[test]
fn forged_unsigned_and_tampered_snapshots_are_refused_before_anything_is_written() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    data(dir);
    let sink = dir.join("sink");
    let (identity, recipient) = keygen(dir, "id.txt");
    let (good_key, good_pub) = signing_keygen(dir, "good.key");
    let (evil_key, evil_pub) = signing_keygen(dir, "evil.key");

    let genuine = backup(dir, &sink, &recipient, Some(&good_key));
    // Forged: valid age encryption to the right recipient, made by coffer
    // with another signing key; and one with no signature at all.
    let forged = backup(dir, &sink, &recipient, Some(&evil_key));
    let unsigned = backup(dir, &sink, &recipient, None);
    assert!(sink.join(format!("{genuine}.sig")).exists());
    assert!(!sink.join(format!("{unsigned}.sig")).exists());

    for (id, why) in [(&forged, "not a trusted signer"), (&unsigned, "unsigned")] {
        let target = dir.join(format!("out-{id}"));
        let (code, err) = restore(dir, &sink, id, &identity, &target, &good_pub);
        assert_eq!(code, 3, "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!target.exists(), "nothing written for {id}");
    }
    // The forged one is fine for whoever trusts the other key.
    let target = dir.join("out-evil-trusted");
    let (code, err) = restore(dir, &sink, &forged, &identity, &target, &evil_pub);
    assert_eq!(code, 0, "{err}");

    // The genuine one restores.
    let target = dir.join("out-genuine");
    let (code, err) = restore(dir, &sink, &genuine, &identity, &target, &good_pub);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(target.join("seed.json")).unwrap(),
        b"{\"issuers\": 3}\n"
    );

    // list marks what restore would refuse.
    let out = coffer(dir)
        .args(["--json", "list", "--sink"])
        .arg(&sink)
        .args(["--trusted-signer", &good_pub])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let snaps = v[0]["snapshots"].as_array().unwrap();
    let find = |id: &str| snaps.iter().find(|s| s["id"] == id).unwrap().clone();
    assert_eq!(find(&genuine)["signature"], "trusted");
    assert_eq!(find(&genuine)["trusted"], true);
    assert_eq!(find(&forged)["signature"], "untrusted-signer");
    assert_eq!(find(&forged)["trusted"], false);
    assert_eq!(find(&unsigned)["signature"], "unsigned");
    let out = coffer(dir)
        .args(["list", "--sink"])
        .arg(&sink)
        .args(["--trusted-signer", &good_pub])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap().to_string();
    assert!(line(&forged).contains("untrusted"), "{text}");
    assert!(line(&unsigned).contains("untrusted"), "{text}");
    assert!(line(&genuine).contains(" signed "), "{text}");

    // verify and show refuse too (exit 3), without any key.
    for args in [vec!["verify", forged.as_str()], vec!["show", unsigned.as_str()]] {
        let out = coffer(dir)
            .args(&args)
            .arg("--sink")
            .arg(&sink)
            .args(["--trusted-signer", &good_pub])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = coffer(dir)
        .args(["verify", "--all", "--sink"])
        .arg(&sink)
        .args(["--trusted-signer", &good_pub])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{genuine}: ok")));

    // Tampering with the index bytes after signing — even one byte of
    // JSON whitespace — breaks the signature; refused with or without
    // trusted signers.
    let index = sink.join(format!("{genuine}.json"));
    let mut bytes = std::fs::read(&index).unwrap();
    let pos = bytes.iter().position(|&b| b == b'\n').unwrap();
    bytes.insert(pos, b' ');
    std::fs::write(&index, &bytes).unwrap();
    let target = dir.join("out-tampered");
    let (code, err) = restore(dir, &sink, &genuine, &identity, &target, &good_pub);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad signature"), "{err}");
    assert!(!target.exists());
    let out = coffer(dir)
        .args(["verify", &genuine, "--sink"])
        .arg(&sink)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a bad signature fails verify even with no signer trusted"
    );
}

#[test]
fn swapping_the_object_and_its_hash_in_a_signed_index_is_detected() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    data(dir);
    let (identity, recipient) = keygen(dir, "id.txt");
    let (key, public) = signing_keygen(dir, "sign.key");
    let sink = dir.join("sink");
    let genuine = backup(dir, &sink, &recipient, Some(&key));
    // The attacker's bundle, with different content, encrypted to the same recipient.
    std::fs::write(dir.join("data/seed.json"), b"{\"issuers\": 666}\n").unwrap();
    let other_sink = dir.join("other");
    backup(dir, &other_sink, &recipient, None);
    let evil_obj = only_object(&other_sink, ".coffer");
    let evil_idx: Value =
        serde_json::from_slice(&std::fs::read(only_object(&other_sink, ".json")).unwrap()).unwrap();
    let index_path = sink.join(format!("{genuine}.json"));
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["object"]["sha256"] = evil_idx["object"]["sha256"].clone();
    index["object"]["size"] = evil_idx["object"]["size"].clone();
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    std::fs::copy(&evil_obj, sink.join(format!("{genuine}.coffer"))).unwrap();
    let target = dir.join("out");
    let (code, err) = restore(dir, &sink, &genuine, &identity, &target, &public);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad signature"), "{err}");
    assert!(!target.exists());
}

#[test]
fn config_signing_key_and_ssh_trusted_signers() {
    if !require_tool("ssh-keygen") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    data(dir);
    let (identity, recipient) = keygen(dir, "id.txt");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@test", "-f"])
        .arg(dir.join("ssh_sign"))
        .status()
        .unwrap();
    assert!(st.success());
    let (_, other_pub) = signing_keygen(dir, "other.key");
    std::fs::write(dir.join("signers.txt"), format!("# ops\n{other_pub}\n")).unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            r#"recipients = ["{recipient}"]
signing-key = "ssh_sign"
trusted-signers = ["ssh_sign.pub"]

[job.app]
sources = ["data"]
sinks = ["local"]

[source.data]
kind = "file"
path = "data"

[sink.local]
kind = "local"
path = "backups"
"#
        ),
    )
    .unwrap();
    let out = coffer(dir).args(["--json", "backup"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fp = String::from_utf8(
        std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(dir.join("ssh_sign.pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    let out = coffer(dir).args(["--json", "show", "latest"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signature"], "trusted");
    assert_eq!(
        v["signer"],
        fp.as_str(),
        "fingerprints as ssh-keygen -l prints them"
    );
    let out = coffer(dir)
        .args(["restore", "latest", "--identity"])
        .arg(&identity)
        .arg("--target")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A config that trusts only another key refuses the same snapshot.
    let toml = std::fs::read_to_string(dir.join("coffer.toml")).unwrap();
    std::fs::write(
        dir.join("coffer.toml"),
        toml.replace(
            r#"trusted-signers = ["ssh_sign.pub"]"#,
            r#"trusted-signers = ["signers.txt"]"#,
        ),
    )
    .unwrap();
    let out = coffer(dir)
        .args(["restore", &id, "--identity"])
        .arg(&identity)
        .arg("--target")
        .arg(dir.join("out2"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("out2").exists());
}

#[test]
fn bad_signing_keys_give_clear_errors_without_key_material() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    data(dir);
    let (_, recipient) = keygen(dir, "id.txt");
    std::fs::write(
        dir.join("bad.key"),
        "COFFER-SIGN-ED25519-SECRET-KEY:c2VjcmV0LXN0dWZm\n",
    )
    .unwrap();
    let out = coffer(dir)
        .args([
            "backup",
            "--source",
            "file:data",
            "--sink",
            "s",
            "--recipient",
            &recipient,
            "--signing-key",
            "bad.key",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.key") && !err.contains("c2VjcmV0"), "{err}");
    assert!(
        !dir.join("s").join("locks").exists() || std::fs::read_dir(dir.join("s/locks")).unwrap().count() == 0
    );
    let out = coffer(dir)
        .args([
            "list",
            "--sink",
            "s",
            "--trusted-signer",
            "coffer-sign-ed25519:AAAA",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid signer key"));
}

/// A config that signs (and names no trusted signers) trusts its own key:
/// a snapshot whose signature was stripped from the sink is refused there,
/// before anything is written, instead of restoring silently.
#[test]
fn a_config_that_signs_refuses_a_snapshot_whose_signature_was_stripped() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    data(dir);
    let (identity, recipient) = keygen(dir, "id.txt");
    signing_keygen(dir, "sign.key");
    std::fs::write(
        dir.join("coffer.toml"),
        format!(
            "recipients = [\"{recipient}\"]\nsigning-key = \"sign.key\"\n\
             [job.app]\nsources = [\"data\"]\nsinks = [\"local\"]\n\
             [source.data]\nkind = \"file\"\npath = \"data\"\n\
             [sink.local]\nkind = \"local\"\npath = \"backups\"\ncreate = true\n"
        ),
    )
    .unwrap();
    let out = coffer(dir).args(["--json", "backup"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let restore = |target: &str| {
        coffer(dir)
            .args(["restore", &id, "--target", target, "--identity"])
            .arg(&identity)
            .output()
            .unwrap()
    };
    let out = restore("out");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(dir.join("backups").join(format!("{id}.sig"))).unwrap();
    let out = restore("out2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("unsigned"), "{err}");
    assert!(!dir.join("out2").exists(), "nothing written");
}
