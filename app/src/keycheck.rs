//! The key-escrow drill: does each identity still open the newest
//! snapshot of each job? Read from the sink's first bytes: the age header
//! and the first payload chunk (its authentication tag checked) of the
//! object, without restoring.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use coffer_core::{
    Error, ErrorKind, Result, Sink, keys::Identities, ops::Catalog, ops::CatalogEntry, ops::SnapshotState,
};
use futures::StreamExt;

/// The first bytes of an object read: the age header and a whole first
/// payload chunk (64 KiB and its 16-byte tag).
const PREFIX: usize = 128 << 10;

/// One identity against one job's newest snapshot.
pub struct KeyCheck {
    /// The sink holding the snapshot.
    pub sink: String,
    /// The job.
    pub job: String,
    /// Its newest complete snapshot.
    pub snapshot: String,
    /// The identity file, as given.
    pub identity: String,
    /// Whether it opens the snapshot, or why not.
    pub result: Result<()>,
}

/// Checks that each of `identities` opens the newest complete snapshot
/// of each job on each of `sinks`: the age header and the first payload
/// chunk, its authentication tag checked, without restoring. Every
/// identity file must load: a key that no longer parses is the first
/// thing an escrow drill must catch.
pub async fn keycheck(sinks: &[(String, Arc<dyn Sink>)], identities: &[PathBuf]) -> Result<Vec<KeyCheck>> {
    let mut keys = Vec::new();
    for f in identities {
        let mut ids = Identities::new();
        ids.add_file(f)?;
        keys.push((f.display().to_string(), Arc::new(ids)));
    }
    let mut checks = Vec::new();
    for (name, sink) in sinks {
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
                checks.push(KeyCheck {
                    sink: name.clone(),
                    job: entry.index.job.clone(),
                    snapshot: entry.index.id.to_string(),
                    identity: identity.clone(),
                    result,
                });
            }
        }
    }
    Ok(checks)
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
async fn opens(prefix: Vec<u8>, ids: Arc<Identities>) -> Result<()> {
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
