//! `coffer verify`: size and SHA-256 without a key; `--deep` decrypts and
//! checks every file; `--all` and `--sample` cover many snapshots.

use std::sync::Arc;

use clap::Args;
use coffer_core::ops::sample::Sample;
use coffer_core::ops::{Pick, SampleProgress, VerifyRequest, VerifyResult, verify_sink};
use coffer_core::{Error, ErrorKind, Progress, config_error};

use crate::Failure;
use crate::ctx::{CmdResult, Ctx, ReadSel, Reading, identities};
use crate::output::{Spinner, print_json};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshot id, prefix or `latest` (default: latest).
    pub snapshot: Option<String>,
    /// Verify every snapshot on the sink.
    #[arg(long, conflicts_with = "snapshot")]
    pub all: bool,
    /// Also decrypt and check every file against SHA256SUMS and the manifest.
    #[arg(long)]
    pub deep: bool,
    /// Check a rotating subset per run (`10%` or a count like `3`): the
    /// snapshots this cycle has not covered yet, oldest first; the cycle's
    /// coverage is kept in `coffer-verify-state.json` on each sink.
    #[arg(long, value_name = "N%|N", conflicts_with_all = ["all", "snapshot"])]
    pub sample: Option<Sample>,
    #[command(flatten)]
    pub read: ReadSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: VerifyArgs) -> CmdResult {
    let Reading { sinks, trust, .. } = ctx.read(&a.read)?;
    let identities = if a.deep {
        let ids = identities(&a.read.keys)?;
        if ids.is_empty() {
            return Err(config_error("--deep needs a key to decrypt")
                .with_hint("add --identity FILE or --passphrase")
                .into());
        }
        Some(Arc::new(ids))
    } else {
        None
    };
    let pick = match (a.sample, a.all) {
        (Some(size), _) => Pick::Sample(size),
        (None, true) => Pick::All,
        (None, false) => Pick::One(a.snapshot.clone().unwrap_or_else(|| "latest".into())),
    };
    let progress = Arc::new(Progress::default());
    let shown = Spinner::start("verify", progress.clone(), ctx.quiet);
    let req = VerifyRequest {
        pick,
        identities,
        trusted: &trust,
        registry: &ctx.registry,
        progress,
    };
    let mut tally = Tally::default();
    let mut results = Vec::new();
    for (name, sink) in &sinks {
        let mut each = |r: &VerifyResult, e: Option<&Error>| tally.add(ctx, &shown, r, e);
        let done = verify_sink(name, sink.as_ref(), &req, &mut each).await;
        let done = done.map_err(|e| e.prefix(format!("sink `{name}`")))?;
        record(ctx, &shown, name, [done.sample.as_ref(), done.packs.as_ref()]);
        results.extend(done.results);
    }
    shown.finish();
    if ctx.json {
        print_json(&results);
    }
    tally.finish()
}

/// Failures by kind: integrity failures give exit 3; any other failure
/// (unreachable sink, permission) is reported as that error instead; a
/// snapshot no key opens does not stop the others.
#[derive(Default)]
struct Tally {
    failed: usize,
    other: Option<Error>,
    no_key: Vec<String>,
}

impl Tally {
    /// Counts one result and prints it (unless --json).
    fn add(&mut self, ctx: &Ctx, shown: &Spinner, r: &VerifyResult, e: Option<&Error>) {
        match e.map(Error::kind) {
            Some(ErrorKind::Integrity) => self.failed += 1,
            Some(ErrorKind::Decryption) => self.no_key.push(r.id.clone()),
            Some(kind) if self.other.is_none() => {
                self.other = e.map(|e| Error::new(kind, e.to_string()));
            }
            _ => {}
        }
        if ctx.json {
            return;
        }
        let (sink, id) = (&r.sink, &r.id);
        let by_packs = r.sample.as_ref().is_some_and(|s| s.unit == "packs");
        shown.println(&match (e, r.files_checked) {
            // A sampled chunked snapshot: what this run read of it.
            (None, None) if by_packs => format!(
                "{sink} {id}: ok (chunk list matches the index, every pack is there; its chunks in this run's \
                 share of the packs match)"
            ),
            (None, None) => format!("{sink} {id}: ok (size and SHA-256 match the index)"),
            (None, Some(n)) => format!("{sink} {id}: ok (decrypted, {n} files match SHA256SUMS)"),
            (Some(e), _) if e.kind() == ErrorKind::Decryption => format!("{sink} {id}: NO KEY: {e}"),
            (Some(e), _) => format!("{sink} {id}: FAILED: {e}"),
        });
    }

    fn finish(self) -> CmdResult {
        if let Some(e) = self.other {
            return Err(e.into());
        }
        if self.failed > 0 {
            return Err(Failure::Integrity(format!(
                "{} snapshot(s) failed verification",
                self.failed
            )));
        }
        if !self.no_key.is_empty() {
            return Err(Error::new(
                ErrorKind::Decryption,
                format!(
                "no key given decrypts {} snapshot(s): {}",
                self.no_key.len(),
                self.no_key.join(", ")
            ),
        )
        .with_hint("pass the identity (or passphrase) of those snapshots' recipients; `coffer show ID` lists their fingerprints")
        .into());
        }
        Ok(())
    }
}

/// The sink's metrics, and where the sample rotations (of snapshots, of
/// chunked snapshots' packs) stand; the coverage metric is the lower.
fn record(ctx: &Ctx, shown: &Spinner, name: &str, rotations: [Option<&SampleProgress>; 2]) {
    ctx.record.metric(
        "coffer_verify_last_timestamp_seconds",
        &[("sink", name)],
        jiff::Timestamp::now().as_second() as f64,
    );
    let mut coverage: Option<f64> = None;
    for s in rotations.into_iter().flatten().filter(|s| s.of > 0) {
        let ratio = s.covered as f64 / s.of as f64;
        coverage = Some(coverage.map_or(ratio, |c| c.min(ratio)));
        if !ctx.json {
            let complete = if s.covered == s.of { " (complete)" } else { "" };
            shown.println(&format!(
                "{name}: sample cycle {}: {} of {} {} checked so far{complete}",
                s.cycle, s.covered, s.of, s.unit
            ));
        }
    }
    if let Some(ratio) = coverage {
        ctx.record
            .metric("coffer_verify_coverage_ratio", &[("sink", name)], ratio);
    }
}
