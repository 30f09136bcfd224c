//! `coffer verify`: size and SHA-256 without a key; `--deep` decrypts and
//! checks every file; `--all` and `--sample` cover many snapshots.

use std::sync::Arc;

use clap::Args;
use coffer_core::ops::{ErrorInfo, SampleProgress, VerifyResult};
use coffer_core::{Catalog, CatalogEntry, Error, ErrorKind, Progress, config_error};

use crate::Failure;
use crate::ctx::{CmdResult, Ctx, ReadSel, Reading, deep_check, identities};
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
    pub sample: Option<crate::sample::Sample>,
    #[command(flatten)]
    pub read: ReadSel,
}

pub(crate) async fn exec(ctx: &Ctx, a: VerifyArgs) -> CmdResult {
    let Reading { sinks, trust, .. } = ctx.reading(&a.read)?;
    let ids = if a.deep {
        Some(Arc::new(identities(&a.read.keys)?))
    } else {
        None
    };
    if let Some(ids) = &ids
        && ids.is_empty()
    {
        return Err(config_error("--deep needs a key to decrypt")
            .with_hint("add --identity FILE or --passphrase")
            .into());
    }
    let mut results = Vec::new();
    let mut failed = 0;
    // Integrity failures give exit 3; any other failure (unreachable sink,
    // permission) is reported as that error instead.
    let mut other_error: Option<Error> = None;
    let mut no_key: Vec<String> = Vec::new();
    for (name, sink) in &sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        if a.all {
            for (key, err) in &cat.unreadable {
                failed += 1;
                if !ctx.json {
                    println!("{name} {key}: FAILED: unreadable index: {err}");
                }
                results.push(VerifyResult {
                    sink: name.clone(),
                    id: key.clone(),
                    ok: false,
                    deep: a.deep,
                    files_checked: None,
                    error: Some(ErrorInfo {
                        kind: ErrorKind::Integrity.as_str().to_string(),
                        message: format!("unreadable index: {err}"),
                        hint: None,
                    }),
                    sample: None,
                });
            }
        }
        let mut sampled = None;
        let chosen: Vec<CatalogEntry> = if let Some(sample) = a.sample {
            let state = crate::sample::load(sink.as_ref())
                .await
                .map_err(|e| e.prefix(format!("sink `{name}`")))?;
            let all: Vec<String> = cat.snapshots.iter().map(|e| e.index.id.to_string()).collect();
            let (ids, next) = crate::sample::pick(&all, &state, sample);
            sampled = Some((next, all.len()));
            cat.snapshots
                .iter()
                .filter(|e| ids.contains(&e.index.id.to_string()))
                .cloned()
                .collect()
        } else if a.all {
            cat.snapshots.clone()
        } else {
            vec![cat.resolve(a.snapshot.as_deref().unwrap_or("latest"))?.clone()]
        };
        for entry in chosen {
            let index = entry.index.clone();
            let check = async {
                // The signature first: nothing is fetched for a refused one.
                crate::ctx::enforce(&trust, &entry)?;
                match &ids {
                    None => {
                        let progress = Arc::new(Progress::default());
                        let shown = Spinner::start("verify", progress.clone(), ctx.quiet);
                        let r =
                            coffer_core::verify_object(sink.as_ref(), &index, None, Some(&progress)).await;
                        shown.finish();
                        r.map(|_| None)
                    }
                    Some(ids) => deep_check(ctx, "verify", sink.as_ref(), &index, ids.clone())
                        .await
                        .map(|s| Some(s.files_checked)),
                }
            };
            let r = check.await;
            if let Err(e) = &r {
                match e.kind() {
                    ErrorKind::Integrity => failed += 1,
                    // No key for this one: the others are still checked.
                    ErrorKind::Decryption => no_key.push(index.id.to_string()),
                    _ if other_error.is_none() => other_error = Some(Error::new(e.kind(), e.to_string())),
                    _ => {}
                }
            }
            if !ctx.json {
                match &r {
                    Ok(None) => println!("{} {}: ok (size and SHA-256 match the index)", name, index.id),
                    Ok(Some(n)) => println!(
                        "{} {}: ok (decrypted, {n} files match SHA256SUMS)",
                        name, index.id
                    ),
                    Err(e) if e.kind() == ErrorKind::Decryption => {
                        println!("{} {}: NO KEY: {e}", name, index.id)
                    }
                    Err(e) => println!("{} {}: FAILED: {e}", name, index.id),
                }
            }
            results.push(VerifyResult {
                sink: name.clone(),
                id: index.id.to_string(),
                ok: r.is_ok(),
                deep: a.deep,
                files_checked: r.as_ref().ok().copied().flatten(),
                error: r.as_ref().err().map(ErrorInfo::from),
                sample: sampled.as_ref().map(|(state, total)| SampleProgress {
                    cycle: state.cycle,
                    covered: state.covered.len(),
                    of: *total,
                }),
            });
        }
        ctx.record.metric(
            "coffer_verify_last_timestamp_seconds",
            &[("sink", name.as_str())],
            jiff::Timestamp::now().as_second() as f64,
        );
        if let Some((state, total)) = &sampled
            && *total > 0
        {
            let ratio = state.covered.len() as f64 / *total as f64;
            ctx.record
                .metric("coffer_verify_coverage_ratio", &[("sink", name.as_str())], ratio);
        }
        if let Some((state, total)) = sampled {
            crate::sample::save(sink.as_ref(), &state).await;
            if !ctx.json {
                println!(
                    "{name}: sample cycle {}: {} of {total} snapshots checked so far{}",
                    state.cycle,
                    state.covered.len(),
                    if state.covered.len() == total {
                        " (complete)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if ctx.json {
        print_json(&results);
    }
    if let Some(e) = other_error {
        return Err(e.into());
    }
    if failed > 0 {
        return Err(Failure::Integrity(format!(
            "{failed} snapshot(s) failed verification"
        )));
    }
    if !no_key.is_empty() {
        return Err(Error::new(
            ErrorKind::Decryption,
            format!(
                "no key given decrypts {} snapshot(s): {}",
                no_key.len(),
                no_key.join(", ")
            ),
        )
        .with_hint("pass the identity (or passphrase) of those snapshots' recipients; `coffer show ID` lists their fingerprints")
        .into());
    }
    Ok(())
}
