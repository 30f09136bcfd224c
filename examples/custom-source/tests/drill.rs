//! A source kind a plugin brings drills with its own scratch place,
//! cleanup and check kind, through the plugin's binary alone: neither core
//! nor the CLI names `kv`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn coffer_kv(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffer-kv"))
        .current_dir(dir)
        .env_remove("COFFER_CONFIG")
        .env_remove("COFFER_IDENTITY")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store of three keys, backed up; `min` is what the check wants.
fn setup(p: &Path, min: usize) {
    fs::create_dir_all(p.join("tokens/api")).unwrap();
    for (k, v) in [("a", "1"), ("b", "2"), ("api/c", "3")] {
        fs::write(p.join("tokens").join(k), v).unwrap();
    }
    let out = ok(&coffer_kv(p, &["keygen", "-o", "key.txt"]));
    let recipient = out.split_whitespace().find(|w| w.starts_with("age1")).unwrap();
    fs::write(
        p.join("coffer.toml"),
        format!(
            "recipients = [\"{recipient}\"]\n\
             [source.tokens]\nkind = \"kv\"\npath = \"tokens\"\n\
             [sink.local]\nkind = \"local\"\npath = \"store\"\n\
             [job.main]\nsources = [\"tokens\"]\nsinks = [\"local\"]\n\
             [[job.main.checks]]\nkind = \"kv-keys\"\nsource = \"tokens\"\npath = \"tokens\"\nmin = {min}\n"
        ),
    )
    .unwrap();
    ok(&coffer_kv(p, &["backup", "--create-sink"]));
}

fn drill(p: &Path, more: &[&str]) -> (Output, Value) {
    let mut args = vec!["--json", "drill", "-i", "key.txt"];
    args.extend(more);
    let out = coffer_kv(p, &args);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out, v)
}

/// The `kv-keys` check of a drill's report.
fn kv_check(v: &Value) -> &Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "kv-keys")
        .unwrap_or_else(|| panic!("no kv-keys check: {v}"))
}

#[test]
fn a_plugin_source_is_drilled_in_its_own_scratch_place_and_checked_there() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    setup(p, 3);
    // The live store loses a key after the backup: the drill checks the
    // snapshot's copy, not the live store.
    fs::remove_file(p.join("tokens/a")).unwrap();
    let (out, v) = drill(p, &["--keep"]);
    assert!(out.status.success(), "{v}");
    let kv_dir = v["scratch"]["kv_dir"].as_str().unwrap().to_string();
    assert!(kv_dir.contains("coffer-kv-drill-"), "{v}");
    let check = kv_check(&v);
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(check["figure"], "3 keys, at least 3 wanted", "{check}");
    assert!(check["target"].as_str().unwrap().starts_with(&kv_dir), "{check}");
    // The scratch copy is the plugin's, kept as asked; the live store and
    // the drill's own temp dir hold nothing of it.
    assert!(Path::new(&kv_dir).join("tokens").exists(), "{kv_dir}");
    assert!(!p.join("tokens/a").exists());
    fs::remove_dir_all(&kv_dir).unwrap();
    fs::remove_dir_all(v["scratch"]["dir"].as_str().unwrap()).unwrap();

    // Without --keep the plugin's cleanup removes it.
    let (out, v) = drill(p, &[]);
    assert!(out.status.success(), "{v}");
    let kv_dir = v["scratch"]["kv_dir"].as_str().unwrap();
    assert!(!Path::new(kv_dir).exists(), "{kv_dir} left behind");
    assert_eq!(v["scratch"]["kept"], false);

    // The plugin's check kind fails a drill like any other (exit 6).
    let text = fs::read_to_string(p.join("coffer.toml")).unwrap();
    fs::write(p.join("coffer.toml"), text.replace("min = 3", "min = 4")).unwrap();
    let (out, v) = drill(p, &[]);
    assert_eq!(out.status.code(), Some(6), "{v}");
    let check = kv_check(&v);
    assert_eq!(check["passed"], false, "{check}");
    // `coffer check` runs it against the live store, which lost a key.
    let out = coffer_kv(p, &["check"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 keys, at least 4 wanted"));
}

/// The plugin's restore option is a flag of `coffer restore`, made from
/// its declaration: `--kv-into DIR` restores the store there.
#[test]
fn a_plugin_restore_option_is_a_restore_flag() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    setup(p, 3);
    let help = ok(&coffer_kv(p, &["restore", "--help"]));
    assert!(
        help.contains("--kv-into <INTO>") && help.contains("`--opt kv.into`"),
        "{help}"
    );
    ok(&coffer_kv(
        p,
        &["restore", "latest", "-i", "key.txt", "--kv-into", "out"],
    ));
    assert_eq!(fs::read_to_string(p.join("out/tokens/api/c")).unwrap(), "3");
}
