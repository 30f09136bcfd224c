//! `coffer keycheck`: the key-escrow drill ([`coffer_app::keycheck`]):
//! proves that each identity file still opens the newest snapshot of each
//! job, without restoring.

use std::path::PathBuf;

use clap::Args;
use coffer_app::keycheck::{KeyCheck, keycheck};
use coffer_core::ops::{ErrorInfo, KeycheckReport, KeycheckRow};
use coffer_core::{Error, ErrorKind};

use crate::ctx::{CmdResult, Ctx, SinkSel};
use crate::output::{print_json, printable};

#[derive(Debug, Args)]
pub struct KeycheckArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    /// An identity file to check (age identity or SSH private key); each
    /// is checked on its own; repeatable.
    #[arg(long = "identity", short = 'i', value_name = "FILE", required = true)]
    pub identities: Vec<PathBuf>,
}

pub(crate) async fn exec(ctx: &Ctx, a: KeycheckArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    let checks = keycheck(&sinks, &a.identities).await?;
    report(ctx, &checks)
}

fn report(ctx: &Ctx, checks: &[KeyCheck]) -> CmdResult {
    let failed = checks.iter().filter(|c| c.result.is_err()).count();
    if ctx.json {
        print_json(&KeycheckReport {
            passed: failed == 0,
            checks: checks
                .iter()
                .map(|c| KeycheckRow {
                    sink: c.sink.clone(),
                    job: c.job.clone(),
                    snapshot: c.snapshot.clone(),
                    identity: c.identity.clone(),
                    ok: c.result.is_ok(),
                    error: c.result.as_ref().err().map(ErrorInfo::from),
                })
                .collect(),
        });
    } else {
        for c in checks {
            let verdict = match &c.result {
                Ok(()) => "opens".to_string(),
                Err(e) => format!("FAILED: {e}"),
            };
            println!(
                "{} job {} snapshot {}: {} {verdict}",
                c.sink,
                c.job,
                c.snapshot,
                printable(&c.identity)
            );
        }
    }
    if checks.is_empty() {
        return Err(
            Error::new(ErrorKind::NotFound, "no complete snapshot to check a key against")
                .with_hint("run `coffer backup` first, or name the sink holding the snapshots with --sink")
                .into(),
        );
    }
    if failed > 0 {
        // The worst: a corrupt object over a key that opens nothing.
        let worst = checks
            .iter()
            .filter_map(|c| c.result.as_ref().err())
            .max_by_key(|e| e.kind() == ErrorKind::Integrity)
            .expect("one failed");
        return Err(Error::new(
            worst.kind(),
            format!("{failed} of {} key checks failed", checks.len()),
        )
        .with_hint("an identity that opens nothing is lost or was rotated: find the key the jobs encrypt to (`coffer show ID` lists recipient fingerprints) before you need it")
        .into());
    }
    Ok(())
}
