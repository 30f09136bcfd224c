//! `verify`: each chosen snapshot's object against its index (size and
//! SHA-256, no key), or with a key the whole bundle (every file against
//! `SHA256SUMS` and the manifest, plus each source kind's own
//! [`EntryCheck`]); a rotating sample keeps its coverage on the sink.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sample::{self, Sample};
use super::{ErrorInfo, SampleProgress, VerifyResult};
use crate::{
    BundleSummary, BundleVisitor, Catalog, CatalogEntry, EntryCheck, Error, ErrorKind, Identities, Index,
    Progress, ProgressRead, Registry, RestoreEntry, Result, Sink, SourcesFile, TrustedSigners,
};

/// Which snapshots of a sink to verify.
#[derive(Debug, Clone)]
pub enum Pick {
    /// `latest`, an id or a unique prefix.
    One(String),
    /// Every snapshot, and every unreadable index as a failure.
    All,
    /// The next share of a rotation that covers every snapshot over
    /// several runs (state in [`sample::STATE_KEY`] on the sink).
    Sample(Sample),
}

/// What to verify and how.
pub struct VerifyRequest<'a> {
    /// Which snapshots.
    pub pick: Pick,
    /// With keys: decrypt and check everything (`--deep`).
    pub identities: Option<Arc<Identities>>,
    /// Signatures are judged first: nothing is fetched for a refused one.
    pub trusted: &'a TrustedSigners,
    /// The source kinds, for their deep checks.
    pub registry: &'a Registry,
    /// Fed as objects are read (phases `verify`, `decrypt`).
    pub progress: Arc<Progress>,
}

/// What verify found on one sink.
#[derive(Debug)]
pub struct SinkVerification {
    /// One per snapshot checked (and per unreadable index with
    /// [`Pick::All`]), in order.
    pub results: Vec<VerifyResult>,
    /// [`Pick::Sample`]: the rotation after this run.
    pub sample: Option<SampleProgress>,
    /// [`Pick::Sample`] without keys on a sink with chunked snapshots:
    /// the rotation over their packs after this run.
    pub packs: Option<SampleProgress>,
}

/// Verifies the snapshots `req` picks on `sink` (named `name`), calling
/// `each` with every result and its error as it is known. Fails only when
/// the sink cannot be listed or the pick names no snapshot; a snapshot
/// that fails is a result.
pub async fn verify_sink(
    name: &str,
    sink: &dyn Sink,
    req: &VerifyRequest<'_>,
    each: &mut (dyn FnMut(&VerifyResult, Option<&Error>) + Send),
) -> Result<SinkVerification> {
    let cat = Catalog::load(sink).await?;
    let mut out = SinkVerification {
        results: Vec::new(),
        sample: None,
        packs: None,
    };
    let deep = req.identities.is_some();
    // Without keys, chunked snapshots are sampled by their packs.
    let by_packs = matches!(req.pick, Pick::Sample(_)) && !deep;
    if matches!(req.pick, Pick::All) {
        for (key, err) in &cat.unreadable {
            let r = Err(Error::new(
                ErrorKind::Integrity,
                format!("unreadable index: {err}"),
            ));
            let shown = result(name, key, deep, &r, None);
            each(&shown, r.as_ref().err());
            out.results.push(shown);
        }
    }
    let (chosen, mut next) = pick(sink, &cat, &req.pick, by_packs).await?;
    let progress = next.as_ref().map(|(state, total)| SampleProgress {
        unit: "snapshots".into(),
        cycle: state.cycle,
        covered: state.covered.len(),
        of: *total,
    });
    for entry in chosen {
        let r = verify_one(sink, &entry, req).await;
        let shown = result(name, entry.index.id.as_str(), deep, &r, progress.clone());
        each(&shown, r.as_ref().err());
        out.results.push(shown);
    }
    if let (true, Pick::Sample(size), Some((state, _))) = (by_packs, &req.pick, next.as_mut()) {
        out.packs = sample_packs(name, sink, &cat, req, *size, state, each, &mut out.results).await?;
    }
    if let Some((state, _)) = next {
        sample::save(sink, &state).await;
    }
    out.sample = progress;
    Ok(out)
}

/// A sampled check without a key of the chunked snapshots: every chunk
/// list against its index and every chunk's pack present and long enough,
/// and the ciphertext of every chunk in the next share of the packs (the
/// rotation in `state.packs`). A damaged pack fails every snapshot with a
/// chunk in it. `None` when the sink has no chunked snapshot.
#[allow(clippy::too_many_arguments)]
async fn sample_packs(
    name: &str,
    sink: &dyn Sink,
    cat: &Catalog,
    req: &VerifyRequest<'_>,
    size: Sample,
    state: &mut sample::State,
    each: &mut (dyn FnMut(&VerifyResult, Option<&Error>) + Send),
    results: &mut Vec<VerifyResult>,
) -> Result<Option<SampleProgress>> {
    let chunked: Vec<&CatalogEntry> = cat
        .snapshots
        .iter()
        .filter(|e| e.index.chunks.is_some())
        .collect();
    if chunked.is_empty() {
        return Ok(None);
    }
    let mut found: BTreeMap<String, Result<()>> = BTreeMap::new();
    let mut trusted: Vec<&crate::Index> = Vec::new();
    for e in &chunked {
        match req.trusted.enforce(e.index.id.as_str(), &e.signature) {
            Ok(_) => trusted.push(&e.index),
            Err(err) => {
                found.insert(e.index.id.to_string(), Err(err));
            }
        }
    }
    let packs_before = state.packs.take().map(|b| *b).unwrap_or_default();
    let mut packs_after = packs_before.clone();
    let checked = crate::chunked::verify_sampled(
        sink,
        &trusted,
        |all| {
            let all: Vec<String> = all.iter().cloned().collect();
            let (chosen, next) = sample::pick(&all, &packs_before, size);
            packs_after = next;
            chosen.into_iter().collect()
        },
        Some(&req.progress),
    )
    .await?;
    let total = checked.packs;
    for (index, r) in trusted.iter().zip(checked.results) {
        found.insert(index.id.to_string(), r);
    }
    let progress = SampleProgress {
        unit: "packs".into(),
        cycle: packs_after.cycle,
        covered: packs_after.covered.len(),
        of: total,
    };
    state.packs = Some(Box::new(packs_after));
    // In the catalog's order, oldest first, as the other results.
    for entry in chunked {
        let r = found
            .remove(entry.index.id.as_str())
            .expect("every chunked snapshot has a result")
            .map(|()| None);
        let shown = result(name, entry.index.id.as_str(), false, &r, Some(progress.clone()));
        each(&shown, r.as_ref().err());
        results.push(shown);
    }
    Ok(Some(progress))
}

/// The snapshots to check, oldest first, and for a sample the rotation
/// state after checking them (with the number of snapshots).
/// With `by_packs`, a sample rotates over the bundles only (the chunked
/// snapshots are sampled by their packs).
async fn pick(
    sink: &dyn Sink,
    cat: &Catalog,
    pick: &Pick,
    by_packs: bool,
) -> Result<(Vec<CatalogEntry>, Option<(sample::State, usize)>)> {
    match pick {
        Pick::One(spec) => Ok((vec![cat.resolve(spec)?.clone()], None)),
        Pick::All => Ok((cat.snapshots.clone(), None)),
        Pick::Sample(size) => {
            let state = sample::load(sink).await?;
            let all: Vec<String> = cat
                .snapshots
                .iter()
                .filter(|e| !by_packs || e.index.chunks.is_none())
                .map(|e| e.index.id.to_string())
                .collect();
            let (ids, next) = sample::pick(&all, &state, *size);
            let chosen = cat
                .snapshots
                .iter()
                .filter(|e| ids.contains(&e.index.id.to_string()))
                .cloned()
                .collect();
            Ok((chosen, Some((next, all.len()))))
        }
    }
}

/// One snapshot: its signature, then its object, or with keys its bundle;
/// `Some(files checked)` for a deep check.
async fn verify_one(sink: &dyn Sink, entry: &CatalogEntry, req: &VerifyRequest<'_>) -> Result<Option<usize>> {
    req.trusted.enforce(entry.index.id.as_str(), &entry.signature)?;
    match &req.identities {
        None => crate::verify_stored(sink, &entry.index, Some(&req.progress))
            .await
            .map(|_| None),
        Some(ids) => deep_check(
            sink,
            &entry.index,
            ids.clone(),
            req.registry,
            req.progress.clone(),
        )
        .await
        .map(|s| Some(s.files_checked)),
    }
}

fn result(
    sink: &str,
    id: &str,
    deep: bool,
    r: &Result<Option<usize>>,
    sample: Option<SampleProgress>,
) -> VerifyResult {
    VerifyResult {
        sink: sink.to_string(),
        id: id.to_string(),
        ok: r.is_ok(),
        deep,
        files_checked: r.as_ref().ok().copied().flatten(),
        error: r.as_ref().err().map(ErrorInfo::from),
        sample,
    }
}

/// Fetches a snapshot's object (its SHA-256 checked against the index),
/// then decrypts it and checks every file against `SHA256SUMS` and the
/// manifest, and each source's entries with its kind's [`EntryCheck`].
pub async fn deep_check(
    sink: &dyn Sink,
    index: &Index,
    ids: Arc<Identities>,
    registry: &Registry,
    progress: Arc<Progress>,
) -> Result<BundleSummary> {
    let idx = index.clone();
    let mut deep = DeepCheck {
        registry: registry.clone(),
        checks: BTreeMap::new(),
    };
    if index.chunks.is_some() {
        return crate::chunked::with_chunk_stream(sink, index, Some(progress), move |stream| {
            let summary = crate::read_chunked(stream, &idx, &ids, &mut deep)?;
            deep.finish(&summary)?;
            Ok(summary)
        })
        .await;
    }
    let file = crate::fetch_verified(sink, index, None, Some(&progress)).await?;
    let input = ProgressRead::new(file, progress.clone(), "decrypt", index.object.size, None);
    tokio::task::spawn_blocking(move || {
        let summary = crate::read_bundle(std::io::BufReader::new(input), &idx, &ids, &mut deep)?;
        deep.finish(&summary)?;
        Ok(summary)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?
}

impl DeepCheck {
    /// The sources' checks that need the whole bundle.
    fn finish(self, summary: &BundleSummary) -> Result<()> {
        for (name, check) in self.checks {
            if let Some(manifest) = summary.manifest.sources.iter().find(|s| s.name == name) {
                check
                    .finish(manifest)
                    .map_err(|e| e.prefix(format!("source `{name}`")))?;
            }
        }
        Ok(())
    }
}

/// Runs the sources' own checks on their entries as the bundle streams by.
struct DeepCheck {
    registry: Registry,
    /// Source name → its kind's check (kinds without one have none).
    checks: BTreeMap<String, Box<dyn EntryCheck>>,
}

impl BundleVisitor for DeepCheck {
    fn sources(&mut self, sources: &SourcesFile) -> Result<()> {
        for s in &sources.sources {
            let check = self
                .registry
                .source_factory(&s.kind)
                .ok()
                .and_then(|f| f.entry_check());
            if let Some(check) = check {
                self.checks.insert(s.name.clone(), check);
            }
        }
        Ok(())
    }

    fn entry(&mut self, source: &str, entry: RestoreEntry<'_>) -> Result<()> {
        match self.checks.get_mut(source) {
            Some(check) => check
                .entry(entry)
                .map_err(|e| e.prefix(format!("source `{source}`"))),
            None => Ok(()),
        }
    }
}
