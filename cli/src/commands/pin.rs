//! `coffer pin` / `coffer unpin`: keep a snapshot whatever the policy says.

use clap::Args;
use coffer_core::ops;

use crate::ctx::{CmdResult, Ctx, SinkSel, find_snapshot};
use crate::output::print_json;

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
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    let (_, _, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    let id = entry.index.id;
    let outcome = ops::pin(&sinks, &id, a.reason).await?;
    if ctx.json {
        print_json(&outcome);
    } else {
        println!(
            "pinned {id} on {}: no retention policy deletes it until `coffer unpin {id}`",
            outcome.sinks.unwrap_or_default().join(", ")
        );
    }
    Ok(())
}

pub(crate) async fn unpin(ctx: &Ctx, a: UnpinArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    let (_, _, entry) = find_snapshot(&sinks, &a.snapshot).await?;
    let id = entry.index.id;
    let outcome = ops::unpin(&sinks, &id).await?;
    let names = outcome.unpinned_on.clone().unwrap_or_default();
    if ctx.json {
        print_json(&outcome);
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
