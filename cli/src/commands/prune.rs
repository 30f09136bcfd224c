//! `coffer prune`: apply the retention policy (flags > sink > job) to each
//! sink, after the safety-floor check (see [`crate::retention`]).

use std::sync::Arc;

use clap::Args;
use coffer_core::ops::{PruneRequest, prune_sink};
use coffer_core::{Result, Sink};
use serde_json::json;

use crate::config::Config;
use crate::ctx::{CmdResult, Ctx, SinkSel};
use crate::output::print_json;
use crate::retention::{Policies, print_prune};

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    /// Only this job's snapshots (without --sink: on the job's sinks).
    #[arg(long)]
    pub job: Option<String>,
    #[command(flatten)]
    pub policy: coffer_core::ops::RetentionPolicy,
    /// Show what would be kept and deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only snapshots signed by this key count toward retention (KEY as
    /// for `restore`; repeatable); the others are kept and reported as not
    /// counted, so junk snapshots from a compromised host cannot push good
    /// ones out of keep-last.
    #[arg(long = "trusted-signer", value_name = "KEY")]
    pub trusted_signers: Vec<String>,
}

/// The sinks `prune` works on: --sink, else the job's, else the config's.
fn prune_sinks(ctx: &Ctx, a: &PruneArgs, config: Option<&Config>) -> Result<Vec<(String, Arc<dyn Sink>)>> {
    if a.sink.sinks.is_empty()
        && let (Some(c), Some(job)) = (config, &a.job)
        && let Some(j) = c.jobs.get(job)
    {
        return j
            .sinks
            .iter()
            .map(|s| Ok((s.clone(), ctx.sink(s, config)?)))
            .collect();
    }
    ctx.sinks_of(&a.sink, config)
}

pub(crate) async fn exec(ctx: &Ctx, a: PruneArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = prune_sinks(ctx, &a, config.as_ref())?;
    let policies = Policies::new(config.as_ref(), &a.policy);
    let trust = crate::ctx::TrustSel {
        trusted_signers: a.trusted_signers.clone(),
    };
    let req = PruneRequest {
        now: jiff::Timestamp::now(),
        job: a.job.clone(),
        dry_run: a.dry_run,
        trusted: crate::ctx::trusted_signers(&trust, None)?,
    };
    let mut reports = Vec::new();
    let mut pruned = Vec::new();
    for (name, sink) in &sinks {
        let report = prune_sink(name, sink.clone(), &req, &policies)
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if !ctx.json {
            print_prune(&report, sinks.len() > 1);
        }
        if !a.dry_run {
            ctx.record.metric(
                "coffer_snapshots",
                &[("sink", name.as_str())],
                report.left() as f64,
            );
        }
        pruned.push(json!({"sink": name, "deleted": report.deleted(), "left": report.left()}));
        reports.push(report);
    }
    ctx.record.note("dry_run", a.dry_run);
    ctx.record.note("sinks", pruned);
    if ctx.json {
        print_json(&reports);
    }
    Ok(())
}
