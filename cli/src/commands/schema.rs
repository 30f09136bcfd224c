//! `coffer schema`: the JSON Schema of each command's `--json` output,
//! generated from the outcome types. `docs/json-schema/` holds the same
//! schemas, checked against these in a test.

use clap::Args;
use coffer_core::ops::{
    BackupReport, CheckReport, ErrorOutput, InitOutcome, KeycheckReport, KeygenOutcome, PinOutcome,
    PruneReport, RestoreReport, ShowOutcome, SignerKeygenOutcome, SinkListing, SinkReady, SinkUnlock,
    TransferReport, VerifyResult,
};
use coffer_core::{Error, ErrorKind};
use schemars::{JsonSchema, Schema, schema_for};

use crate::ctx::CmdResult;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// The output to describe (e.g. `backup`, `list`, `error`); without
    /// it, the names.
    pub name: Option<String>,
}

fn schema<T: JsonSchema>(name: &'static str, what: &'static str) -> (&'static str, Schema) {
    let mut s = schema_for!(T);
    s.insert(
        "$id".into(),
        format!("https://coffer.invalid/json-schema/{name}.json").into(),
    );
    s.insert("description".into(), what.into());
    (name, s)
}

/// Every `--json` output: its name (the file name in `docs/json-schema/`)
/// and schema.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        schema::<BackupReport>("backup", "`coffer backup --json` (also `import-runbook`)"),
        schema::<RestoreReport>("restore", "`coffer restore --json`"),
        schema::<Vec<VerifyResult>>("verify", "`coffer verify --json`: one entry per snapshot checked"),
        schema::<Vec<SinkListing>>("list", "`coffer list --json`: one entry per sink"),
        schema::<ShowOutcome>("show", "`coffer show --json`"),
        schema::<Vec<PruneReport>>("prune", "`coffer prune --json`: one entry per sink"),
        schema::<PinOutcome>("pin", "`coffer pin --json` and `coffer unpin --json`"),
        schema::<TransferReport>("transfer", "`coffer copy|export|import --json`"),
        schema::<Vec<SinkUnlock>>("unlock", "`coffer unlock --json`: one entry per sink"),
        schema::<KeygenOutcome>("keygen", "`coffer keygen --json -o FILE` (and `--ssh`)"),
        schema::<SignerKeygenOutcome>("keygen-signing", "`coffer keygen --signing --json -o FILE`"),
        schema::<KeycheckReport>("keycheck", "`coffer keycheck --json`"),
        schema::<InitOutcome>("init", "`coffer init --json`"),
        schema::<SinkReady>("sink-init", "`coffer sink init --json`"),
        schema::<super::media::MediaInit>("media-init", "`coffer media init --json`"),
        schema::<super::media::MediaStatus>("media-status", "`coffer media status --json`"),
        schema::<CheckReport>("check", "`coffer check --json`"),
        schema::<Vec<super::oplog::SinkStatus>>(
            "oplog-status",
            "`coffer oplog status --json`: one entry per sink and followed source",
        ),
        schema::<super::oplog::ExportOutcome>("oplog-export", "`coffer oplog export --json`"),
        schema::<crate::evidence::DrillOutput>("drill", "`coffer drill --json`"),
        schema::<Vec<super::drills::SinkDrills>>("drills", "`coffer drills --json`: one entry per sink"),
        schema::<ErrorOutput>(
            "error",
            "what any command prints on stderr with `--json` when it fails",
        ),
    ]
}

pub(crate) fn exec(a: SchemaArgs) -> CmdResult {
    let all = all();
    match a.name {
        None => {
            for (name, s) in &all {
                let what = s.get("description").and_then(|d| d.as_str()).unwrap_or("");
                println!("{name:<15} {what}");
            }
            Ok(())
        }
        Some(name) => match all.iter().find(|(n, _)| *n == name) {
            Some((_, s)) => {
                print_json(s);
                Ok(())
            }
            None => Err(
                Error::new(ErrorKind::NotFound, format!("no JSON output named `{name}`"))
                    .with_hint("`coffer schema` lists the names")
                    .into(),
            ),
        },
    }
}
