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
    /// removed once none of it is used, rewritten once less than half).
    pub unused_bytes: u64,
    /// Packs kept snapshots used less than half of, rewritten: their live
    /// chunks moved to new packs, the old pack removed.
    pub repacked_packs: u64,
    /// The unused bytes that freed.
    pub repacked_bytes: u64,
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
    let mut kept: Vec<(crate::SnapshotId, ChunkList, bool)> = Vec::new();
    for e in cat.snapshots.iter().filter(|e| !gone.contains(&e.index.id)) {
        if e.index.chunks.is_none() {
            continue;
        }
        if e.state == SnapshotState::ObjectMissing {
            continue; // its list is gone: it references nothing readable
        }
        let (list, inline) = read_list_located(sink, &e.index).await.map_err(|err| {
            err.prefix(format!(
                "not removing unused packs: the chunk list of {} cannot be read",
                e.index.id
            ))
        })?;
        for (pack, bytes) in list.packs() {
            *used.entry(pack.to_string()).or_default() += bytes;
        }
        kept.push((e.index.id.clone(), list, inline));
    }
    if let Some(holder) = running(sink).await? {
        out.skipped = Some(busy(&holder));
        return Ok(out);
    }
    // Lists and locations without an index (an interrupted backup or
    // copy) go before the packs: a copy that finds its locations resumes
    // trusting their packs to be there.
    out.removed_lists = remove_orphan_lists(sink, &objects, &cat, dry_run).await?;
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
    repack(sink, &packs, &kept, dry_run, &mut out).await?;
    Ok(out)
}

/// Removes the chunk lists and locations no index names (an interrupted
/// backup or copy); returns how many lists.
async fn remove_orphan_lists(
    sink: &dyn Sink,
    objects: &[crate::sink::ObjectMeta],
    cat: &Catalog,
    dry_run: bool,
) -> Result<u64> {
    let mut removed = 0;
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
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Rewrites the packs kept snapshots use less than half of: their live
/// chunks (ciphertext, checked against the lists' SHA-256; no key needed)
/// go into new packs, the locations of every snapshot using them are
/// rewritten, then the old pack is removed. A crash on the way leaves
/// both packs, each location pointing at one that holds its chunk. Packs
/// that a list with inline locations uses (made before locations moved
/// out) stay whole, as do damaged ones (verify names them).
async fn repack(
    sink: &dyn Sink,
    packs: &HashMap<String, u64>,
    kept: &[(crate::SnapshotId, ChunkList, bool)],
    dry_run: bool,
    out: &mut SweepOutcome,
) -> Result<()> {
    let live = live_chunks(kept);
    let chosen = mostly_unused(packs, kept, &live);
    if dry_run || chosen.is_empty() {
        out.repacked_packs = chosen.len() as u64;
        out.repacked_bytes = chosen.iter().map(|(_, size, used)| size - used).sum();
        return Ok(());
    }
    let mut writer = PackWriter::default();
    let mut moved: Vec<&str> = Vec::new();
    for &(pack, size, used) in &chosen {
        let bytes = sink.get_bytes(&super::pack_key(pack)).await?;
        let chunks: Vec<&&ChunkRef> = live[pack].values().collect();
        let intact = chunks.iter().all(|c| {
            let end = c
                .offset
                .checked_add(c.length)
                .filter(|&e| e <= bytes.len() as u64);
            end.is_some_and(|end| {
                super::reader::mismatch(c, &bytes[c.offset as usize..end as usize]).is_none()
            })
        });
        if !intact {
            tracing::warn!(
                "pack {pack} is damaged: kept whole (`coffer verify` names the snapshots using it)"
            );
            continue;
        }
        for c in chunks {
            let b = bytes.slice(c.offset as usize..(c.offset + c.length) as usize);
            writer.push(sink, c.sha256, &b).await?;
        }
        moved.push(pack);
        out.repacked_packs += 1;
        out.repacked_bytes += size - used;
    }
    writer.flush(sink).await?;
    let moved: HashSet<&str> = moved.into_iter().collect();
    relocate(sink, kept, &moved, &writer.placed).await?;
    for pack in moved {
        sink.delete(&super::pack_key(pack)).await?;
    }
    Ok(())
}

/// The live chunks of each pack, each once (by offset).
fn live_chunks(kept: &[(crate::SnapshotId, ChunkList, bool)]) -> HashMap<&str, HashMap<u64, &ChunkRef>> {
    let mut live: HashMap<&str, HashMap<u64, &ChunkRef>> = HashMap::new();
    for (_, list, _) in kept {
        for c in &list.0 {
            live.entry(c.pack.as_str()).or_default().insert(c.offset, c);
        }
    }
    live
}

/// The packs to rewrite, `(name, size, live bytes)`: those the kept
/// snapshots use less than half of, but none a list with inline
/// locations uses (it cannot follow a move).
fn mostly_unused<'a>(
    packs: &HashMap<String, u64>,
    kept: &'a [(crate::SnapshotId, ChunkList, bool)],
    live: &HashMap<&'a str, HashMap<u64, &'a ChunkRef>>,
) -> Vec<(&'a str, u64, u64)> {
    let pinned: HashSet<&str> = kept
        .iter()
        .filter(|(_, _, inline)| *inline)
        .flat_map(|(_, list, _)| list.0.iter().map(|c| c.pack.as_str()))
        .collect();
    let mut chosen: Vec<(&str, u64, u64)> = live
        .iter()
        .filter(|(pack, _)| !pinned.contains(*pack))
        .filter_map(|(pack, chunks)| {
            let size = *packs.get(*pack)?;
            let used: u64 = chunks.values().map(|c| c.length).sum();
            (used * 2 < size).then_some((*pack, size, used))
        })
        .collect();
    chosen.sort();
    chosen
}

/// Rewrites the locations of every kept snapshot that uses a `moved`
/// pack: its chunks there now lie where `placed` says.
async fn relocate(
    sink: &dyn Sink,
    kept: &[(crate::SnapshotId, ChunkList, bool)],
    moved: &HashSet<&str>,
    placed: &HashMap<[u8; 32], (String, u64)>,
) -> Result<()> {
    let uses = |l: &ChunkList| l.0.iter().any(|c| moved.contains(c.pack.as_str()));
    for (id, list, _) in kept.iter().filter(|(_, l, _)| uses(l)) {
        let mut located = list.clone();
        for c in located.0.iter_mut().filter(|c| moved.contains(c.pack.as_str())) {
            (c.pack, c.offset) = placed[&c.sha256].clone();
        }
        sink.put_bytes(
            &super::locs_key(id),
            bytes::Bytes::from(located.locs_object()),
            crate::sink::PutOptions::default(),
        )
        .await
        .map_err(|e| e.prefix(format!("rewriting the chunk locations of {id}")))?;
    }
    Ok(())
}

/// Chunks gathered into new packs of about [`super::PACK_TARGET`] bytes,
/// each stored create-only under a new name.
#[derive(Default)]
pub(crate) struct PackWriter {
    /// The pack being filled.
    bytes: Vec<u8>,
    /// Its name.
    name: String,
    /// Where each chunk went: ciphertext SHA-256 → (pack, offset).
    pub(crate) placed: HashMap<[u8; 32], (String, u64)>,
}

impl PackWriter {
    /// Adds one chunk's ciphertext (once per SHA-256), storing the pack
    /// once it is full; returns the bytes stored.
    pub(crate) async fn push(&mut self, to: &dyn Sink, sha256: [u8; 32], chunk: &[u8]) -> Result<u64> {
        if self.placed.contains_key(&sha256) {
            return Ok(0);
        }
        if self.name.is_empty() {
            self.name = super::new_pack_name();
        }
        self.placed
            .insert(sha256, (self.name.clone(), self.bytes.len() as u64));
        self.bytes.extend_from_slice(chunk);
        match self.bytes.len() >= super::PACK_TARGET {
            true => self.flush(to).await,
            false => Ok(0),
        }
    }

    /// Stores the pack being filled, if any; returns its bytes.
    pub(crate) async fn flush(&mut self, to: &dyn Sink) -> Result<u64> {
        if self.bytes.is_empty() {
            return Ok(0);
        }
        let name = std::mem::take(&mut self.name);
        let bytes = bytes::Bytes::from(std::mem::take(&mut self.bytes));
        let len = bytes.len() as u64;
        to.put_bytes(
            &super::pack_key(&name),
            bytes,
            crate::sink::PutOptions::create().with_size_hint(len),
        )
        .await
        .map_err(|e| e.prefix(format!("storing pack {name}")))?;
        Ok(len)
    }
}
