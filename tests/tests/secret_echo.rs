//! No part of a secret key is ever echoed: an age identity or a signing key
//! given where a public key belongs is named, never printed, in text and
//! in `--json` errors.

use std::fs;

use coffer_e2e::{coffer, keygen};

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

#[test]
fn secret_keys_given_as_public_keys_are_named_never_echoed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("svc")).unwrap();
    fs::write(p.join("svc/a.yaml"), "a: 1\n").unwrap();
    let (key, rec) = keygen(p, "key.txt");
    let age_text = fs::read_to_string(&key).unwrap();
    let age_secret = age_text.lines().last().unwrap().to_string();
    let out = coffer(p)
        .args(["keygen", "--signing", "-o", "sign.key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sign_text = fs::read_to_string(p.join("sign.key")).unwrap();
    coffer(p)
        .args([
            "backup",
            "--source",
            "file:svc",
            "--sink",
            "bk",
            "--recipient",
            &rec,
        ])
        .assert()
        .success();

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
            let mut c = coffer(p);
            if json {
                c.arg("--json");
            }
            let out = c.args(&args).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let shown = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(shown.contains(kind), "{args:?}: {shown}");
            for w in secret_windows(secret) {
                assert!(!shown.contains(&w), "{args:?}: `{w}` of the secret in {shown}");
            }
        }
    }
}
