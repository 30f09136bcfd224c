//! `coffer list`: the snapshots of each sink, with their signatures.

use clap::Args;
use coffer_core::Sink;
use coffer_core::ops::list_sink;

use crate::ctx::{CmdResult, Ctx, SinkSel, TrustSel, signature_column};
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
    let sinks = ctx.sinks_of(&sel, config.as_ref())?;
    let trust = crate::ctx::trusted_signers(&trust, config.as_ref())?;
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let (cat, listing) = list_sink(name, sink.as_ref(), &trust)
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if ctx.json {
            out.push(listing);
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
                    // A chunked snapshot: what it references (shared
                    // chunks included).
                    size(
                        s.index
                            .chunks
                            .as_ref()
                            .map_or(s.index.object.size, |c| c.stored_bytes)
                    ),
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
        print_json(&out);
    }
    Ok(())
}
