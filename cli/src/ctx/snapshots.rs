//! Finding a snapshot on the selected sinks, describing it in JSON, and
//! checking it deeply.

use std::sync::Arc;

use coffer_core::{
    BundleSummary, BundleVisitor, Catalog, CatalogEntry, Error, ErrorKind, Identities, Progress,
    ProgressRead, RestoreEntry, RestoreEntryKind, Result, Sink, SourcesFile,
};

use super::Ctx;
use crate::output::Spinner;

/// Finds `spec` on the first of `sinks` that has it.
pub(crate) async fn find_snapshot(
    sinks: &[(String, Arc<dyn Sink>)],
    spec: &str,
) -> Result<(String, Arc<dyn Sink>, CatalogEntry)> {
    let mut last_err = None;
    for (name, sink) in sinks {
        let cat = Catalog::load(sink.as_ref())
            .await
            .map_err(|e| e.prefix(format!("sink `{name}`")))?;
        match cat.resolve(spec) {
            Ok(e) => return Ok((name.clone(), sink.clone(), e.clone())),
            // Another sink may hold a good copy; if none does, a corrupt
            // index is what the user must hear about, not "not found".
            Err(e) => {
                let worse = last_err
                    .as_ref()
                    .is_none_or(|l: &Error| l.kind() != ErrorKind::Integrity);
                if worse {
                    last_err = Some(e);
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::new(ErrorKind::NotFound, "no sink")))
}

/// A snapshot to decrypt, as `restore` and `drill` start: the snapshot
/// `spec` on the selected sinks with its signature judged before anything
/// is fetched, and the keys to open it (`needs_key` is the error when none
/// was given, e.g. "restore needs a key").
pub(crate) struct Opened {
    pub(crate) config: Option<crate::config::Config>,
    pub(crate) sink_name: String,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) entry: CatalogEntry,
    pub(crate) ids: Identities,
    pub(crate) signature: coffer_core::TrustState,
}

pub(crate) async fn open_snapshot(
    ctx: &Ctx,
    sel: &super::ReadSel,
    spec: &str,
    needs_key: &str,
) -> Result<Opened> {
    let super::Reading { config, sinks, trust } = ctx.reading(sel)?;
    let ids = super::identities(&sel.keys)?;
    if ids.is_empty() {
        return Err(coffer_core::config_error(needs_key.to_string())
            .with_hint("pass --identity FILE (or --passphrase for passphrase bundles)"));
    }
    let (sink_name, sink, entry) = find_snapshot(&sinks, spec).await?;
    // Before fetching or decrypting anything: a forged snapshot stops here.
    let signature = super::enforce(&trust, &entry)?;
    Ok(Opened {
        config,
        sink_name,
        sink,
        entry,
        ids,
        signature,
    })
}

/// Fetches a snapshot's object (its SHA-256 checked against the index),
/// then decrypts it and checks every file against `SHA256SUMS` and the
/// manifest, showing both phases.
pub(crate) async fn deep_check(
    ctx: &Ctx,
    what: &str,
    sink: &dyn Sink,
    index: &coffer_core::Index,
    ids: Arc<Identities>,
) -> Result<coffer_core::BundleSummary> {
    let progress = Arc::new(Progress::default());
    let shown = Spinner::start(what, progress.clone(), ctx.quiet);
    let checked = async {
        let file = coffer_core::fetch_verified(sink, index, None, Some(&progress)).await?;
        let input = ProgressRead::new(file, progress.clone(), "decrypt", index.object.size, None);
        let idx = index.clone();
        tokio::task::spawn_blocking(move || {
            let mut deep = DeepCheck::default();
            let summary = coffer_core::read_bundle(std::io::BufReader::new(input), &idx, &ids, &mut deep)?;
            deep.finish(&summary)?;
            Ok(summary)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?
    }
    .await;
    shown.finish();
    checked
}

/// What `verify --deep` checks beyond every file's hash: the documents and
/// metadata of MongoDB sources, and their counts against the manifest
/// (`coffer_source_mongo::DumpCheck`).
#[derive(Default)]
struct DeepCheck {
    /// Source name → its kind.
    kinds: std::collections::BTreeMap<String, String>,
    #[cfg(feature = "mongo")]
    dumps: std::collections::BTreeMap<String, coffer_source_mongo::DumpCheck>,
}

impl BundleVisitor for DeepCheck {
    fn sources(&mut self, sources: &SourcesFile) -> Result<()> {
        self.kinds = sources
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.kind.clone()))
            .collect();
        Ok(())
    }

    fn entry(&mut self, source: &str, entry: RestoreEntry<'_>) -> Result<()> {
        #[cfg(feature = "mongo")]
        if let (Some("mongo" | "mongo-env" | "mongodump"), RestoreEntryKind::File { size }) =
            (self.kinds.get(source).map(String::as_str), &entry.kind)
        {
            self.dumps
                .entry(source.to_string())
                .or_default()
                .entry(entry.path, entry.reader, *size)
                .map_err(|e| e.prefix(format!("source `{source}`")))?;
        }
        let _ = (source, entry);
        Ok(())
    }
}

impl DeepCheck {
    /// Compares what was read with the manifest.
    fn finish(self, summary: &BundleSummary) -> Result<()> {
        #[cfg(feature = "mongo")]
        for (name, dump) in self.dumps {
            let Some(manifest) = summary.manifest.sources.iter().find(|s| s.name == name) else {
                continue;
            };
            dump.finish(manifest)?;
        }
        let _ = summary;
        Ok(())
    }
}
