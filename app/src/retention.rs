//! Retention of a job: where each job's policy comes from (flags > the
//! sink's `retention` > the job's), and what a backup's prune and pin
//! (`--prune`, `--keep-forever`) do after it. The prune itself is
//! `coffer_core::ops::prune_sink`.

use coffer_core::ops::{PolicySource, PruneReport, PruneRequest, prune_sink, write_pin};
use coffer_core::{Result, config_error, ops::BackupOutcome, ops::PolicyTimeZone, ops::RetentionPolicy};

use crate::App;
use crate::config::Config;

/// Where each group's policy comes from: flags, else the sink's override,
/// else the job's `retention`.
pub struct Policies<'a> {
    config: Option<&'a Config>,
    flags: Option<RetentionPolicy>,
    timezone: Option<PolicyTimeZone>,
}

impl Policies<'_> {
    /// `flags` replace the configured policy when they give any rule; a
    /// `--timezone` alone changes only the zone.
    pub fn new<'a>(config: Option<&'a Config>, flags: &RetentionPolicy) -> Policies<'a> {
        Policies {
            config,
            flags: flags.has_rules().then(|| flags.clone()),
            timezone: flags.timezone.clone(),
        }
    }

    /// The policy for `job` on sink `sink`, and where it comes from.
    pub fn get(&self, sink: &str, job: &str) -> (RetentionPolicy, String) {
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

/// Fails before a `backup --prune` starts if no sink of the run has a
/// policy for `job`: the prune would delete nothing.
pub fn check_backup_prune(config: Option<&Config>, job: &str, sinks: &[String]) -> Result<()> {
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
pub struct AfterBackup {
    pub pinned: Vec<String>,
    pub pruned: Vec<PruneReport>,
}

/// Runs `--keep-forever` and `--prune` on each sink that stored the new
/// snapshot; `None` when neither flag is set.
pub async fn after_backup(
    app: &App,
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
        let sink = app.sink(&s.name, config)?;
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
