//! `coffer drills`: the drill history of each sink, newest last, and when
//! the last successful drill was.

use clap::Args;
use jiff::Timestamp;
use serde::Serialize;

use coffer_core::ops::Unreadable;

use crate::ctx::{CmdResult, Ctx, SinkSel};
use crate::evidence::{DrillReport, history};
use crate::output::print_json;

/// `--json`: one per sink.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SinkDrills {
    sink: String,
    drills: Vec<DrillLine>,
    last_passed: Option<LastPassed>,
    unreadable: Vec<Unreadable>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct DrillLine {
    drill: String,
    started_at: Timestamp,
    snapshot: String,
    job: String,
    passed: bool,
    /// A partial drill (`--only`): the sources it did not restore (empty
    /// for a drill of the whole snapshot).
    left_out: Vec<String>,
    rto_seconds: f64,
    rpo_seconds: f64,
    audit_gap_seconds: Option<f64>,
    failed_checks: Vec<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct LastPassed {
    drill: String,
    started_at: Timestamp,
    age_days: i64,
}

#[derive(Debug, Args)]
pub struct DrillsArgs {
    #[command(flatten)]
    pub sink: SinkSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: DrillsArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    let now = jiff::Timestamp::now();
    let mut out = Vec::new();
    for (name, sink) in &sinks {
        let (reports, unreadable) = history(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        // A partial drill proves part of a restore only.
        let last_ok = reports.iter().rev().find(|r| r.passed_whole());
        if ctx.json {
            out.push(SinkDrills {
                sink: name.clone(),
                drills: reports.iter().map(drill_line).collect(),
                last_passed: last_ok.map(|r| last_passed(r, now)),
                unreadable: unreadable
                    .iter()
                    .map(|(key, error)| Unreadable {
                        key: key.clone(),
                        error: error.clone(),
                    })
                    .collect(),
            });
            continue;
        }
        print_sink(name, &reports, last_ok, &unreadable, now);
    }
    if ctx.json {
        print_json(&serde_json::to_value(&out).expect("json"));
    }
    Ok(())
}

/// One drill of the `--json` output.
fn drill_line(r: &DrillReport) -> DrillLine {
    DrillLine {
        drill: r.drill.clone(),
        started_at: r.started_at,
        snapshot: r.snapshot.clone(),
        job: r.job.clone(),
        passed: r.passed,
        left_out: r.left_out.clone(),
        rto_seconds: r.rto_seconds,
        rpo_seconds: r.rpo_seconds,
        audit_gap_seconds: r.audit_gap_seconds,
        failed_checks: r
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.kind.clone())
            .collect(),
    }
}

/// The last passed drill `r` of the `--json` output, with its age at `now`.
fn last_passed(r: &DrillReport, now: Timestamp) -> LastPassed {
    LastPassed {
        drill: r.drill.clone(),
        started_at: r.started_at,
        age_days: (now.as_second() - r.started_at.as_second()) / 86_400,
    }
}

/// Prints the drill history of sink `name` for people: each drill, the last passed one, unreadable reports.
fn print_sink(
    name: &str,
    reports: &[DrillReport],
    last_ok: Option<&DrillReport>,
    unreadable: &[(String, String)],
    now: Timestamp,
) {
    println!("sink {name}: {} drill(s)", reports.len());
    for r in reports {
        print_drill(r);
    }
    match last_ok {
        Some(r) => println!(
            "  last passed: {} ({} days ago)",
            r.started_at.strftime("%Y-%m-%d %H:%M UTC"),
            (now.as_second() - r.started_at.as_second()) / 86_400
        ),
        None => println!("  no drill of a whole snapshot has passed on this sink: run `coffer drill`"),
    }
    for (key, e) in unreadable {
        println!("  unreadable {key}: {e}");
    }
}

/// Prints one drill's line: when, its verdict, the snapshot, RTO, RPO and the checks that failed.
fn print_drill(r: &DrillReport) {
    println!(
        "  {}  {}  snapshot {}  RTO {:>7.1} s  RPO {:>9.0} s{}",
        r.started_at.strftime("%Y-%m-%d %H:%M"),
        match (r.passed, r.left_out.is_empty()) {
            (false, _) => "FAILED".to_string(),
            (true, true) => "passed".to_string(),
            (true, false) => format!("passed (partial: {} not drilled)", r.left_out.join(", ")),
        },
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
