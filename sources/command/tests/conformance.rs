//! The `command` source passes coffer's source conformance kit (restored
//! under a target directory: the entry as a file).

use std::path::Path;

use coffer_core::testkit::source_suite;

#[tokio::test(flavor = "multi_thread")]
async fn the_command_source_passes_the_source_suite() {
    let d = tempfile::tempdir().unwrap();
    let mut reg = coffer_core::Registry::new();
    coffer_source_command::register(&mut reg);
    let table: coffer_core::toml::Table = r#"command = ["sh", "-c", "printf 'a=1\nb=2\n'; echo ok >&2"]
secret = true
file = "store.env""#
        .parse()
        .unwrap();
    let source = reg
        .source_factory("command")
        .unwrap()
        .from_config("store", table, Path::new("/"))
        .unwrap();
    let entries = source_suite(source.as_ref(), &d.path().join("out")).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, "store.env");
    assert_eq!(entries[0].data, b"a=1\nb=2\n");
    assert_eq!(entries[0].mode, 0o600);
}
