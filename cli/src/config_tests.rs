//! The config model ([`coffer_app::config`]) with the plugins this binary
//! bundles: every shipped example parses, and errors name their place.

use std::path::{Path, PathBuf};

use crate::config::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

#[test]
fn every_shipped_example_parses() {
    let reg = crate::builtin_registry();
    for example in [
        "examples/quickstart/coffer.toml",
        "examples/init/coffer.toml",
        "examples/scheduling/coffer.toml",
        "examples/scheduling/kubernetes/coffer.toml",
        "examples/scheduling/pitr.toml",
    ] {
        let cfg = Config::load(&root().join(example), &reg).unwrap_or_else(|e| panic!("{example}: {e}"));
        let (_, job) = cfg.job(None).unwrap();
        assert!(!job.sources.is_empty() && !job.sinks.is_empty(), "{example}");
    }
    // The follower's example reads its oplog table.
    let cfg = Config::load(&root().join("examples/scheduling/pitr.toml"), &reg).unwrap();
    let oplog = cfg.jobs["issuer-directory-db"]
        .oplog
        .clone()
        .expect("[job.….oplog]");
    assert_eq!((oplog.slice_interval, oplog.slice_size), (60, 32 << 20));
    assert_eq!(oplog.on_gap, coffer_core::slices::follow::OnGap::Backup);
    // The text `coffer init` writes is the init example.
    assert_eq!(
        EXAMPLE,
        std::fs::read_to_string(root().join("examples/init/coffer.toml")).unwrap()
    );
}

#[test]
fn errors_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    std::fs::write(
        &p,
        "recipients = []\n\n[sink.s]\nkind = \"local\"\npath = \"b\"\nbogus = 1\n",
    )
    .unwrap();
    let err = Config::load(&p, &crate::builtin_registry()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("c.toml:3"), "{text}");
    assert!(text.contains("bogus"), "{text}");
    std::fs::write(&p, "[job.a]\nsources = []\nsinks = []\n").unwrap();
    let err = Config::load(&p, &crate::builtin_registry()).unwrap_err();
    assert!(err.to_string().contains("needs sources and sinks"), "{err}");
}

/// A check is built by the factory its kind names: a kind no plugin
/// registered, or a key its kind does not take, names the job's line
/// and the kinds there are; a plugin's kind (MongoDB's `audit`) loads
/// with a path resolved against the config's folder.
#[test]
fn checks_are_built_by_the_plugin_of_their_kind() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    let job = "[source.f]\nkind = \"file\"\npath = \".\"\n[sink.s]\nkind = \"local\"\npath = \"b\"\n\n\
               [job.a]\nsources = [\"f\"]\nsinks = [\"s\"]\n";
    let load = |checks: &str| {
        std::fs::write(&p, format!("{job}{checks}")).unwrap();
        Config::load(&p, &crate::builtin_registry())
    };
    let err = load("[[job.a.checks]]\nkind = \"smtp\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("c.toml:8: [job.a]: checks: unknown check kind `smtp`"),
        "{err}"
    );
    assert!(
        err.hint()
            .unwrap()
            .contains("audit, http, mongo-counts, prometheus"),
        "{err:?}"
    );
    let err = load("[[job.a.checks]]\nkind = \"http\"\nurl = \"http://x\"\nbogus = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`http` check") && err.contains("bogus"), "{err}");
    let err = load("[[job.a.checks]]\nkind = \"http\"\nurl = \"ftp://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`http` check url `ftp://x` must start with http://"),
        "the message names the check, not a health wait: {err}"
    );
    let c = load("[[job.a.checks]]\nkind = \"audit\"\ncollection = \"app.audit\"\ntime-field = \"at\"\nexport = \"gap.jsonl\"\n")
        .unwrap();
    let check = format!("{:?}", c.jobs["a"].checks[0]);
    assert!(
        check.contains(&format!("{:?}", d.path().join("gap.jsonl"))),
        "{check}"
    );
    let err = load("[[job.a.checks]]\nkind = \"audit\"\ncollection = \"audit\"\ntime-field = \"at\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be `database.collection`"), "{err}");
}

#[test]
fn optional_sinks_and_quorum() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    let text = |quorum: &str| {
        format!(
            "[job.a]\nsources = [\"s\"]\nsinks = [\"x\", \"y\"]\n{quorum}\n\
             [source.s]\nkind = \"file\"\npath = \"c.toml\"\n\
             [sink.x]\nkind = \"local\"\npath = \"x\"\noptional = true\n\
             [sink.y]\nkind = \"local\"\npath = \"y\"\noptional = false\n"
        )
    };
    std::fs::write(&p, text("quorum = 2")).unwrap();
    // `optional` never reaches the plugin, whose config denies unknown keys.
    let cfg = Config::load(&p, &crate::builtin_registry()).unwrap();
    assert_eq!(cfg.sink_optional.iter().collect::<Vec<_>>(), ["x"]);
    assert_eq!(cfg.jobs["a"].quorum, Some(2));
    for bad in ["quorum = 3", "quorum = 0"] {
        std::fs::write(&p, text(bad)).unwrap();
        let err = Config::load(&p, &crate::builtin_registry()).unwrap_err();
        assert!(
            err.to_string().contains("c.toml:1") && err.to_string().contains("quorum"),
            "{err}"
        );
    }
}

#[cfg(feature = "s3")]
#[test]
fn object_lock_takes_the_sinks_retention() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.toml");
    let text = |lock: &str, retention: &str| {
        format!(
            "[job.a]\nsources = [\"s\"]\nsinks = [\"o\"]\n\
             [source.s]\nkind = \"file\"\npath = \"c.toml\"\n\
             [sink.o]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9\"\n\
             object-lock = {lock}\n{retention}\n"
        )
    };
    // Derived from the sink's retention (and that policy kept for prune).
    std::fs::write(
        &p,
        text(
            "{ mode = \"governance\" }",
            "retention = { keep-daily = 7, keep-monthly = 12 }",
        ),
    )
    .unwrap();
    let cfg = Config::load(&p, &crate::builtin_registry()).unwrap();
    assert_eq!(cfg.sink_retention["o"].keep_monthly, Some(12));
    // `days` alone needs no retention; neither is refused, naming `days`.
    std::fs::write(&p, text("{ mode = \"compliance\", days = 30 }", "")).unwrap();
    Config::load(&p, &crate::builtin_registry()).unwrap();
    std::fs::write(
        &p,
        text("{ mode = \"governance\" }", "retention = { keep-last = 3 }"),
    )
    .unwrap();
    let err = Config::load(&p, &crate::builtin_registry()).unwrap_err();
    assert!(err.to_string().contains("days"), "{err}");
}
