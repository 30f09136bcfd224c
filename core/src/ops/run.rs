//! `backup` and `restore` as operations: the pipeline under the sinks'
//! locks, and a verified snapshot restored through its sources' plugins.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{
    AdmittedIndex, BackupOutcome, BackupRequest, Error, ErrorKind, Identities, LockGuard, LockOptions,
    Progress, Registry, RestoreOptions, RestoreOutcome, Result, Sink, Source, SourceRecord, SourceResolver,
    TrustState,
};

/// Shared locks on every sink of a run (`holder` names it in the locks).
/// Refuses to start while a prune holds one of them. A sink where no lock
/// can be written (unreachable, refused) is returned with its error, by
/// its position in `sinks`: the run must leave it out, never write there
/// unlocked, where a prune or a chunk sweep would not see the run.
pub async fn lock_shared(
    sinks: &[(String, Arc<dyn Sink>)],
    holder: &str,
) -> Result<(Vec<LockGuard>, Vec<(usize, Error)>)> {
    let opts = LockOptions::from_env()?;
    let mut guards = Vec::new();
    let mut unlocked = Vec::new();
    for (i, (name, sink)) in sinks.iter().enumerate() {
        match crate::acquire_shared_with(sink.clone(), holder, &opts).await {
            Ok(g) => guards.push(g),
            Err(e) if !crate::is_lock_conflict(&e) => unlocked.push((i, e)),
            Err(e) => {
                release_all(guards).await;
                return Err(e.prefix(format!("sink `{name}`")));
            }
        }
    }
    Ok((guards, unlocked))
}

/// Releases held locks.
pub async fn release_all(guards: Vec<LockGuard>) {
    for g in guards {
        g.release().await;
    }
}

/// Runs a backup holding a shared lock on every sink: a running prune
/// makes it refuse at once, and a prune started later never deletes this
/// snapshot's object, which has no index yet. A sink where no lock could
/// be taken is left out of the run and reported failed with that cause
/// (nothing is written there); when that is every sink, the run fails.
/// Returns the outcome and the wall time in seconds.
pub async fn backup(
    mut req: BackupRequest,
    holder: &str,
    progress: Arc<Progress>,
) -> Result<(BackupOutcome, f64)> {
    let started = std::time::Instant::now();
    let targets: Vec<(String, Arc<dyn Sink>)> = req
        .sinks
        .iter()
        .map(|t| (t.name.clone(), t.sink.clone()))
        .collect();
    let (locks, unlocked) = lock_shared(&targets, holder).await?;
    if !unlocked.is_empty() && unlocked.len() == req.sinks.len() {
        let (i, e) = &unlocked[0];
        let mut err = Error::new(
            e.kind(),
            format!(
                "every sink failed; sink `{}`: cannot take its lock: {e}",
                targets[*i].0
            ),
        );
        if let Some(h) = e.hint() {
            err = err.with_hint(h);
        }
        return Err(err);
    }
    let mut left_out = Vec::new();
    for (i, e) in unlocked.into_iter().rev() {
        let t = req.sinks.remove(i);
        left_out.push((
            i,
            crate::SinkOutcome {
                location: t.sink.info().to_string(),
                result: Err(e.prefix("cannot take its lock, so nothing was written there")),
                name: t.name,
                required: t.required,
            },
        ));
    }
    let outcome = crate::run_backup(req, progress).await;
    release_all(locks).await;
    let mut outcome = outcome?;
    // Back in the order the sinks were given.
    for (i, o) in left_out.into_iter().rev() {
        outcome.sinks.insert(i.min(outcome.sinks.len()), o);
    }
    Ok((outcome, started.elapsed().as_secs_f64()))
}

/// A restore of one snapshot.
pub struct RestoreRequest {
    /// The snapshot's index, its signature judged by the trusted signers
    /// ([`crate::TrustedSigners::admit`]: nothing else makes one).
    pub index: AdmittedIndex,
    /// Keys that open it.
    pub identities: Identities,
    /// Only the sources with these names or kinds (all when empty).
    pub only: Vec<String>,
    /// Sources as configured, by name: used where the bundle's source of
    /// that name has the same kind; the others are rebuilt from the
    /// origin the bundle recorded.
    pub configured: BTreeMap<String, Arc<dyn Source>>,
    /// The plugins, to rebuild sources from their origin.
    pub registry: Registry,
    /// Where the verified ciphertext is cached (default: a temp dir).
    pub cache_dir: Option<PathBuf>,
    /// Target, dry run, plugin options, cancel flag.
    pub options: RestoreOptions,
    /// The user accepts the places the bundle's origins name (a path, a
    /// server, a namespace) for sources the configuration does not declare
    /// (`--to-origin`). Without it, and unless a trusted signer signed the
    /// snapshot, such a source needs an explicit place in `options`, else
    /// it is refused, naming the place: whoever can write to a sink could
    /// have chosen it.
    pub origin_places: bool,
}

/// Fetches the object from `sink` (its SHA-256 checked against the index
/// before anything is decrypted), then decrypts it and hands each selected
/// source's entries to its restorer; nothing is committed unless the
/// whole bundle verified. Phases on `progress`: verify, decrypt, commit.
pub async fn restore(
    sink: &dyn Sink,
    req: RestoreRequest,
    progress: Arc<Progress>,
) -> Result<RestoreOutcome> {
    let origin_places = req.origin_places || matches!(req.index.trust(), TrustState::Trusted(_));
    let index = req.index.index().clone();
    let chunked = index.chunks.is_some();
    let file = match chunked {
        false => {
            Some(crate::RestoreInput::open(sink, &index, req.cache_dir.as_deref(), progress.clone()).await?)
        }
        true => None,
    };
    let (only, configured, registry) = (req.only, req.configured, req.registry);
    let place_opts = req.options.clone();
    let resolve: SourceResolver = Box::new(move |rec: &SourceRecord| {
        if !only.is_empty() && !only.iter().any(|o| o == &rec.name || o == &rec.kind) {
            return Ok(None);
        }
        if let Some(s) = configured.get(&rec.name)
            && s.info().kind == rec.kind
        {
            return Ok(Some(s.clone()));
        }
        let factory = registry.source_factory(&rec.kind)?;
        let source = factory.from_origin(&rec.name, &rec.origin)?;
        if !origin_places && !place_opts.dry_run && !factory.place_given(&place_opts.for_kind(&rec.kind)) {
            return Err(origin_refused(&rec.name, &source.info().description));
        }
        Ok(Some(source))
    });
    let handle = tokio::runtime::Handle::current();
    let (ids, opts) = (req.identities, req.options);
    match file {
        Some(file) => tokio::task::spawn_blocking(move || {
            crate::restore_bundle(file, &index, &ids, resolve, opts, handle)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?,
        None => {
            let idx = index.clone();
            crate::chunked::with_chunk_stream(sink, &idx, Some(progress), move |stream| {
                let input = crate::RestoreInput::chunked(stream);
                crate::restore_bundle(input, &index, &ids, resolve, opts, handle)
            })
            .await
        }
    }
}

/// The error for a source that would be restored only where the bundle
/// says.
fn origin_refused(name: &str, place: &str) -> Error {
    crate::config_error(format!(
        "source `{name}` is not in the configuration, so it would be restored where the snapshot recorded it: {} \
         — a place chosen by whoever wrote the snapshot, which no trusted signer signed; nothing was written",
        crate::printable(place)
    ))
    .with_hint(
        "name the place (--target DIR; --mongo-uri; --k8s-namespace), declare the source in the configuration, \
         or check the place above and pass --to-origin to restore there",
    )
}
