//! No part of a secret key is ever echoed: an age identity or a signing key
//! given where a public key belongs is named, never printed, in text and
//! in `--json` errors.

use std::fs;

use coffer_e2e::{backup_cmd, coffer, keygen, require_tool};

/// Every 6-character window of the secret lines of `key_file`.
fn secret_windows(key_file: &str) -> Vec<String> {
    key_file
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| {
            let chars: Vec<char> = l.chars().collect();
            chars
                .windows(6)
                .map(|w| w.iter().collect::<String>())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A service directory `svc`, an age key (`key.txt`) and a signing key
/// (`sign.key`), and one backup to sink `bk`: (age key file text,
/// signing key file text).
fn setup(p: &std::path::Path) -> (String, String) {
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/a.yaml"), "a: 1\n").unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let out = coffer(p)
        .args(["keygen", "--signing", "-o", "sign.key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    backup_cmd(p, "file:svc", "bk", &rec).assert().success();
    (
        fs::read_to_string(&key).unwrap(),
        fs::read_to_string(p.join("sign.key")).unwrap(),
    )
}

#[test]
fn secret_keys_given_as_public_keys_are_named_never_echoed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (age_text, sign_text) = setup(p);
    let age_secret = age_text.lines().last().unwrap().to_string();

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["list", "--sink", "bk", "--trusted-signer", "key.txt"],
            &age_text,
            "age secret key",
        ),
        (
            vec!["list", "--sink", "bk", "--trusted-signer", &age_secret],
            &age_text,
            "age secret key",
        ),
        (
            vec!["list", "--sink", "bk", "--trusted-signer", "sign.key"],
            &sign_text,
            "signing secret key",
        ),
        (
            vec![
                "backup",
                "--source",
                "file:svc",
                "--sink",
                "bk",
                "--recipient",
                &age_secret,
            ],
            &age_text,
            "age secret key",
        ),
    ];
    for (args, secret, kind) in cases {
        for json in [false, true] {
            let (out, shown) = run_hiding(p, &args, secret, json);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(shown.contains(kind), "{args:?}: {shown}");
        }
    }
}

/// Runs coffer with `args` (and `--json`), asserting that no 6-character
/// window of `secret` is in what it printed; returns the output and it.
fn run_hiding(
    p: &std::path::Path,
    args: &[&str],
    secret: &str,
    json: bool,
) -> (std::process::Output, String) {
    let mut c = coffer(p);
    if json {
        c.arg("--json");
    }
    let out = c.args(args).output().unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for w in secret_windows(secret) {
        assert!(!shown.contains(&w), "{args:?}: `{w}` of the secret in {shown}");
    }
    (out, shown)
}

/// An OpenSSH or PEM private key pasted with the space form
/// (`--recipient "$(cat id_ed25519)"`) used to be echoed whole by clap's
/// "unexpected argument" error, and a bare signing seed by the trusted
/// signer file error: no 6-character window of either reaches any output.
#[test]
fn pasted_private_keys_and_seeds_are_never_echoed_by_any_error() {
    if !require_tool("ssh-keygen") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (_, sign_text) = setup(p);
    for (name, args) in [
        ("id_ed25519", vec!["-t", "ed25519"]),
        ("id_pem", vec!["-t", "ecdsa", "-m", "PEM"]),
    ] {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-f"])
            .arg(p.join(name))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let openssh = fs::read_to_string(p.join("id_ed25519")).unwrap();
    let pem = fs::read_to_string(p.join("id_pem")).unwrap();
    assert!(pem.contains("BEGIN EC PRIVATE KEY"), "{pem}");
    let seed = sign_text
        .lines()
        .find_map(|l| l.split_once("SECRET-KEY:").map(|(_, s)| s.trim().to_string()))
        .expect("seed line");

    let key_cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "backup",
                "--source",
                "file:svc",
                "--sink",
                "bk",
                "--recipient",
                &openssh,
            ],
            &openssh,
        ),
        (
            vec![
                "backup",
                "--source",
                "file:svc",
                "--sink",
                "bk",
                "--recipient",
                &pem,
            ],
            &pem,
        ),
        (
            vec!["list", "--sink", "bk", "--trusted-signer", &openssh],
            &openssh,
        ),
        (vec!["verify", "--sink", "bk", "--trusted-signer", &pem], &pem),
        (vec!["list", "--sink", "bk", &openssh], &openssh),
    ];
    let seed_cases: Vec<Vec<&str>> = vec![
        vec!["list", "--sink", "bk", "--trusted-signer", &seed],
        vec!["verify", "--sink", "bk", "--trusted-signer", &seed],
        vec![
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--recipient",
            &seed,
        ],
        vec!["list", "--sink", "bk", &seed],
        vec!["list", "--sink", "bk", "--no-such-flag", &seed],
    ];
    let cases = key_cases
        .into_iter()
        .map(|(a, s)| (a, s.to_string()))
        .chain(seed_cases.into_iter().map(|a| (a, seed.clone())));
    for (args, secret) in cases {
        for json in [false, true] {
            let (out, shown) = run_hiding(p, &args, &secret, json);
            assert!(!out.status.success(), "{args:?}: {shown}");
            assert!(
                !shown.trim().is_empty(),
                "{args:?}: an error must say what failed"
            );
            if json {
                let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stderr).trim())
                    .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {shown}"));
                assert!(v["error"]["message"].is_string(), "{args:?}: {shown}");
            }
        }
    }
}
