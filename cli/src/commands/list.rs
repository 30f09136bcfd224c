//! `coffer list`: the snapshots of each sink, with their signatures.

use clap::Args;
use coffer_core::{Catalog, Sink};
use serde_json::json;

use crate::ctx::{CmdResult, Ctx, SinkSel, TrustSel, signature_column, snapshot_json};
use crate::output::{print_json, size};

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    #[command(flatten)]
    pub trust: TrustSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: ListArgs) -> CmdResult {
    let (sel, trust) = (a.sink, a.trust);
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&sel, config.as_ref())?;
    let trust = crate::ctx::trusted_signers(&trust, config.as_ref())?;
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if ctx.json {
            out.push(json!({
                "sink": name,
                "location": sink.info().to_string(),
                "snapshots": cat.snapshots.iter().map(|e| {
                    let mut v = snapshot_json(e);
                    let t = trust.judge(&e.signature);
                    v["signature"] = json!(t.as_str());
                    v["signer"] = json!(t.fingerprint());
                    v["trusted"] = json!(crate::ctx::enforce(&trust, e).is_ok());
                    v
                }).collect::<Vec<_>>(),
                "incomplete": cat.incomplete,
                "unreadable": cat.unreadable.iter().map(|(k, e)| json!({"key": k, "error": e})).collect::<Vec<_>>(),
            }));
            continue;
        }
        if sinks.len() > 1 {
            println!("sink {name} ({}):", sink.info());
        }
        if cat.snapshots.is_empty() {
            println!("no snapshots");
        } else {
            println!(
                "{:<26} {:<20} {:<16} {:>10}  {:<16} {:<9} SOURCES",
                "ID", "TIME (UTC)", "JOB", "SIZE", "STATE", "SIGNATURE"
            );
            for s in &cat.snapshots {
                let srcs: Vec<_> = s.index.sources.iter().map(|s| s.name.as_str()).collect();
                println!(
                    "{:<26} {:<20} {:<16} {:>10}  {:<16} {:<9} {}",
                    s.index.id.as_str(),
                    s.index.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                    s.index.job,
                    size(s.index.object.size),
                    if s.pinned {
                        format!("{},pinned", s.state.as_str())
                    } else {
                        s.state.as_str().to_string()
                    },
                    signature_column(&trust, s),
                    srcs.join(",")
                );
            }
        }
        if !cat.incomplete.is_empty() {
            println!(
                "{} incomplete object(s) without an index (interrupted or running backups): {}",
                cat.incomplete.len(),
                cat.incomplete.join(", ")
            );
        }
        for (k, e) in &cat.unreadable {
            println!("unreadable index {k} (corrupt: an integrity failure, its object is kept): {e}");
        }
    }
    if ctx.json {
        print_json(&json!(out));
    }
    Ok(())
}
