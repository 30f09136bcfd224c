//! What a run leaves behind for operators: a line in the audit log and the
//! Prometheus textfile metrics, when the config asks for them
//! (`audit-log = "…"`, `metrics-file = "…"` at its top level).
//!
//! Operations note what they did on the context's [`Recorder`]
//! ([`Recorder::note`], [`Recorder::metric`]), which hands them to an
//! [`Observer`]. The front end picks the observer: the CLI's is a
//! [`Record`], written with [`finish`] after the command ended, whatever
//! its result; a daemon may send them elsewhere. Neither ever holds a secret value: notes are ids,
//! names, counts and sizes, and errors never carry secrets.
//!
//! - **Audit log**: one JSON object per line (`time`, `user`, `uid`,
//!   `host`, `command`, `result`, `exit`, `seconds`, `error`, and the
//!   command's notes such as `job`, `snapshot`, `sinks`), appended with
//!   `O_APPEND` to a 0600 file and fsynced; never rewritten.
//! - **Metrics**: the node_exporter textfile-collector convention: the whole
//!   file is rewritten through a temp file and a rename, keeping the
//!   samples of earlier runs (read back with `prometheus-parse`) and
//!   replacing those this run measured.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use crate::config::Config;

/// Gets what a run did: notes for the audit log, metric samples. Neither
/// ever holds a secret value.
pub trait Observer: Send + Sync {
    /// `key = value` (an id, a name, a count, a size).
    fn note(&self, key: &str, value: Value);
    /// One metric sample.
    fn metric(&self, sample: Sample);
}

/// The observer of a run, as operations use it.
#[derive(Clone)]
pub struct Recorder(Arc<dyn Observer>);

impl Recorder {
    /// Reports to `observer`.
    pub fn new(observer: Arc<dyn Observer>) -> Recorder {
        Recorder(observer)
    }

    /// Notes `key = value` for the audit log (never a secret).
    pub fn note(&self, key: &str, value: impl Into<Value>) {
        self.0.note(key, value.into());
    }

    /// Records a metric sample.
    pub fn metric(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.0.metric(Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        });
    }
}

/// How a command ended, for its audit line.
#[derive(Debug, Clone)]
pub struct Ending {
    /// `ok`, `failed`, `partial` or `checks-failed`.
    pub result: &'static str,
    /// Its exit code.
    pub exit: u8,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// One metric sample a command measured.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// What a command noted for the audit log and the metrics.
#[derive(Debug, Default)]
pub struct Record {
    notes: Mutex<Map<String, Value>>,
    samples: Mutex<Vec<Sample>>,
}

impl Observer for Record {
    fn note(&self, key: &str, value: Value) {
        self.notes.lock().expect("notes").insert(key.to_string(), value);
    }

    fn metric(&self, sample: Sample) {
        self.samples.lock().expect("samples").push(sample);
    }
}

/// The metrics coffer writes: name, type, help.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "coffer_oplog_last_archived_timestamp_seconds",
        "gauge",
        "Time of the newest oplog entry the follower archived (its slice stored on every required sink).",
    ),
    (
        "coffer_oplog_lag_seconds",
        "gauge",
        "Newest majority-committed oplog write minus the newest archived entry.",
    ),
    (
        "coffer_oplog_window_seconds",
        "gauge",
        "Time between the oldest and the newest entry of the server's oplog.",
    ),
    (
        "coffer_oplog_headroom_ratio",
        "gauge",
        "Lag divided by the oplog window: at 1 the oplog rolls over before it is archived (a gap).",
    ),
    (
        "coffer_oplog_gaps_total",
        "counter",
        "Breaks of the oplog chain the follower recorded since it started (rollover or rollback).",
    ),
    (
        "coffer_oplog_slices_written_total",
        "counter",
        "Oplog slices the follower stored since it started.",
    ),
    (
        "coffer_oplog_slices_failed_total",
        "counter",
        "Oplog slice writes that failed on a sink since the follower started (retried on required sinks).",
    ),
    (
        "coffer_oplog_restorable_from_timestamp_seconds",
        "gauge",
        "Start of the newest restorable point-in-time range on the sink.",
    ),
    (
        "coffer_oplog_restorable_to_timestamp_seconds",
        "gauge",
        "End of the newest restorable point-in-time range on the sink.",
    ),
    (
        "coffer_backup_last_run_timestamp_seconds",
        "gauge",
        "When the job's last backup ended (success or not).",
    ),
    (
        "coffer_backup_last_run_success",
        "gauge",
        "1 if the job's last backup stored its snapshot on every required sink, else 0.",
    ),
    (
        "coffer_backup_last_success_timestamp_seconds",
        "gauge",
        "When a backup of the job last stored a snapshot on the sink.",
    ),
    (
        "coffer_backup_last_duration_seconds",
        "gauge",
        "Wall time of the job's last backup.",
    ),
    (
        "coffer_backup_last_bytes_in",
        "gauge",
        "Bytes read from the job's sources by its last backup.",
    ),
    (
        "coffer_backup_last_bytes_out",
        "gauge",
        "Bytes of the encrypted snapshot the job's last backup stored on the sink.",
    ),
    (
        "coffer_snapshots",
        "gauge",
        "Snapshots on the sink after the last run that changed it.",
    ),
    (
        "coffer_drill_last_timestamp_seconds",
        "gauge",
        "When the job's last drill ended.",
    ),
    (
        "coffer_drill_last_passed",
        "gauge",
        "1 if the job's last drill passed every check, else 0.",
    ),
    (
        "coffer_drill_last_success_timestamp_seconds",
        "gauge",
        "When a drill of the job last passed.",
    ),
    (
        "coffer_drill_last_rto_seconds",
        "gauge",
        "Restore plus checks wall time of the job's last drill.",
    ),
    (
        "coffer_verify_last_timestamp_seconds",
        "gauge",
        "When snapshots on the sink were last verified.",
    ),
    (
        "coffer_verify_coverage_ratio",
        "gauge",
        "Share of the sink's snapshots the current verify --sample cycle has covered.",
    ),
];

/// Writes the audit line and the metrics of a finished command, if the
/// config asks for them. Failing to write them is reported on stderr and
/// never changes the command's result.
pub fn finish(config: Option<&Config>, record: &Record, command: &str, ending: &Ending, seconds: f64) {
    let Some(config) = config else { return };
    if let Some(path) = &config.audit_log {
        let line = audit_line(record, command, ending, seconds);
        if let Err(e) = append(path, &line) {
            eprintln!("warning: cannot append to the audit log {}: {e}", path.display());
        }
    }
    if let Some(path) = &config.metrics_file {
        let samples = record.samples.lock().expect("samples").clone();
        if !samples.is_empty()
            && let Err(e) = write_metrics(path, &samples)
        {
            eprintln!("warning: cannot write the metrics file {}: {e}", path.display());
        }
    }
}

fn user() -> (String, u32) {
    // SAFETY: getuid cannot fail; getpwuid returns a pointer to static
    // storage or null, read at once.
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        let name = if pw.is_null() || (*pw).pw_name.is_null() {
            std::env::var("USER").unwrap_or_else(|_| uid.to_string())
        } else {
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned()
        };
        (name, uid)
    }
}

fn audit_line(record: &Record, command: &str, ending: &Ending, seconds: f64) -> Value {
    let (user, uid) = user();
    let (outcome, exit, error) = (ending.result, ending.exit, ending.error.clone());
    let mut line = json!({
        "time": jiff::Timestamp::now().to_string(),
        "user": user,
        "uid": uid,
        "host": coffer_core::format::hostname(),
        "command": command,
        "result": outcome,
        "exit": exit,
        "seconds": (seconds * 1000.0).round() / 1000.0,
    });
    if let Some(e) = error {
        line["error"] = json!(e);
    }
    for (k, v) in record.notes.lock().expect("notes").iter() {
        line[k] = v.clone();
    }
    line
}

fn append(path: &Path, line: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Never through a symlink planted at its path (O_NOFOLLOW: ELOOP).
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("it is a symlink; coffer never writes through one"),
            _ => e,
        })?;
    // One write per line: appends of concurrent runs never interleave.
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_all()
}

/// `name{a="x",b="y"}` with the labels sorted.
fn series_key(name: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
            )
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Writes `samples` to the config's metrics file now (a long-running
/// command: the follower), keeping the other samples.
pub fn write_samples(config: &Config, samples: &[Sample]) {
    if let Some(path) = &config.metrics_file
        && let Err(e) = write_metrics(path, samples)
    {
        tracing::warn!("cannot write the metrics file {}: {e}", path.display());
    }
}

/// The samples of a metrics file as this module writes it, as `(metric,
/// series key, value)`: `name{labels} value` lines (the key is the text
/// before the value, which [`series_key`] makes the same way), comments
/// and lines it did not write skipped.
fn read_series(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let metric = key.split('{').next()?;
        Some((metric, key, value.parse().ok()?))
    })
}

fn write_metrics(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    // name → series → value: the earlier runs' samples, then this run's.
    let mut all: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for (metric, key, value) in read_series(&text) {
            if METRICS.iter().any(|(n, _, _)| *n == metric) {
                all.entry(metric.to_string())
                    .or_default()
                    .insert(key.to_string(), value);
            }
        }
    }
    for s in samples {
        let labels: BTreeMap<String, String> =
            s.labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        all.entry(s.name.to_string())
            .or_default()
            .insert(series_key(s.name, &labels), s.value);
    }
    let mut out = String::new();
    for (name, kind, help) in METRICS {
        let Some(series) = all.get(*name) else { continue };
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (key, value) in series {
            out.push_str(&format!("{key} {value}\n"));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // The collector must never read a half-written file: temp + rename.
    let mut temp = tempfile::Builder::new()
        .prefix(".coffer-metrics-")
        .tempfile_in(dir)?;
    temp.write_all(out.as_bytes())?;
    temp.as_file().sync_all()?;
    temp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_earlier_series_and_replace_measured_ones() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("coffer.prom");
        let s = |name, job: &str, value| Sample {
            name,
            labels: vec![("job", job.to_string())],
            value,
        };
        write_metrics(&path, &[s("coffer_backup_last_duration_seconds", "a", 1.5)]).unwrap();
        write_metrics(
            &path,
            &[
                s("coffer_backup_last_duration_seconds", "b", 2.0),
                s("coffer_drill_last_passed", "a", 1.0),
            ],
        )
        .unwrap();
        write_metrics(&path, &[s("coffer_backup_last_duration_seconds", "a", 3.0)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("coffer_backup_last_duration_seconds{job=\"a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("coffer_backup_last_duration_seconds{job=\"b\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE coffer_drill_last_passed gauge\ncoffer_drill_last_passed{job=\"a\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# HELP coffer_backup_last_duration_seconds").count(),
            1
        );
        // Valid exposition format, as the collector reads it.
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        assert_eq!(parsed.samples.len(), 3);
        assert_eq!(read_series(&text).count(), 3);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
