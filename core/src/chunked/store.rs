//! What a sink holds of chunked snapshots: the chunks it stores
//! ([`KnownChunks`], loaded from the chunk lists of its snapshots), and
//! the removal of packs no snapshot references ([`sweep`]).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ChunkList, ChunkRef, DATA_PREFIX, pack_name};
use crate::bundle::Index;
use crate::catalog::{Catalog, SnapshotState};
use crate::error::{Error, ErrorKind, Result};
use crate::sink::{Sink, SinkExt};

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    offset: u64,
    length: u32,
    sha256: [u8; 32],
}

/// The chunks a sink stores, by address: where each lies. About 90 bytes
/// per chunk (≈ 90 MiB per million chunks, ~1 TB of unique data at the
/// 1 MiB average chunk).
#[derive(Debug, Default)]
pub struct KnownChunks {
    map: HashMap<[u8; 32], Loc>,
    packs: Vec<String>,
    pack_ids: HashMap<String, u32>,
}

impl KnownChunks {
    /// Where the chunk of `address` lies, if stored.
    pub fn get(&self, address: &[u8; 32]) -> Option<ChunkRef> {
        self.map.get(address).map(|l| ChunkRef {
            address: *address,
            pack: self.packs[l.pack as usize].clone(),
            offset: l.offset,
            length: l.length.into(),
            sha256: l.sha256,
        })
    }

    /// Whether the chunk of `address` is stored.
    pub fn contains(&self, address: &[u8; 32]) -> bool {
        self.map.contains_key(address)
    }

    /// Records a stored chunk.
    pub fn insert(&mut self, c: &ChunkRef) {
        let next = self.packs.len() as u32;
        let pack = *self.pack_ids.entry(c.pack.clone()).or_insert(next);
        if pack == next {
            self.packs.push(c.pack.clone());
        }
        self.map.entry(c.address).or_insert(Loc {
            pack,
            offset: c.offset,
            length: c.length as u32,
            sha256: c.sha256,
        });
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The packs on a sink, by name, with their sizes.
pub async fn list_packs(sink: &dyn Sink) -> Result<HashMap<String, u64>> {
    Ok(sink
        .list(DATA_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| pack_name(&o.key).map(|n| (n.to_string(), o.size)))
        .collect())
}

/// Reads a snapshot's chunk list, checked against its index, with where
/// its chunks lie on `sink`.
pub async fn read_list(sink: &dyn Sink, index: &Index) -> Result<ChunkList> {
    Ok(read_list_located(sink, index).await?.0)
}

/// [`read_list`], and whether the list holds its locations itself (a
/// list made before they moved out: its chunks cannot move).
pub(crate) async fn read_list_located(sink: &dyn Sink, index: &Index) -> Result<(ChunkList, bool)> {
    let bytes = sink.get_bytes(&index.object.key).await?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != index.object.size || sha != index.object.sha256 {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!("the chunk list of {} does not match its index", index.id),
        )
        .with_hint("the sink was changed behind coffer's back; `coffer verify` names what is affected"));
    }
    let what = format!("chunk list of {}", index.id);
    let mut list = ChunkList::from_object(&bytes, &what)?;
    let inline = list.is_located();
    if !inline {
        let locs = sink
            .get_bytes(&super::locs_key(&index.id))
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::new(
                    ErrorKind::Integrity,
                    format!("the chunk locations of {} are missing", index.id),
                )
                .with_hint(
                    "the sink was changed behind coffer's back; copy the snapshot again from another sink",
                ),
                _ => e,
            })?;
        list.locate(&locs, &format!("chunk locations of {}", index.id))?;
    }
    Ok((list, inline))
}

/// The chunks stored on `sink` that snapshots made with dedup key
/// `key_id` reference, where their pack is present and long enough. A
/// chunk whose pack was lost is not known, so it is stored again. A list
/// that cannot be read is skipped (its chunks are stored again).
///
/// With `trusted` signers, only the lists of snapshots they signed are
/// used: a host that can write to the sink (and holds the dedup key)
/// could otherwise upload a list that maps common addresses to other
/// ciphertext, which later snapshots would reference.
pub async fn load_known(
    sink: &dyn Sink,
    cat: &Catalog,
    key_id: &str,
    trusted: &crate::TrustedSigners,
) -> Result<KnownChunks> {
    let packs = list_packs(sink).await?;
    let indexes: Vec<&Index> = cat
        .snapshots
        .iter()
        .filter(|e| e.state == SnapshotState::Complete && e.index.chunks.is_some())
        .filter(|e| trusted.is_empty() || trusted.enforce(e.index.id.as_str(), &e.signature).is_ok())
        .map(|e| &e.index)
        .filter(|i| i.chunks.as_ref().is_some_and(|c| c.dedup_key == key_id))
        .collect();
    let mut lists = futures::stream::iter(
        indexes
            .into_iter()
            .map(|i| async move { (i, read_list(sink, i).await) }),
    )
    .buffer_unordered(8);
    let mut known = KnownChunks::default();
    while let Some((index, list)) = lists.next().await {
        match list {
            Ok(list) => {
                for c in &list.0 {
                    if packs
                        .get(&c.pack)
                        .is_some_and(|&size| c.offset + c.length <= size)
                    {
                        known.insert(c);
                    }
                }
            }
            Err(e) => tracing::warn!("snapshot {}: {e}; its chunks will be stored again", index.id),
        }
    }
    Ok(known)
}

/// Who holds a live shared lock on `sink` (a backup or copy), if any.
async fn running(sink: &dyn Sink) -> Result<Option<String>> {
    let opts = crate::LockOptions::from_env()?;
    Ok(crate::list_locks(sink, &opts)
        .await?
        .into_iter()
        .find(|l| !l.stale && l.key.contains("/shared-"))
        .map(|l| l.describe()))
}

fn busy(holder: &str) -> String {
    format!("{holder} is using the sink: unused packs are removed by a prune when no backup or copy runs")
}

/// What [`sweep`] removed (or would).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct SweepOutcome {
    /// Why nothing was removed, when nothing could be (a backup or copy
    /// holds the sink: its packs are not referenced yet).
    pub skipped: Option<String>,
    /// Packs no snapshot references, removed.
    pub removed_packs: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Chunk lists without an index (interrupted backups), removed.
    pub removed_lists: u64,
    /// Packs kept.
    pub kept_packs: u64,
    /// Their bytes.
    pub kept_bytes: u64,
    /// Bytes of kept packs no snapshot references any more (a pack is
    /// removed only once none of it is used).
    pub unused_bytes: u64,
}

/// Removes the packs and chunk lists no snapshot references, safely beside
/// backups and copies on other hosts:
///
/// 0. look for live shared locks (then again in step 3): under the prune's
///    exclusive lock, a backup that locks after this check refuses,
/// 1. list the packs and objects,
/// 2. then read the catalog (a backup that finished before is in it),
/// 3. then look for live shared locks: a backup or copy holding one may
///    store packs its index does not reference yet, or reference chunks of
///    snapshots a prune just removed (it read the catalog before): then
///    nothing is removed (`skipped`; a later prune does it),
/// 4. remove what the listing of step 1 holds and no snapshot of step 2
///    references. A backup that takes its lock after step 3 writes nothing
///    listed in step 1, and reads a catalog without the removed snapshots.
///
/// `gone` are snapshots to count as removed (a dry run's planned deletes).
/// Refuses when a snapshot's chunk list cannot be read (its packs would
/// look unused).
pub async fn sweep(
    sink: &dyn Sink,
    gone: &HashSet<crate::SnapshotId>,
    dry_run: bool,
) -> Result<SweepOutcome> {
    let mut out = SweepOutcome::default();
    // Under the prune's exclusive lock, a backup that locks after this
    // check refuses; one that locked before is seen here.
    if let Some(holder) = running(sink).await? {
        out.skipped = Some(busy(&holder));
        return Ok(out);
    }
    let packs = list_packs(sink).await?;
    let objects = sink.list("").await?;
    let cat = Catalog::load(sink).await?;
    if let Some((key, _)) = cat.unreadable.first() {
        out.skipped = Some(format!(
            "the index {key} cannot be read: its packs could look unused"
        ));
        return Ok(out);
    }
    let mut used: HashMap<String, u64> = HashMap::new();
    for e in cat.snapshots.iter().filter(|e| !gone.contains(&e.index.id)) {
        if e.index.chunks.is_none() {
            continue;
        }
        if e.state == SnapshotState::ObjectMissing {
            continue; // its list is gone: it references nothing readable
        }
        let list = read_list(sink, &e.index).await.map_err(|err| {
            err.prefix(format!(
                "not removing unused packs: the chunk list of {} cannot be read",
                e.index.id
            ))
        })?;
        for (pack, bytes) in list.packs() {
            *used.entry(pack.to_string()).or_default() += bytes;
        }
    }
    if let Some(holder) = running(sink).await? {
        out.skipped = Some(busy(&holder));
        return Ok(out);
    }
    // Lists and locations without an index (an interrupted backup or
    // copy) go before the packs: a copy that finds its locations resumes
    // trusting their packs to be there.
    for o in objects {
        let id = [super::CHUNKS_SUFFIX, super::LOCS_SUFFIX]
            .iter()
            .find_map(|suffix| o.key.strip_suffix(suffix))
            .filter(|_| !o.key.contains('/'));
        let indexed = id.is_some_and(|id| cat.snapshots.iter().any(|e| e.index.id.as_str() == id));
        if id.is_some() && !indexed {
            if !dry_run {
                sink.delete(&o.key).await?;
            }
            if o.key.ends_with(super::CHUNKS_SUFFIX) {
                out.removed_lists += 1;
            }
        }
    }
    for (name, size) in &packs {
        match used.get(name) {
            Some(&live) => {
                out.kept_packs += 1;
                out.kept_bytes += size;
                out.unused_bytes += size.saturating_sub(live);
            }
            None => {
                if !dry_run {
                    sink.delete(&super::pack_key(name)).await?;
                }
                out.removed_packs += 1;
                out.removed_bytes += size;
            }
        }
    }
    Ok(out)
}
