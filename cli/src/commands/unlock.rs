//! `coffer unlock`: remove stale sink locks (`--force`: live ones too).

use clap::Args;
use coffer_core::ops::LockOptions;
use coffer_core::ops::SinkUnlock;

use crate::ctx::{CmdResult, Ctx, SinkSel};
use crate::output::print_json;

/// `coffer unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    /// Also remove live locks. Only when their holder is surely gone (a
    /// crashed host): a running prune or backup loses its protection.
    #[arg(long)]
    pub force: bool,
}

/// `coffer unlock [--sink S] [--force]`.
pub(crate) async fn exec(ctx: &Ctx, a: UnlockArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    let opts = LockOptions::from_env()?;
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let report = coffer_core::ops::break_locks(sink.as_ref(), a.force, &opts)
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        for l in &report.removed {
            let what = if l.stale { "stale" } else { "LIVE" };
            eprintln!(
                "warning: sink {name}: removed the {what} lock held by {} ({})",
                l.describe(),
                l.key
            );
        }
        for l in &report.kept {
            eprintln!(
                "sink {name}: kept the live lock held by {} ({}); pass --force only if that process is gone",
                l.describe(),
                l.key
            );
        }
        if !ctx.json && report.removed.is_empty() && report.kept.is_empty() {
            println!("sink {name}: no locks");
        } else if !ctx.json {
            println!(
                "sink {name}: removed {} lock(s), kept {} live lock(s)",
                report.removed.len(),
                report.kept.len()
            );
        }
        out.push(SinkUnlock::new(name, &report));
    }
    if ctx.json {
        print_json(&out);
    }
    Ok(())
}
