//! The command line is checked for secret key material before clap sees
//! it, and clap's own errors are rendered with every value that looks like
//! key material hidden: clap echoes an unexpected argument whole, and a
//! private key pasted after `--recipient` (`--recipient "$(cat id_ed25519)"`)
//! would otherwise be printed in full.

use std::ffi::OsString;

use coffer_core::{Error, ErrorKind, config_error};

/// The first argument that holds secret key material (an age identity, a
/// signing key, an OpenSSH or PEM private key), as an error that names its
/// position and kind, never its text.
pub(crate) fn refuse_secrets(args: &[OsString]) -> Option<Error> {
    args.iter().enumerate().skip(1).find_map(|(i, arg)| {
        let text = arg.to_string_lossy();
        let kind = coffer_core::keys::secret_key_kind(&text)?;
        Some(
            config_error(format!(
                "argument {i} of the command line is {kind}; coffer never takes secret key material as an argument (it is not shown)"
            ))
            .with_hint(format!(
                "pass the key's file instead (--identity FILE, --signing-key FILE), or {}. The key may be in \
                 your shell history now",
                coffer_core::keys::public_half_hint(kind)
            )),
        )
    })
}

/// Clap's error message with every argument that looks like key material
/// replaced by its position.
pub(crate) fn redacted_clap_error(e: &clap::Error, args: &[OsString]) -> Error {
    let mut text = e.render().to_string();
    // Longest first, so a value is not half-replaced through a shorter one.
    let mut hidden: Vec<(usize, String)> = args
        .iter()
        .enumerate()
        .skip(1)
        .flat_map(|(i, a)| {
            let a = a.to_string_lossy().into_owned();
            let value = a.split_once('=').map(|(_, v)| v.to_string());
            [Some(a), value].into_iter().flatten().map(move |s| (i, s))
        })
        .filter(|(_, s)| coffer_core::keys::looks_like_key(s))
        .collect();
    hidden.sort_by_key(|(_, s)| std::cmp::Reverse(s.len()));
    for (i, s) in hidden {
        text = text.replace(&s, &format!("<argument {i}, hidden: it may be a key>"));
    }
    let text = text.trim().trim_start_matches("error: ").to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid command line").trim().to_string();
    let rest: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    let err = Error::new(ErrorKind::ConfigInvalid, first);
    if rest.is_empty() {
        err
    } else {
        err.with_hint(rest.join("; "))
    }
}

/// Whether `--json` is among the arguments (before clap parsed them).
pub(crate) fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn secret_arguments_are_refused_by_position_and_kind() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
        let e = refuse_secrets(&args(&["coffer", "backup", "--recipient", key])).unwrap();
        assert!(e.to_string().contains("argument 3"), "{e}");
        assert!(!e.to_string().contains("b3BlbnNz"), "{e}");
        let e = refuse_secrets(&args(&[
            "coffer",
            "list",
            "--trusted-signer=AGE-SECRET-KEY-1QQQQ",
        ]))
        .unwrap();
        assert!(e.to_string().contains("age secret key"), "{e}");
        assert!(refuse_secrets(&args(&["coffer", "list", "--sink", "bk"])).is_none());
    }

    #[test]
    fn clap_errors_hide_values_that_look_like_keys() {
        use clap::CommandFactory;
        let seed = "q8ZxN3v0Lr5Tb2Yc7Wd1Ke4Hf6Gj9Mp0Sa3Uz5Ix8Ow=";
        let argv = args(&["coffer", "list", seed]);
        let e = crate::commands::Cli::command()
            .try_get_matches_from(&argv)
            .unwrap_err();
        let shown = redacted_clap_error(&e, &argv).to_string();
        assert!(shown.contains("argument 2, hidden"), "{shown}");
        for w in seed.as_bytes().windows(6) {
            assert!(!shown.contains(std::str::from_utf8(w).unwrap()), "{shown}");
        }
    }
}
