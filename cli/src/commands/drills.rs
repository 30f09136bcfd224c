//! `coffer drills`: the drill history of each sink, newest last, and when
//! the last successful drill was.

use clap::Args;
use serde_json::json;

use crate::ctx::{CmdResult, Ctx, SinkSel};
use crate::evidence::history;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct DrillsArgs {
    #[command(flatten)]
    pub sink: SinkSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: DrillsArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.read_sinks(&a.sink, config.as_ref())?;
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let (reports, unreadable) = history(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        let last_ok = reports.iter().rev().find(|r| r.passed);
        if ctx.json {
            out.push(json!({
                "sink": name,
                "drills": reports.iter().map(|r| json!({
                    "drill": r.drill, "started_at": r.started_at, "snapshot": r.snapshot, "job": r.job,
                    "passed": r.passed, "rto_seconds": r.rto_seconds, "rpo_seconds": r.rpo_seconds,
                    "audit_gap_seconds": r.audit_gap_seconds,
                    "failed_checks": r.checks.iter().filter(|c| !c.passed).map(|c| &c.kind).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "last_passed": last_ok.map(|r| json!({
                    "drill": r.drill, "started_at": r.started_at,
                    "age_days": (now.as_second() - r.started_at.as_second()) / 86_400,
                })),
                "unreadable": unreadable.iter().map(|(k, e)| json!({"key": k, "error": e})).collect::<Vec<_>>(),
            }));
            continue;
        }
        println!("sink {name}: {} drill(s)", reports.len());
        for r in &reports {
            println!(
                "  {}  {}  snapshot {}  RTO {:>7.1} s  RPO {:>9.0} s{}",
                r.started_at.strftime("%Y-%m-%d %H:%M"),
                if r.passed { "passed" } else { "FAILED" },
                r.snapshot,
                r.rto_seconds,
                r.rpo_seconds,
                if r.passed {
                    String::new()
                } else {
                    let failed: Vec<&str> = r
                        .checks
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| c.kind.as_str())
                        .collect();
                    format!("  ({})", failed.join(", "))
                }
            );
        }
        match last_ok {
            Some(r) => println!(
                "  last passed: {} ({} days ago)",
                r.started_at.strftime("%Y-%m-%d %H:%M UTC"),
                (now.as_second() - r.started_at.as_second()) / 86_400
            ),
            None => println!("  no drill has passed on this sink: run `coffer drill`"),
        }
        for (key, e) in &unreadable {
            println!("  unreadable {key}: {e}");
        }
    }
    if ctx.json {
        print_json(&json!(out));
    }
    Ok(())
}
