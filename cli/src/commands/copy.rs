//! `coffer copy`: snapshots between sinks without a key, SHA-256 checked.

use clap::Args;

use crate::ctx::{CmdResult, Ctx};
use crate::output::print_json;
use crate::transfer::{Pick, Reading, run_batch};

/// `coffer copy`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["snapshots", "latest", "all"]).required(true).multiple(true)))]
pub struct CopyArgs {
    #[command(flatten)]
    pub pick: Pick,
    /// The sink to write.
    #[arg(long, value_name = "SINK")]
    pub to: String,
}

/// `coffer copy`.
pub(crate) async fn exec(ctx: &Ctx, a: CopyArgs) -> CmdResult {
    let Reading { config, trust, from } = a.pick.open(ctx)?;
    let to = ctx.target_sink(&a.to, config.as_ref())?;
    let entries = a.pick.entries(from.as_ref()).await?;
    let batch = run_batch(ctx, from.clone(), to.clone(), entries, trust, "copied", None).await?;
    if ctx.json {
        print_json(&batch.report(from.as_ref(), to.as_ref()));
    }
    batch.finish("copy")
}
