//! `docs/json-schema/` must be what the outcome types generate: a change
//! to an output type shows up as a change to the checked-in schema.
//! `COFFER_BLESS=1 cargo test -p coffer schema` rewrites the files.

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/json-schema")
}

#[test]
fn checked_in_schemas_match_the_output_types() {
    let bless = std::env::var_os("COFFER_BLESS").is_some();
    let mut stale = Vec::new();
    let all = crate::json_schemas();
    for (name, schema) in &all {
        let path = dir().join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
        if bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.to_string());
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = all.iter().map(|(n, _)| format!("{n}.json")).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "docs/json-schema/ holds exactly one file per output"
    );
    assert!(
        stale.is_empty(),
        "docs/json-schema/ is out of date for {stale:?}: run `COFFER_BLESS=1 cargo test -p coffer schema`"
    );
}
