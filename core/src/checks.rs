//! What a plugin adds to the work after a restore: check kinds
//! (`[[job.NAME.checks]] kind = "…"`, run after `coffer restore`, by
//! `coffer drill` and by `coffer check`) and, for a source kind, where a
//! drill restores it and how the drill removes it again ([`DrillScratch`]).
//!
//! Core runs none of them: the application layer does, through the
//! [`crate::Registry`], so a source kind brought by a plugin gets its own
//! drill target, cleanup and checks without a change to core or the CLI.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use crate::ops::CheckResult;
use crate::{IndexSource, KindOptions, RestoreOptions, RestoreOutcome, Result};

/// What a check is run against.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckEnv<'a> {
    /// The restore the checks follow (`coffer restore`, a drill); `None`
    /// for `coffer check`, which checks a running service.
    pub restored: Option<&'a RestoreOutcome>,
    /// Places a drill renamed, per source kind: original → scratch name
    /// (MongoDB: a database → its scratch copy). A check of a restored
    /// place looks at the scratch one instead.
    pub renamed: Option<&'a BTreeMap<String, String>>,
    /// The restore options the run was given (`--mongo-uri`, `--opt
    /// KIND.NAME=VALUE`): a check that needs a server and names none uses
    /// the restore's.
    pub params: Option<&'a KindOptions>,
    /// When the snapshot was taken.
    pub snapshot_time: Option<jiff::Timestamp>,
}

impl CheckEnv<'_> {
    /// The restore option `name` of source kind `kind`, if the run was
    /// given it.
    pub fn param(&self, kind: &str, name: &str) -> Option<&str> {
        self.params?.get(kind, name)
    }

    /// The scratch name of `place` in a drill (itself otherwise).
    pub fn renamed<'p>(&'p self, place: &'p str) -> &'p str {
        self.renamed
            .and_then(|r| r.get(place))
            .map(String::as_str)
            .unwrap_or(place)
    }
}

/// One configured check.
#[async_trait::async_trait]
pub trait Check: Send + Sync + std::fmt::Debug {
    /// Its kind, as in the config (`http`, `mongo-counts` …).
    fn kind(&self) -> &str;

    /// Runs it. A check reports failure in its result (with a hint), never
    /// as an error: the other checks still run.
    async fn run(&self, env: &CheckEnv<'_>) -> CheckResult;
}

/// Builds checks of one kind from `[[job.NAME.checks]]` tables.
#[allow(clippy::wrong_self_convention)] // `from_*` builds from its argument, as the other factories do
pub trait CheckFactory: Send + Sync {
    /// The `kind` value, e.g. `mongo-counts`.
    fn kind(&self) -> &'static str;

    /// A check from its table (without `kind`); relative paths are
    /// resolved against `base_dir` (the config file's directory). Unknown
    /// keys are an error.
    fn from_config(&self, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Check>>;
}

/// The result of a check of `kind` on `target`; the hint is kept only
/// when it failed.
pub fn check_result(
    kind: &str,
    target: String,
    passed: bool,
    figure: String,
    hint: Option<&str>,
) -> CheckResult {
    CheckResult {
        kind: kind.to_string(),
        target,
        passed,
        figure,
        hint: if passed { None } else { hint.map(str::to_owned) },
        seconds: 0.0,
        details: serde_json::Value::Null,
    }
}

/// What a drill tells a source kind about itself, so the kind can pick
/// scratch places (see [`crate::SourceFactory::drill_scratch`]).
#[derive(Debug)]
pub struct ScratchRun<'a> {
    /// Unique to this drill (`<snapshot's random part>-<4 hex digits>`):
    /// names made from it do not collide with another drill's.
    pub run: &'a str,
    /// Appended to a name to make its scratch copy: the user's
    /// `--scratch-suffix`, else `-drill-<run>`. Never empty.
    pub suffix: &'a str,
    /// The source kind whose scratch place this is (its options are the
    /// ones [`DrillScratch::prepare`] sets).
    pub kind: &'a str,
    /// The snapshot's sources of this kind that the drill restores (their
    /// origins, in the encrypted bundle, reach [`DrillScratch::restored`]).
    pub sources: &'a [IndexSource],
    /// The restore options the user gave the drill, narrowed to this kind
    /// (e.g. `uri`: `run.options.text("uri")`).
    pub options: &'a RestoreOptions,
}

/// Where the job's checks look in a drill (see [`DrillScratch::checks_at`]).
#[derive(Debug, Default, Clone)]
pub struct ChecksAt {
    /// Original place → scratch place ([`CheckEnv::renamed`]).
    pub renamed: BTreeMap<String, String>,
    /// Restore options for the checks ([`CheckEnv::params`]).
    pub params: KindOptions,
}

/// What a drill's scratch place of one kind is, for its evidence.
#[derive(Debug, Default, Clone)]
pub struct ScratchEvidence {
    /// Fields of the report's `scratch` object (JSON), e.g. `databases`.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Lines of the Markdown report, e.g. ``database `app` → `app-drill-x` ``.
    pub lines: Vec<String>,
}

/// The scratch place of one source kind in a drill: where the drill's
/// restore of it goes (never a place the snapshot's sources live in), what
/// proves that restore complete, and how the drill removes it.
///
/// The drill calls, in order: [`DrillScratch::prepare`] before the
/// restore, [`DrillScratch::restored`] after it, [`DrillScratch::checks`]
/// and [`DrillScratch::checks_at`] for the checks, then
/// [`DrillScratch::cleanup`] (also when a signal ends the drill, from
/// another thread with a runtime of its own) unless `--keep`.
#[async_trait::async_trait]
pub trait DrillScratch: Send + Sync {
    /// Sets the restore options that send this kind's restore to scratch
    /// places (they are keyed by the kind's own option names).
    fn prepare(&self, opts: &mut RestoreOptions);

    /// After the restore: notes what it made there. `outcome` holds the
    /// reports of every restored source (this kind's are those named in
    /// [`ScratchRun::sources`]) and their origins
    /// (`outcome.summary.sources`). Not called when the restore failed,
    /// which leaves nothing behind.
    fn restored(&mut self, outcome: &RestoreOutcome);

    /// Checks that prove the scratch copy holds what the snapshot holds
    /// (MongoDB: every collection's count), run before the job's own.
    fn checks(&self) -> Vec<Arc<dyn Check>> {
        Vec::new()
    }

    /// What the scratch places change for the job's checks: the places
    /// renamed, and restore options they use (e.g. the server the scratch
    /// copy is on) where the drill was not given them.
    fn checks_at(&self, at: &mut ChecksAt) {
        let _ = at;
    }

    /// What the scratch place is, for the report.
    fn evidence(&self) -> ScratchEvidence;

    /// Removes what the drill made; `Err` says what is left, to remove by
    /// hand.
    async fn cleanup(&self) -> std::result::Result<(), String>;
}
