//! `coffer pin` / `coffer unpin`: keep a snapshot whatever the policy says.

use clap::Args;
use coffer_core::{Error, Sink, SinkExt, pin_key};
use serde_json::json;

use crate::ctx::{CmdResult, Ctx, SinkSel, find_snapshot};
use crate::output::print_json;
use crate::retention::{sinks_holding, write_pin};

#[derive(Debug, Args)]
pub struct PinArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub sink: SinkSel,
    /// Why it is kept (stored in the marker).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// Snapshot id, unique prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub sink: SinkSel,
}

pub(crate) async fn pin(ctx: &Ctx, a: PinArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let (_, _, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    let id = entry.index.id;
    let mut names = Vec::new();
    for (name, sink) in sinks_holding(&sinks, &id).await? {
        write_pin(sink.as_ref(), &id, a.reason.clone())
            .await
            .map_err(|e| e.prefix(format!("pinning {id} on sink `{name}`")))?;
        names.push(name);
    }
    if ctx.json {
        print_json(&json!({ "id": id.as_str(), "pinned": true, "sinks": names, "reason": a.reason }));
    } else {
        println!(
            "pinned {id} on {}: no retention policy deletes it until `coffer unpin {id}`",
            names.join(", ")
        );
    }
    Ok(())
}

pub(crate) async fn unpin(ctx: &Ctx, a: UnpinArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let (_, _, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    let id = entry.index.id;
    let mut names = Vec::new();
    for (name, sink) in sinks_holding(&sinks, &id).await? {
        let key = pin_key(&id);
        let had = sink
            .head(&key)
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if had.is_some() {
            sink.delete(&key)
                .await
                .map_err(|e: Error| e.prefix(format!("unpinning {id} on sink `{name}`")))?;
            names.push(name);
        }
    }
    if ctx.json {
        print_json(&json!({ "id": id.as_str(), "pinned": false, "unpinned_on": names }));
    } else if names.is_empty() {
        println!("{id} was not pinned");
    } else {
        println!(
            "unpinned {id} on {}: retention policies apply to it again",
            names.join(", ")
        );
    }
    Ok(())
}
