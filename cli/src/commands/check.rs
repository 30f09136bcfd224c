//! `coffer check [JOB]`: the job's post-restore checks, alone, against the
//! running service (after a restore done by hand, or as a monitor).

use clap::Args;
use coffer_core::config_error;
use coffer_core::ops::CheckReport;

use crate::Failure;
use crate::checks::{failures, run_checks};
use crate::ctx::{CmdResult, Ctx};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Job from the config (default: its only job).
    pub job: Option<String>,
    /// The plugins' connection options (`--mongo-uri`: the server of
    /// checks that name none), made from their declarations as
    /// `KIND.NAME=VALUE`.
    #[arg(skip)]
    pub opts: Vec<String>,
}

pub(crate) async fn exec(ctx: &Ctx, a: CheckArgs) -> CmdResult {
    let config = ctx
        .config()?
        .ok_or_else(|| config_error("coffer check needs a config file").with_hint("pass --config FILE"))?;
    let (name, job) = config.job(a.job.as_deref())?;
    if job.checks.is_empty() {
        return Err(config_error(format!("job `{name}` declares no checks"))
            .with_hint(format!(
                "add [[job.{name}.checks]] tables (kind = {})",
                ctx.registry
                    .check_kinds()
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
    }
    let mut options = coffer_core::RestoreOptions::default();
    for o in &a.opts {
        ctx.registry.apply_restore_option(o, &mut options)?;
    }
    let env = coffer_core::checks::CheckEnv {
        params: Some(&options.params),
        ..Default::default()
    };
    let results = run_checks(&job.checks, &env).await;
    let failed = failures(&results);
    if ctx.json {
        print_json(&CheckReport {
            job: name.clone(),
            passed: failed.is_none(),
            checks: results.clone(),
        });
    } else {
        for r in &results {
            println!("{}", r.line());
        }
    }
    match failed {
        None => Ok(()),
        Some(why) => Err(Failure::Checks(format!("job `{name}`: {why}"))),
    }
}
