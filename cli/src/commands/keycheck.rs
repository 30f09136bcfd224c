//! `coffer keycheck`: the key-escrow drill. Proves that each identity file
//! still opens the newest snapshot of each job, without restoring: the age
//! header and the first payload chunk (its authentication tag checked) of
//! the object, read from the sink's first bytes.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use coffer_core::ops::{ErrorInfo, KeycheckReport, KeycheckRow};
use coffer_core::{Catalog, CatalogEntry, Error, ErrorKind, Identities, Result, Sink, SnapshotState};
use futures::StreamExt;

use crate::ctx::{CmdResult, Ctx, SinkSel};
use crate::output::{print_json, printable};

/// The first bytes of an object read: the age header and a whole first
/// payload chunk (64 KiB and its 16-byte tag).
const PREFIX: usize = 128 << 10;

#[derive(Debug, Args)]
pub struct KeycheckArgs {
    #[command(flatten)]
    pub sink: SinkSel,
    /// An identity file to check (age identity or SSH private key); each
    /// is checked on its own; repeatable.
    #[arg(long = "identity", short = 'i', value_name = "FILE", required = true)]
    pub identities: Vec<PathBuf>,
}

/// One identity against one job's newest snapshot.
struct Check {
    sink: String,
    job: String,
    snapshot: String,
    identity: String,
    result: Result<()>,
}

pub(crate) async fn exec(ctx: &Ctx, a: KeycheckArgs) -> CmdResult {
    let config = ctx.config()?;
    let sinks = ctx.sinks_of(&a.sink, config.as_ref())?;
    // Every file must load: a key that no longer parses is the first thing
    // an escrow drill must catch.
    let mut keys = Vec::new();
    for f in &a.identities {
        let mut ids = Identities::new();
        ids.add_file(f)?;
        keys.push((f.display().to_string(), std::sync::Arc::new(ids)));
    }
    let mut checks = Vec::new();
    for (name, sink) in &sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        for entry in newest_per_job(&cat) {
            let prefix = read_prefix(sink.as_ref(), entry).await;
            for (identity, ids) in &keys {
                let result = match &prefix {
                    Ok(bytes) => opens(bytes.clone(), ids.clone()).await,
                    Err(e) => Err(Error::new(e.kind(), e.to_string())),
                };
                checks.push(Check {
                    sink: name.clone(),
                    job: entry.index.job.clone(),
                    snapshot: entry.index.id.to_string(),
                    identity: identity.clone(),
                    result,
                });
            }
        }
    }
    report(ctx, &checks)
}

/// The newest complete snapshot of each job.
fn newest_per_job(cat: &Catalog) -> Vec<&CatalogEntry> {
    let mut newest: std::collections::BTreeMap<&str, &CatalogEntry> = Default::default();
    // Oldest first: the last one seen of a job is its newest.
    for e in cat
        .snapshots
        .iter()
        .filter(|e| e.state == SnapshotState::Complete)
    {
        newest.insert(e.index.job.as_str(), e);
    }
    newest.into_values().collect()
}

/// The first [`PREFIX`] bytes of the snapshot's object (a chunked
/// snapshot's: its first chunk, an age file of its own).
async fn read_prefix(sink: &dyn Sink, entry: &CatalogEntry) -> Result<Vec<u8>> {
    if entry.index.chunks.is_some() {
        return Ok(coffer_core::chunked::first_chunk(sink, &entry.index)
            .await?
            .to_vec());
    }
    let mut stream = sink.get(&entry.index.object.key).await?;
    let mut out = Vec::with_capacity(PREFIX);
    while out.len() < PREFIX {
        match stream.next().await {
            Some(chunk) => out.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok(out)
}

/// Whether `ids` decrypts the header and the first payload chunk.
async fn opens(prefix: Vec<u8>, ids: std::sync::Arc<Identities>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut plain = ids.decrypt(&prefix[..])?;
        let mut first = [0u8; 1];
        plain
            .read(&mut first)
            .map(|_| ())
            .map_err(|e| Error::io("decrypting the first chunk", e))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?
}

fn report(ctx: &Ctx, checks: &[Check]) -> CmdResult {
    let failed = checks.iter().filter(|c| c.result.is_err()).count();
    if ctx.json {
        print_json(&KeycheckReport {
            passed: failed == 0,
            checks: checks
                .iter()
                .map(|c| KeycheckRow {
                    sink: c.sink.clone(),
                    job: c.job.clone(),
                    snapshot: c.snapshot.clone(),
                    identity: c.identity.clone(),
                    ok: c.result.is_ok(),
                    error: c.result.as_ref().err().map(ErrorInfo::from),
                })
                .collect(),
        });
    } else {
        for c in checks {
            let verdict = match &c.result {
                Ok(()) => "opens".to_string(),
                Err(e) => format!("FAILED: {e}"),
            };
            println!(
                "{} job {} snapshot {}: {} {verdict}",
                c.sink,
                c.job,
                c.snapshot,
                printable(&c.identity)
            );
        }
    }
    if checks.is_empty() {
        return Err(
            Error::new(ErrorKind::NotFound, "no complete snapshot to check a key against")
                .with_hint("run `coffer backup` first, or name the sink holding the snapshots with --sink")
                .into(),
        );
    }
    if failed > 0 {
        // The worst: a corrupt object over a key that opens nothing.
        let worst = checks
            .iter()
            .filter_map(|c| c.result.as_ref().err())
            .max_by_key(|e| e.kind() == ErrorKind::Integrity)
            .expect("one failed");
        return Err(Error::new(
            worst.kind(),
            format!("{failed} of {} key checks failed", checks.len()),
        )
        .with_hint("an identity that opens nothing is lost or was rotated: find the key the jobs encrypt to (`coffer show ID` lists recipient fingerprints) before you need it")
        .into());
    }
    Ok(())
}
