//! Retention in the CLI: where each job's policy comes from (flags > the
//! sink's `retention` > the job's), how a prune report is printed, and
//! what `coffer backup --prune` / `--keep-forever` do after a backup. The
//! prune itself is `coffer_core::ops::prune_sink`.

use coffer_core::ops::{PolicySource, PruneReport, PruneRequest, prune_sink, write_pin};
use coffer_core::{BackupOutcome, PolicyTimeZone, Result, RetentionPolicy, config_error};

use crate::config::Config;
use crate::ctx::Ctx;

/// Where each group's policy comes from: flags, else the sink's override,
/// else the job's `retention`.
pub(crate) struct Policies<'a> {
    config: Option<&'a Config>,
    flags: Option<RetentionPolicy>,
    timezone: Option<PolicyTimeZone>,
}

impl Policies<'_> {
    /// `flags` replace the configured policy when they give any rule; a
    /// `--timezone` alone changes only the zone.
    pub(crate) fn new<'a>(config: Option<&'a Config>, flags: &RetentionPolicy) -> Policies<'a> {
        Policies {
            config,
            flags: flags.has_rules().then(|| flags.clone()),
            timezone: flags.timezone.clone(),
        }
    }

    /// The policy for `job` on sink `sink`, and where it comes from.
    pub(crate) fn get(&self, sink: &str, job: &str) -> (RetentionPolicy, String) {
        let configured = self.config.and_then(|c| {
            c.sink_retention
                .get(sink)
                .map(|p| (p.clone(), format!("[sink.{sink}]")))
                .or_else(|| {
                    c.jobs
                        .get(job)
                        .and_then(|j| j.retention.clone())
                        .map(|p| (p, format!("[job.{job}]")))
                })
        });
        let (mut policy, from) = match (&self.flags, configured) {
            (Some(f), c) => {
                let mut f = f.clone();
                if f.timezone.is_none() {
                    f.timezone = c.and_then(|(p, _)| p.timezone);
                }
                (f, "flags".to_string())
            }
            (None, Some(c)) => c,
            (None, None) => (RetentionPolicy::default(), "nowhere".to_string()),
        };
        if let Some(tz) = &self.timezone {
            policy.timezone = Some(tz.clone());
        }
        (policy, from)
    }
}

impl PolicySource for Policies<'_> {
    fn policy(&self, sink: &str, job: &str) -> (RetentionPolicy, String) {
        self.get(sink, job)
    }
}

/// Prints what prune did (or would do) on one sink.
pub(crate) fn print_prune(r: &PruneReport, several: bool) {
    if several {
        println!("sink {} ({}):", r.sink, r.location);
    }
    if r.snapshots.is_empty() {
        println!("  no snapshots");
    }
    let mut job = None;
    for row in &r.snapshots {
        if job != Some(&row.job) {
            job = Some(&row.job);
            print_job_header(r, &row.job);
        }
        let verdict = match (row.keep, row.deleted, &row.skipped) {
            (true, _, _) => "keep",
            (false, _, Some(_)) => "skipped",
            (false, true, _) => "deleted",
            (false, false, _) => "delete",
        };
        let why = match (&row.skipped, row.keep) {
            (Some(s), _) => s.clone(),
            (None, true) => row.reasons.join(", "),
            (None, false) => "no rule keeps it".to_string(),
        };
        let state = match &row.corrupt {
            Some(e) => format!(" [corrupt: {e}]"),
            None if row.state == "complete" => String::new(),
            None => format!(" [{}]", row.state),
        };
        println!(
            "  {verdict:<7} {}  {}{state}  {why}",
            row.id,
            row.time.strftime("%Y-%m-%d %H:%M:%S")
        );
    }
    for u in &r.unreadable {
        println!("  unreadable index {} (left alone): {}", u.key, u.error);
    }
    for sl in &r.slices {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        match (sl.removed_range, sl.kept_from) {
            (Some((from, to)), _) => println!(
                "  oplog {}/{}: {verb} {} slice(s), {} ({} … {}: before the oldest kept snapshot), {} left",
                sl.job,
                sl.source,
                sl.removed,
                crate::output::size(sl.removed_bytes),
                from.time(),
                to.time(),
                sl.left
            ),
            (None, None) => println!(
                "  oplog {}/{}: {} slice(s) kept (no kept snapshot has a point in time)",
                sl.job, sl.source, sl.left
            ),
            (None, Some(_)) => println!(
                "  oplog {}/{}: {} slice(s), none before the oldest kept snapshot",
                sl.job, sl.source, sl.left
            ),
        }
    }
    let kept = r.snapshots.iter().filter(|row| row.keep).count();
    if r.dry_run {
        let to_delete = r.snapshots.len() - kept;
        println!("{kept} kept, {to_delete} would be deleted (dry run: nothing was deleted)");
    } else {
        println!("{kept} kept, {} deleted", r.deleted());
    }
}

fn print_job_header(r: &PruneReport, job: &str) {
    let what = match r.policy_of(job) {
        Some(p) if !p.empty => format!("{} (from {})", p.policy, p.from),
        _ => "no retention policy: nothing is deleted".to_string(),
    };
    println!("job {job}: {what}");
    if let Some(f) = r.floor_of(job) {
        match &f.verified {
            Some(id) => {
                println!("  floor: {id} verified (SHA-256 of its object matches its index): never deleted")
            }
            None => println!(
                "  floor: no snapshot verified (SHA-256 of each object against its index): nothing is deleted"
            ),
        }
    }
}

/// Fails before a `backup --prune` starts if no sink of the run has a
/// policy for `job`: the prune would delete nothing.
pub(crate) fn check_backup_prune(config: Option<&Config>, job: &str, sinks: &[String]) -> Result<()> {
    let policies = Policies::new(config, &RetentionPolicy::default());
    if sinks.iter().all(|s| policies.get(s, job).0.is_empty()) {
        return Err(config_error(format!(
            "--prune: job `{job}` has no retention policy, so nothing would be pruned"
        ))
        .with_hint(format!(
            "add `retention = {{ keep-daily = 30, keep-monthly = 12 }}` to [job.{job}] (or a sink), or run `coffer prune --keep-… ` instead"
        )));
    }
    Ok(())
}

/// What `backup --keep-forever` / `--prune` did on the sinks that stored
/// the snapshot.
pub(crate) struct AfterBackup {
    pub(crate) pinned: Vec<String>,
    pub(crate) pruned: Vec<PruneReport>,
}

impl AfterBackup {
    pub(crate) fn print(&self) {
        if !self.pinned.is_empty() {
            println!("  pinned on {}: kept forever", self.pinned.join(", "));
        }
        for r in &self.pruned {
            println!("prune on sink {} ({}):", r.sink, r.location);
            print_prune(r, false);
        }
    }
}

/// Runs `--keep-forever` and `--prune` on each sink that stored the new
/// snapshot; `None` when neither flag is set.
pub(crate) async fn after_backup(
    ctx: &Ctx,
    config: Option<&Config>,
    keep_forever: bool,
    prune: bool,
    outcome: &BackupOutcome,
) -> Result<Option<AfterBackup>> {
    if !keep_forever && !prune {
        return Ok(None);
    }
    let id = &outcome.index.id;
    let mut after = AfterBackup {
        pinned: vec![],
        pruned: vec![],
    };
    for s in outcome.sinks.iter().filter(|s| s.result.is_ok()) {
        let sink = ctx.sink(&s.name, config)?;
        if keep_forever {
            write_pin(sink.as_ref(), id, Some("backup --keep-forever".into()))
                .await
                .map_err(|e| {
                    e.prefix(format!(
                        "snapshot {id} was written; pinning it on sink `{}`",
                        s.name
                    ))
                })?;
            after.pinned.push(s.name.clone());
        }
        if prune {
            let policies = Policies::new(config, &RetentionPolicy::default());
            let req = PruneRequest {
                now: jiff::Timestamp::now(),
                job: Some(outcome.index.job.clone()),
                dry_run: false,
                trusted: Default::default(),
            };
            let report = prune_sink(&s.name, sink, &req, &policies)
                .await
                .map_err(|e| e.prefix(format!("snapshot {id} was written; pruning sink `{}`", s.name)))?;
            after.pruned.push(report);
        }
    }
    Ok(Some(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_the_configured_policy_and_keep_its_zone() {
        let none = RetentionPolicy::default();
        assert!(!none.has_rules());
        let flags = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        let p = Policies::new(None, &flags);
        let (policy, from) = p.get("s", "j");
        assert_eq!(policy.to_string(), "keep-last 3");
        assert_eq!(from, "flags");
        let (policy, from) = Policies::new(None, &none).get("s", "j");
        assert!(policy.is_empty());
        assert_eq!(from, "nowhere");
    }
}
