//! `coffer-job CONFIG JOB IDENTITY`: backs up the job `JOB` of the config
//! file `CONFIG`, then drills the snapshot it made with the age identity
//! in `IDENTITY`, through the coffer-app library alone — the way a
//! scheduler or a daemon would. Prints one JSON object (the snapshot, the
//! drill's verdict and its checks) and what the run noted, as JSON lines
//! on stderr, through an [`Observer`] of its own. Exit 0 when the backup
//! is complete and the drill passed.

use std::process::ExitCode;
use std::sync::Arc;

use coffer_app::App;
use coffer_app::backup::{JobBackup, fan_out};
use coffer_app::drill::DrillRequest;
use coffer_app::job::{JobFlags, JobPlan};
use coffer_app::record::{Observer, Recorder, Sample};
use coffer_core::{CancelFlag, Progress, Registry, RestoreOptions, Result, config_error, keys::Identities};

/// Notes and metrics as JSON lines on stderr.
struct Lines;

impl Observer for Lines {
    fn note(&self, key: &str, value: serde_json::Value) {
        eprintln!("{}", serde_json::json!({ "note": key, "value": value }));
    }

    fn metric(&self, s: Sample) {
        eprintln!(
            "{}",
            serde_json::json!({ "metric": s.name, "labels": s.labels, "value": s.value })
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, job, identity] = args.as_slice() else {
        eprintln!("usage: coffer-job CONFIG JOB IDENTITY");
        return ExitCode::from(2);
    };
    match run(config, job, identity).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(6),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: &str, job: &str, identity: &str) -> Result<bool> {
    let mut registry = Registry::new();
    coffer_app::checks::register(&mut registry);
    coffer_source_file::register(&mut registry);
    coffer_sink_local::register(&mut registry);
    let app = App {
        config_path: Some(config.into()),
        registry,
        cancel: CancelFlag::default(),
        create_sinks: true,
        record: Recorder::new(Arc::new(Lines)),
    };
    let config = app.config()?.ok_or_else(|| config_error("no config"))?;

    // The job's backup, as configured.
    let plan = JobPlan::configured(&config, Some(job))?;
    let (sinks, quorum) = fan_out(Some(&config), &plan.job, false, plan.sinks.clone(), &[])?;
    let no_passphrase = |_: Option<&std::path::Path>| Err(config_error("this job needs no passphrase"));
    let backup = JobBackup {
        job: plan.resolve(&JobFlags::default(), Some(&config), &no_passphrase)?,
        sinks,
        quorum,
        format: None,
        dedup_key: None,
        time: None,
        keep_forever: false,
        prune: false,
    };
    let run = app
        .backup(Some(&config), backup, Arc::new(Progress::default()))
        .await
        .map_err(|f| f.error)?;
    let snapshot = run.outcome.index.id.to_string();

    // A drill of that snapshot.
    let mut ids = Identities::new();
    ids.add_file(std::path::Path::new(identity))?;
    let reading = app.reading(&[], &[])?;
    let opened = app.open_snapshot(reading, ids, &snapshot, Some(job)).await?;
    let drill = DrillRequest {
        started_at: jiff::Timestamp::now(),
        opened,
        replays: Vec::new(),
        to_ts: None,
        options: RestoreOptions::default(),
        scratch_suffix: None,
        job: None,
        only: Vec::new(),
        keep: false,
        cache_dir: None,
    };
    let outcome = app.drill(drill, Arc::new(Progress::default())).await?;
    let passed = run.complete && outcome.failures().is_none();
    println!(
        "{}",
        serde_json::json!({
            "snapshot": snapshot,
            "complete": run.complete,
            "drill": outcome.report.drill,
            "drill_passed": outcome.report.passed,
            "checks": outcome.report.checks,
        })
    );
    outcome.stored?;
    Ok(passed)
}
