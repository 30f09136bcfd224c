//! Removable media for air-gapped sites: a medium's identity and status,
//! the restore kit and custody log an export writes, and the receipt an
//! import records (the media sink plugin, `coffer-sink-media`, stores the
//! snapshots; the copies are `coffer_core::ops::copy_snapshots`).

use std::path::{Path, PathBuf};

use coffer_core::{
    Error, ErrorKind, Result, Sink, SinkExt, keys::TrustedSigners, ops::Catalog, ops::CatalogEntry,
};
use coffer_sink_media::kit::{self, CustodyRecord};
pub use coffer_sink_media::kit::{CUSTODY_FILE, RESTORE_FILE, SIGNERS_FILE, SUMS_FILE};
pub use coffer_sink_media::{IDENTITY_FILE, MediaIdentity, MediaStatus};

/// The medium's mount point and identity, when `sink` is a media sink.
pub fn medium_of(sink: &dyn Sink) -> Option<(PathBuf, Option<MediaIdentity>)> {
    let info = sink.info();
    (info.scheme == coffer_sink_media::SCHEME).then(|| {
        let root = PathBuf::from(info.location);
        let id = coffer_sink_media::read_identity(&root).ok();
        (root, id)
    })
}

/// Labels the medium mounted at `path` (once per medium).
pub async fn init_medium(path: &Path, label: &str, set: Option<&str>) -> Result<MediaIdentity> {
    let (p, label, set) = (path.to_path_buf(), label.to_string(), set.map(str::to_owned));
    tokio::task::spawn_blocking(move || coffer_sink_media::init_medium(&p, &label, set.as_deref()))
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))?
}

/// The medium mounted at `path`: its identity, its space, its snapshots.
pub async fn media_status(path: &Path) -> Result<(MediaStatus, Catalog)> {
    let p = path.to_path_buf();
    let status = tokio::task::spawn_blocking(move || coffer_sink_media::media_status(&p))
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, e.to_string()))??;
    let sink = coffer_sink_media::MediaSink::new(coffer_sink_media::MediaSinkConfig::new(path.to_path_buf()));
    let cat = Catalog::load(&sink).await?;
    Ok((status, cat))
}

/// Refuses a `to` that is not a ready medium (mounted, labelled, its
/// identity readable) before anything is locked or read.
pub async fn check_medium(to: &dyn Sink) -> Result<()> {
    to.head(IDENTITY_FILE).await.map(|_| ())
}

/// After an export of `ids` from `from` to the medium `to`: the restore kit
/// (RESTORE.txt, the trusted signers), the custody log and SHA256SUMS.
pub async fn write_export_kit(
    from: &dyn Sink,
    to: &dyn Sink,
    ids: Vec<String>,
    trust: &TrustedSigners,
) -> Result<()> {
    let identity = medium_of(to).and_then(|(_, id)| id);
    let record = CustodyRecord::new(
        "export",
        ids,
        from.info().to_string(),
        to.info().to_string(),
        identity.as_ref(),
    );
    kit::write_restore_kit(to, identity.as_ref(), trust).await?;
    kit::append_custody(to, &record).await?;
    kit::write_sums(to).await.map(|_| ())
}

/// After an import from the medium `from` into `to`: the receipt in the
/// medium's custody log (what was imported and what refused).
pub async fn log_import(
    from: &dyn Sink,
    to: &dyn Sink,
    imported: Vec<String>,
    refused: Vec<String>,
) -> Result<()> {
    let identity = medium_of(from).and_then(|(_, id)| id);
    let mut record = CustodyRecord::new(
        "import",
        imported,
        from.info().to_string(),
        to.info().to_string(),
        identity.as_ref(),
    );
    record.refused = refused;
    kit::append_custody(from, &record).await?;
    kit::update_sums(from, &[CUSTODY_FILE]).await
}

/// The snapshots of the medium `from` to import: `ids` (all when empty),
/// and the index files it holds that do not parse (refused).
pub async fn importable(
    from: &dyn Sink,
    ids: &[String],
) -> Result<(Vec<CatalogEntry>, Vec<(String, String)>)> {
    let cat = Catalog::load(from).await?;
    if cat.snapshots.is_empty() && cat.unreadable.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, "the medium holds no snapshot")
            .with_hint("check that the right medium is mounted (`coffer media status PATH`)"));
    }
    let entries = if ids.is_empty() {
        cat.snapshots.clone()
    } else {
        cat.select(ids, false, false)?
    };
    Ok((entries, cat.unreadable.clone()))
}
