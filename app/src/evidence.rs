//! Drill evidence: the report of one drill (JSON for machines, Markdown
//! for an auditor) and the drill history kept on each sink under
//! `drills/` (and, with `--report DIR`, in a local folder).
//!
//! History objects are written create-only next to the snapshots; they
//! hold no secret (check figures are counts, times and URLs without
//! passwords), and the catalog ignores them (`drills/` keys are never
//! snapshot indexes).

use std::fmt::Write as _;
use std::sync::Arc;

use coffer_core::{Bytes, PutOptions, Result, Sink, SinkExt};
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use coffer_core::ops::CheckResult;

/// The folder of the drill history on a sink.
pub const DRILLS_PREFIX: &str = "drills/";
/// Format tag of a drill report.
pub const DRILL_FORMAT: &str = "coffer-drill/1";

/// Where a drill restored to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Scratch {
    /// The temporary directory of files, `.env` secrets and command outputs.
    pub dir: String,
    /// The scratch place of each source kind that has one of its own, as
    /// its plugin describes it: `databases` (source → scratch, MongoDB),
    /// `k8s_namespace` (Kubernetes) …
    #[serde(flatten)]
    pub places: serde_json::Map<String, serde_json::Value>,
    /// Each of those places in words, a line each, e.g. ``database `app`
    /// → `app-drill-x` `` (the Markdown report's lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub described: Vec<String>,
    /// Whether they were kept (`--keep`) or removed.
    pub kept: bool,
    /// What removing them failed on, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
}

/// The `--json` output of `coffer drill`: the drill's evidence and
/// whether it was stored on the sink.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DrillOutput {
    /// The evidence, as stored in `drills/` on the sink.
    #[serde(flatten)]
    pub report: DrillReport,
    /// The evidence was written to the sink.
    pub stored: bool,
}

/// One drill.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DrillReport {
    /// [`DRILL_FORMAT`].
    pub format: String,
    /// `<start time>-<snapshot id>`: the history object's name.
    pub drill: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub host: String,
    pub coffer_version: String,
    pub snapshot: String,
    pub job: String,
    pub sink: String,
    pub snapshot_time: Timestamp,
    /// `signed-trusted`, `signed-untrusted`, `unsigned`, …
    pub signature: String,
    pub signer: Option<String>,
    pub object_bytes: u64,
    pub plain_bytes: u64,
    pub files: usize,
    pub passed: bool,
    /// Restore plus checks, wall time.
    pub rto_seconds: f64,
    pub restore_seconds: f64,
    pub checks_seconds: f64,
    /// The snapshot's age when the drill started (a point-in-time drill:
    /// the target time's).
    pub rpo_seconds: f64,
    /// A point-in-time drill (`--to-time`, `--to-ts`): the oplog position
    /// restored to, from the snapshot plus its archived oplog slices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ts: Option<coffer_core::slices::LogPos>,
    /// The archived oplog slices replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<usize>,
    /// From an `audit` check: the window to reconcile by hand.
    #[serde(default)]
    pub audit_gap_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
    pub scratch: Scratch,
    /// A partial drill (`--only`): the snapshot's sources it did not
    /// restore. Such a drill never counts as the last passed one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

fn secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

impl DrillReport {
    /// `PASSED`, `FAILED`, or for a partial drill `PASSED (partial: … not
    /// drilled)`.
    pub fn verdict(&self) -> String {
        match (self.passed, self.left_out.is_empty()) {
            (false, _) => "FAILED".into(),
            (true, true) => "PASSED".into(),
            (true, false) => format!("PASSED (partial: {} not drilled)", self.left_out.join(", ")),
        }
    }

    /// A passed drill of every source of its snapshot.
    pub fn passed_whole(&self) -> bool {
        self.passed && self.left_out.is_empty()
    }

    /// The report for an auditor.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Restore drill {}: {}\n", self.drill, self.verdict());
        let _ = writeln!(md, "| | |\n|---|---|");
        for (k, v) in self.summary_rows() {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        self.write_checks(&mut md);
        self.write_scratch(&mut md);
        md
    }

    /// The rows of the report's summary table: label and value.
    fn summary_rows(&self) -> [(&'static str, String); 8] {
        [
            (
                "Snapshot",
                format!(
                    "`{}` (job `{}`, taken {})",
                    self.snapshot, self.job, self.snapshot_time
                ),
            ),
            ("Sink", format!("`{}`", self.sink)),
            ("Point in time", self.point_in_time()),
            (
                "Signature",
                match &self.signer {
                    Some(s) => format!("{} by `{s}`", self.signature),
                    None => self.signature.clone(),
                },
            ),
            (
                "Size",
                format!(
                    "{} encrypted, {} restored in {} files",
                    self.object_bytes, self.plain_bytes, self.files
                ),
            ),
            (
                "Drill",
                format!(
                    "{} → {} on `{}`, coffer {}",
                    self.started_at, self.finished_at, self.host, self.coffer_version
                ),
            ),
            (
                "RTO",
                format!(
                    "{} (restore {}, checks {})",
                    secs(self.rto_seconds),
                    secs(self.restore_seconds),
                    secs(self.checks_seconds)
                ),
            ),
            (
                "RPO",
                match self.audit_gap_seconds {
                    Some(gap) => format!("snapshot age {}, audit gap {}", secs(self.rpo_seconds), secs(gap)),
                    None => format!("snapshot age {}", secs(self.rpo_seconds)),
                },
            ),
        ]
    }

    /// The summary's point in time: the target of a point-in-time drill, else the snapshot's own.
    fn point_in_time(&self) -> String {
        match self.to_ts {
            Some(p) => format!(
                "{} (oplog `{p}`): the snapshot plus {} archived oplog slice(s)",
                p.time(),
                self.slices.unwrap_or(0)
            ),
            None => "the snapshot's own".to_string(),
        }
    }

    /// Appends the report's table of checks to `md`.
    fn write_checks(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Checks\n\n| result | check | target | figure | time |\n|---|---|---|---|---|"
        );
        for c in &self.checks {
            let mut figure = c.figure.replace('|', "\\|");
            if let (false, Some(h)) = (c.passed, &c.hint) {
                figure.push_str(&format!(" — *{}*", h.replace('|', "\\|")));
            }
            let _ = writeln!(
                md,
                "| {} | {} | `{}` | {} | {} |",
                if c.passed { "pass" } else { "**FAIL**" },
                c.kind,
                c.target,
                figure,
                secs(c.seconds)
            );
        }
    }

    /// Appends the report's scratch targets, and what became of them, to `md`.
    fn write_scratch(&self, md: &mut String) {
        let s = &self.scratch;
        let _ = writeln!(md, "\n## Scratch targets\n");
        let _ = writeln!(md, "- files: `{}`", s.dir);
        for line in &s.described {
            let _ = writeln!(md, "- {line}");
        }
        let fate = match (&s.cleanup_error, s.kept) {
            (Some(e), _) => format!("removing them failed: {e}"),
            (None, true) => "kept (--keep)".to_string(),
            (None, false) => "removed after the drill".to_string(),
        };
        let _ = writeln!(md, "- {fate}");
    }

    /// Appends the report (JSON and Markdown) to `sink`'s drill history.
    pub async fn append_to(&self, sink: &Arc<dyn Sink>) -> Result<()> {
        let base = format!("{DRILLS_PREFIX}{}", self.drill);
        let json = serde_json::to_vec_pretty(self).expect("json");
        sink.put_bytes(&format!("{base}.json"), Bytes::from(json), PutOptions::create())
            .await?;
        sink.put_bytes(
            &format!("{base}.md"),
            Bytes::from(self.markdown()),
            PutOptions::create(),
        )
        .await?;
        Ok(())
    }

    /// Writes the report into `dir` (`<drill>.json`, `<drill>.md`).
    pub fn write_to(&self, dir: &std::path::Path) -> Result<()> {
        let io =
            |e| coffer_core::Error::io(format!("cannot write the drill report into {}", dir.display()), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).expect("json");
        std::fs::write(dir.join(format!("{}.json", self.drill)), json).map_err(io)?;
        std::fs::write(dir.join(format!("{}.md", self.drill)), self.markdown()).map_err(io)?;
        Ok(())
    }
}

/// The drill history of `sink`, oldest first; unreadable reports are
/// returned as `(key, error)`.
pub async fn history(sink: &dyn Sink) -> Result<(Vec<DrillReport>, Vec<(String, String)>)> {
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for obj in sink.list(DRILLS_PREFIX).await? {
        if !obj.key.ends_with(".json") {
            continue;
        }
        let parsed = sink
            .get_bytes(&obj.key)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<DrillReport>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) if r.format == DRILL_FORMAT => reports.push(r),
            Ok(r) => unreadable.push((obj.key, format!("unknown format `{}`", r.format))),
            Err(e) => unreadable.push((obj.key, e)),
        }
    }
    reports.sort_by_key(|r| r.started_at);
    Ok((reports, unreadable))
}
