//! Continuous archiving of a job's oplog (point-in-time recovery): which
//! source of the job is followed, the follower's request from the job's
//! `[job.NAME.oplog]`, sinks and keys, and its metrics
//! (`coffer_oplog_*`), kept from the follower's events. The follower
//! itself is `coffer_core::slices::follow`; a front end (the CLI's `oplog
//! follow`, a daemon) shows the events and decides how a new chain gets
//! its base backup.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_core::slices::LogPos;
use coffer_core::slices::follow::{FollowEvent, FollowRequest, FollowSink, LogWindow, OnGap};
use coffer_core::{Result, Source, config_error, keys::Passphrase};

use crate::App;
use crate::config::{Config, OplogConfig};
use crate::job::{JobFlags, JobPlan};
use crate::record::Sample;

/// A follower ready to run: its request and what the front end needs to
/// know about it.
pub struct Follower {
    /// The request for [`coffer_core::slices::follow::follow`].
    pub request: FollowRequest,
    /// The job.
    pub job: String,
    /// The followed source.
    pub source: String,
    /// What a break of the chain does (`backup`: a base backup is due).
    pub on_gap: OnGap,
}

/// The job's source with an oplog: `[job.NAME.oplog] source`, else its
/// only source that keeps a change log.
pub fn followed_source(cfg: &Config, job: &str, oplog: &OplogConfig) -> Result<(String, Arc<dyn Source>)> {
    let (_, j) = cfg.job(Some(job))?;
    let with_log: Vec<&String> = j
        .sources
        .iter()
        .filter(|s| cfg.sources[*s].change_log().is_some())
        .collect();
    let name = match (&oplog.source, with_log.as_slice()) {
        (Some(s), _) => s.clone(),
        (None, [one]) => (*one).clone(),
        (None, []) => {
            return Err(
                config_error(format!("job `{job}` has no MongoDB source: no oplog to follow"))
                    .with_hint("point-in-time recovery follows the oplog of a `mongo` source of the job"),
            );
        }
        (None, _) => {
            return Err(
                config_error(format!("job `{job}` has several MongoDB sources")).with_hint(
                    "name the one to follow: `source = \"…\"` in [job.NAME.oplog] (one follower per source)",
                ),
            );
        }
    };
    let source = cfg.sources[&name].clone();
    if source.change_log().is_none() {
        return Err(config_error(format!("source `{name}` keeps no oplog to follow")));
    }
    Ok((name, source))
}

impl App {
    /// The follower of `job` (the config's only job when `None`): its
    /// source, sinks (optional ones as configured), quorum, keys (a
    /// passphrase from `ask`), slice size and interval, and a lease that
    /// goes stale after five intervals at least.
    pub fn follower(
        &self,
        cfg: &Config,
        job: Option<&str>,
        ask: &dyn Fn(Option<&std::path::Path>) -> Result<Passphrase>,
    ) -> Result<Follower> {
        let (job, jc) = cfg.job(job)?;
        let oplog = jc.oplog.clone().unwrap_or_default();
        let (source, src) = followed_source(cfg, &job, &oplog)?;
        let resolved = JobPlan::configured(cfg, Some(&job))?.resolve(&JobFlags::default(), Some(cfg), ask)?;
        let sinks = jc
            .sinks
            .iter()
            .map(|n| {
                Ok(FollowSink {
                    name: n.clone(),
                    sink: self.target_sink(n, Some(cfg))?,
                    required: !cfg.sink_optional.contains(n),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let interval = Duration::from_secs(oplog.slice_interval);
        let stale = coffer_core::ops::LockOptions::from_env()
            .map(|o| o.stale)
            .unwrap_or(coffer_core::ops::DEFAULT_STALE)
            .max(interval * 5);
        let request = FollowRequest {
            job: job.clone(),
            source: source.clone(),
            log: src.change_log().expect("checked"),
            sinks,
            quorum: jc.quorum,
            encryption: resolved.encryption,
            signing_key: resolved.signing_key,
            interval,
            size: oplog.slice_size as usize,
            on_gap: oplog.on_gap,
            lease_stale: stale,
            cancel: self.cancel.clone(),
        };
        self.record.note("job", job.as_str());
        self.record.note("source", source.as_str());
        Ok(Follower {
            request,
            job,
            source,
            on_gap: oplog.on_gap,
        })
    }
}

/// The follower's counters, kept from its events, and the
/// `coffer_oplog_*` samples they make.
#[derive(Default)]
pub struct FollowMetrics {
    labels: Vec<(&'static str, String)>,
    state: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    written: u64,
    failed: u64,
    gaps: u64,
    last_archived: Option<LogPos>,
}

impl FollowMetrics {
    /// The metrics of the follower of `source` of `job`.
    pub fn new(job: &str, source: &str) -> FollowMetrics {
        FollowMetrics {
            labels: vec![("job", job.to_string()), ("source", source.to_string())],
            state: Mutex::default(),
        }
    }

    /// Counts `event`; returns the samples to write now, if it changed
    /// them (a start, a gap, a window reading).
    pub fn event(&self, event: &FollowEvent) -> Option<Vec<Sample>> {
        let mut st = self.state.lock().expect("counters");
        match event {
            FollowEvent::Started { after, .. } => st.last_archived = Some(after.ts),
            FollowEvent::Gap { .. } => st.gaps += 1,
            FollowEvent::Slice { index, failed } => {
                st.written += 1;
                st.failed += failed.len() as u64;
                st.last_archived = Some(index.last.ts);
                return None;
            }
            FollowEvent::Retrying { .. } => {
                st.failed += 1;
                return None;
            }
            FollowEvent::Window(_) => {}
            _ => return None,
        }
        drop(st);
        let window = match event {
            FollowEvent::Window(w) => Some(w),
            _ => None,
        };
        Some(self.samples(window))
    }

    fn samples(&self, window: Option<&LogWindow>) -> Vec<Sample> {
        let st = self.state.lock().expect("counters");
        let mut samples = vec![
            self.sample("coffer_oplog_slices_written_total", st.written as f64),
            self.sample("coffer_oplog_slices_failed_total", st.failed as f64),
            self.sample("coffer_oplog_gaps_total", st.gaps as f64),
        ];
        if let Some(p) = st.last_archived {
            samples.push(self.sample("coffer_oplog_last_archived_timestamp_seconds", f64::from(p.t)));
        }
        if let Some(w) = window {
            let newest = w.majority.or(w.newest.map(|m| m.ts));
            if let (Some(n), Some(a)) = (newest, st.last_archived) {
                let lag = f64::from(n.t.saturating_sub(a.t));
                samples.push(self.sample("coffer_oplog_lag_seconds", lag));
                if let (Some(o), Some(nw)) = (w.oldest, w.newest) {
                    let window = f64::from(nw.ts.t.saturating_sub(o.t)).max(1.0);
                    samples.push(self.sample("coffer_oplog_window_seconds", window));
                    samples.push(self.sample("coffer_oplog_headroom_ratio", lag / window));
                }
            }
        }
        samples
    }

    fn sample(&self, name: &'static str, value: f64) -> Sample {
        Sample {
            name,
            labels: self.labels.clone(),
            value,
        }
    }
}
