//! Chunked snapshots: the same tar stream as a bundle, stored as
//! deduplicated chunks.
//!
//! ```text
//! <id>.json                  public index (storage "chunked"), written last
//! <id>.chunks                public chunk list, the index's object
//! data/<pp>/<pack>           packs: age files laid end to end, never rewritten
//! keys/dedup-<key id>.age    the dedup key, encrypted to the recipients
//! ```
//!
//! The tar stream is cut by a keyed content-defined chunker
//! ([`chunker::Chunker`]; FastCDC v2020 with a secret gear table), with
//! forced cuts around every large file's header and data, so an unchanged
//! file yields the same chunks whatever changed before it. A chunk's
//! address is the BLAKE3 keyed hash of its plaintext; each chunk is one
//! zstd frame in one age file. Secrets (the `secrets/` area and coffer's
//! own `sources.json`, `SHA256SUMS`, `manifest.json`) are cut apart and
//! addressed with a key drawn for that snapshot alone, so they are never
//! deduplicated and no dedup key can confirm a guessed value.
//!
//! The chunk list (one zstd frame) has one line per chunk in stream
//! order: `<address> <pack> <offset> <length> <ciphertext sha256>`. Decrypting
//! each range and concatenating the zstd frames gives the tar stream back
//! (`zstd -d` reads concatenated frames), which is what the manual's (docs/chunked.md)
//! standard-tools block does.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::crypto::{Encryption, Identities};
use crate::error::{Error, ErrorKind, Result};

pub(crate) mod cache;
pub(crate) mod chunker;
pub(crate) mod reader;
pub mod store;
pub(crate) mod writer;

pub use cache::FileCache;
pub use reader::{
    ChunkReader, ChunkStream, SampledCheck, first_chunk, verify_chunks, verify_sampled, with_chunk_stream,
};
pub use store::{KnownChunks, SweepOutcome, load_known, read_list, sweep};

/// The POSIX `sh` script that restores a chunked snapshot with age, zstd,
/// tar and sha256sum alone, given `KEY` (an identity file), `SINK` (a
/// sink directory or a copy of one) and `SNAPSHOT` (an id): the manual's (docs/chunked.md)
/// block (a test holds them equal) and the restore kit's on media.
pub const RESTORE_SCRIPT: &str = r#"set -e
list="$SINK/$SNAPSHOT.chunks"
# The chunk list must be the one the index names (its object's sha256,
# the first "sha256" of the index).
want=
while read -r name value rest; do
  case $name in '"sha256":') want=${value#\"}; want=${want%%\"*}; break ;; esac
done < "$SINK/$SNAPSHOT.json"
echo "$want  $list" | sha256sum -c --quiet -
tmp="${TMPDIR:-/tmp}/coffer-chunk.$$"
locs="${TMPDIR:-/tmp}/coffer-locs.$$"
trap 'rm -f "$tmp" "$locs"' EXIT
# Where each chunk lies (pack, offset), a line per chunk in list order;
# a list made before locations moved out holds them itself.
if [ -f "$SINK/$SNAPSHOT.locs" ]; then
  zstd -d -q -c "$SINK/$SNAPSHOT.locs" > "$locs"
else
  : > "$locs"
fi
zstd -d -q -c "$list" | while read -r address a b c d; do
  if [ -z "$c" ]; then
    length=$a sum=$b
    read -r pack offset <&3
  else
    pack=$a offset=$b length=$c sum=$d
  fi
  dir=${pack%"${pack#??}"}
  tail -c +"$((offset + 1))" "$SINK/data/$dir/$pack" | head -c "$length" > "$tmp"
  echo "$sum  $tmp" | sha256sum -c --quiet - >&2
  age -d -i "$KEY" "$tmp"
done 3< "$locs" | zstd -d -q | tar -xf -
rm -f "$tmp" "$locs"
sha256sum -c --quiet SHA256SUMS && echo "all files match SHA256SUMS"
"#;

/// Suffix of a snapshot's chunk list.
pub const CHUNKS_SUFFIX: &str = ".chunks";
/// Suffix of a snapshot's chunk locations (see [`ChunkList::locs_object`]).
pub const LOCS_SUFFIX: &str = ".locs";
/// Folder of the packs.
pub const DATA_PREFIX: &str = "data/";
/// Folder of the encrypted dedup keys.
pub const KEYS_PREFIX: &str = "keys/";

/// Smallest chunk the content-defined chunker cuts (forced cuts may be
/// smaller).
pub const MIN_CHUNK: usize = 512 << 10;
/// Average chunk size.
pub const AVG_CHUNK: usize = 1 << 20;
/// Largest chunk.
pub const MAX_CHUNK: usize = 8 << 20;
/// Chunks of a MongoDB collection's `.bson` (a sequence of documents):
/// cut only where a document ends, near the content-defined point these
/// sizes give, so a document updated in place changes the one chunk that
/// holds it and its neighbours (a few documents), not the ~1,000 of a
/// 1 MiB chunk. Documents larger than [`DOC_MAX_CHUNK`] are cut inside.
pub const DOC_MIN_CHUNK: usize = 2 << 10;
/// Average chunk size of a document sequence.
pub const DOC_AVG_CHUNK: usize = 4 << 10;
/// Largest chunk of a document sequence (unless one document is larger).
pub const DOC_MAX_CHUNK: usize = 32 << 10;
/// A file at least this large starts and ends chunks of its own (its
/// header is a chunk of its own too), so it dedups whatever surrounds it;
/// smaller entries flow through the content-defined chunker together.
pub const OWN_CHUNKS_FROM: u64 = 64 << 10;
/// Packs are written once they hold this much.
pub const PACK_TARGET: usize = 8 << 20;

/// How a sink stores snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotFormat {
    /// One object per snapshot: `age(zstd(tar))`.
    #[default]
    Bundle,
    /// Deduplicated chunks in packs, with a chunk list.
    Chunked,
}

impl SnapshotFormat {
    /// Parses `bundle` or `chunked`.
    pub fn parse(s: &str) -> Result<SnapshotFormat> {
        match s {
            "bundle" => Ok(SnapshotFormat::Bundle),
            "chunked" => Ok(SnapshotFormat::Chunked),
            other => Err(crate::config_error(format!(
                "unknown snapshot format `{other}`: expected `bundle` or `chunked`"
            ))),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotFormat::Bundle => "bundle",
            SnapshotFormat::Chunked => "chunked",
        }
    }
}

impl fmt::Display for SnapshotFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a chunked snapshot's index says about its chunks (public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IndexChunks {
    /// Id of the dedup key its addresses were made with
    /// ([`DedupKey::id`]; public, reveals nothing of the key).
    pub dedup_key: String,
    /// Chunks in the list.
    pub chunks: u64,
    /// Ciphertext bytes the snapshot references (shared ones included).
    pub stored_bytes: u64,
    /// Chunks this backup added to the sink.
    pub new_chunks: u64,
    /// Ciphertext bytes this backup added to the sink (packs).
    pub new_bytes: u64,
}

/// The secret that keys chunk addresses and the chunker: 32 random bytes.
///
/// A backup host holds it (file mode 0600) with the recipients, never an
/// identity. Whoever steals it can tell whether a chunk they guess whole
/// is stored (its address), never read one: content is encrypted to the
/// recipients. Secrets are never addressed with it.
#[derive(Clone)]
pub struct DedupKey([u8; 32]);

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupKey({})", self.id())
    }
}

const KEY_FILE_HEADER: &str = "# coffer dedup key: keys chunk addresses; keep it 0600 (it cannot decrypt)";

impl DedupKey {
    /// A new random key.
    pub fn generate() -> DedupKey {
        DedupKey(rand::random())
    }

    /// Its public id: 16 hex digits derived from it (one-way).
    pub fn id(&self) -> String {
        hex::encode(&blake3::derive_key("coffer dedup key id v1", &self.0)[..8])
    }

    /// The key of chunk addresses.
    fn address_key(&self) -> [u8; 32] {
        blake3::derive_key("coffer chunk address v1", &self.0)
    }

    /// The chunker's secret gear table (and its left-shifted twin).
    fn gear(&self) -> (Box<[u64; 256]>, Box<[u64; 256]>) {
        let mut xof = blake3::Hasher::new_derive_key("coffer chunker gear v1")
            .update(&self.0)
            .finalize_xof();
        let mut gear = Box::new([0u64; 256]);
        let mut b = [0u8; 8];
        for g in gear.iter_mut() {
            xof.fill(&mut b);
            *g = u64::from_le_bytes(b);
        }
        let mut ls = Box::new([0u64; 256]);
        for (l, g) in ls.iter_mut().zip(gear.iter()) {
            *l = g << 1;
        }
        (gear, ls)
    }

    /// The file text: a comment line and the key in hex.
    pub fn file_text(&self) -> String {
        format!("{KEY_FILE_HEADER}\n{}\n", hex::encode(self.0))
    }

    fn parse(text: &str, what: &str) -> Result<DedupKey> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        let bytes = hex::decode(line).ok().filter(|b| b.len() == 32).ok_or_else(|| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!("{what} is not a coffer dedup key"),
            )
            .with_hint(
                "a dedup key file holds 64 hex digits; `coffer dedup-key --sink SINK --identity KEY -o FILE` fetches \
                 a sink's, or point --dedup-key at a file that does not exist yet to make a new one",
            )
        })?;
        Ok(DedupKey(bytes.try_into().expect("32 bytes")))
    }

    /// Reads a key file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<DedupKey>> {
        match std::fs::read_to_string(path) {
            Ok(text) => DedupKey::parse(&text, &format!("dedup key file {}", path.display())).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading dedup key file {}", path.display()), e)),
        }
    }

    /// Writes the key file, mode 0600, never replacing one.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // Whole or not at all: a temp file beside it, linked to its name
        // only if none exists (an empty key file left by a kill would stop
        // every later run).
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".dedup-key.tmp-{:08x}", rand::random::<u32>()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(self.file_text().as_bytes())?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(|e| Error::io(format!("creating dedup key file {}", path.display()), e))
    }

    /// The key encrypted to `encryption`'s recipients, as stored in a sink.
    pub fn seal(&self, encryption: &Encryption) -> Result<Vec<u8>> {
        let mut w = encryption.encrypt(Vec::new())?;
        w.write_all(self.file_text().as_bytes())
            .map_err(|e| Error::io("encrypting the dedup key", e))?;
        w.finish().map_err(|e| Error::io("encrypting the dedup key", e))
    }

    /// Opens a key stored in a sink.
    pub fn unseal(bytes: &[u8], identities: &Identities) -> Result<DedupKey> {
        let mut r = identities.decrypt(bytes)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut r, &mut text)
            .map_err(|e| Error::io("decrypting the dedup key", e))?;
        DedupKey::parse(&text, "the stored dedup key")
    }

    /// Where a sink keeps this key, encrypted.
    pub fn sink_key(&self) -> String {
        format!("{KEYS_PREFIX}dedup-{}.age", self.id())
    }
}

/// Chunked snapshots are encrypted to recipients: with a passphrase every
/// chunk would cost a second of scrypt.
pub(crate) fn check_encryption(encryption: &Encryption) -> Result<()> {
    if matches!(encryption, Encryption::Passphrase { .. }) {
        return Err(crate::config_error(
            "chunked snapshots need recipients: with a passphrase every chunk would cost a second of scrypt",
        )
        .with_hint("use --recipient, or `format = \"bundle\"` (--format bundle) for passphrase backups"));
    }
    encryption.validate()
}

/// The dedup key of a backup to `sinks`, kept at `path` on this host.
///
/// - A key at `path`: used, and stored (encrypted to `encryption`'s
///   recipients) in each sink that lacks it.
/// - None at `path` and none in the sinks: a new one is made, written to
///   `path` (0600) and stored in the sinks.
/// - None at `path` but some in the sinks: refused. This host would
///   deduplicate against nothing there; the hint says how to fetch the
///   sinks' key on a host holding an identity.
pub async fn dedup_key_for(
    sinks: &[(String, std::sync::Arc<dyn crate::Sink>)],
    path: &Path,
    encryption: &Encryption,
) -> Result<DedupKey> {
    use crate::sink::{PutOptions, SinkExt};
    // Before a key is made or stored: a passphrase run is refused.
    check_encryption(encryption)?;
    let key = match DedupKey::load(path)? {
        Some(k) => k,
        None => {
            for (name, sink) in sinks {
                let stored = match sink.list(KEYS_PREFIX).await {
                    Ok(list) => list,
                    Err(_) => continue, // unreachable: the run reports it
                };
                if let Some(o) = stored.iter().find(|o| o.key.starts_with("keys/dedup-")) {
                    return Err(crate::config_error(format!(
                        "this host has no dedup key at {}, but sink `{name}` holds chunked snapshots made with {}",
                        path.display(),
                        o.key
                    ))
                    .with_hint(format!(
                        "on a host with an identity: `coffer dedup-key --sink {name} --identity KEY -o FILE`, then                          copy FILE to {} (mode 0600) here; or give this host a key of its own with --dedup-key NEW_FILE                          (it then deduplicates only against its own snapshots)",
                        path.display()
                    )));
                }
            }
            let k = DedupKey::generate();
            k.save(path)?;
            tracing::info!("made a new dedup key at {} (id {})", path.display(), k.id());
            k
        }
    };
    let sealed = bytes::Bytes::from(key.seal(encryption)?);
    for (name, sink) in sinks {
        let stored = sink.head(&key.sink_key()).await.ok().flatten().is_some();
        if !stored {
            match sink
                .put_bytes(&key.sink_key(), sealed.clone(), PutOptions::create())
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                // The run itself then fails on that sink, saying why.
                Err(e) => tracing::info!("sink `{name}`: cannot store the dedup key: {e}"),
            }
        }
    }
    Ok(key)
}

/// The dedup keys stored in `sink` that `identities` open.
pub async fn recover_dedup_keys(sink: &dyn crate::Sink, identities: &Identities) -> Result<Vec<DedupKey>> {
    use crate::sink::SinkExt;
    let mut out = Vec::new();
    let mut last_err = None;
    for o in sink.list(KEYS_PREFIX).await? {
        if !o.key.starts_with("keys/dedup-") {
            continue;
        }
        match DedupKey::unseal(&sink.get_bytes(&o.key).await?, identities).map_err(|e| e.prefix(&o.key)) {
            Ok(k) => out.push(k),
            Err(e) => last_err = Some(e),
        }
    }
    match (out.is_empty(), last_err) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(Error::new(ErrorKind::NotFound, "this sink holds no dedup key")
            .with_hint("a chunked backup stores one there (keys/dedup-<id>.age)")),
        _ => Ok(out),
    }
}

/// Where a host keeps its dedup key unless told: `$COFFER_DEDUP_KEY`, else
/// `$XDG_CONFIG_HOME/coffer/dedup.key` (`~/.config/coffer/dedup.key`).
pub fn default_dedup_key_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("COFFER_DEDUP_KEY") {
        return p.into();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .unwrap_or_else(|| "/etc".into());
    base.join("coffer").join("dedup.key")
}

/// Key of the pack named `name` (32 hex digits).
pub fn pack_key(name: &str) -> String {
    format!("{DATA_PREFIX}{}/{name}", &name[..2.min(name.len())])
}

/// A pack name from its key, if it is one.
pub fn pack_name(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(DATA_PREFIX)?;
    let (dir, name) = rest.split_once('/')?;
    let ok = name.len() == 32
        && name
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && name.starts_with(dir);
    ok.then_some(name)
}

/// A new random pack name.
pub(crate) fn new_pack_name() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Where one chunk lies, and what its ciphertext hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRef {
    /// Keyed hash of the plaintext.
    pub address: [u8; 32],
    /// Pack name.
    pub pack: String,
    /// Offset of the age file in the pack.
    pub offset: u64,
    /// Its length.
    pub length: u64,
    /// SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

/// A snapshot's chunks in stream order.
///
/// Stored as two objects: the **list** (`<id>.chunks`), a line
/// `address length sha256` per chunk, which the index's SHA-256 and
/// signature cover; and the **locations** (`<id>.locs`), a line
/// `pack offset` per chunk in the same order, which they do not cover, so
/// a copy or a repack moves chunks between packs without the signing key.
/// A moved or forged location can only point at bytes that fail the
/// list's ciphertext SHA-256: it never changes what a restore accepts.
/// Lists made before the locations moved out hold them inline
/// (`address pack offset length sha256`); both are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkList(pub Vec<ChunkRef>);

/// The most a stored list or locations object may decompress to.
const MAX_LIST_TEXT: u64 = 1 << 30;

impl ChunkList {
    /// The list's text: one `address length sha256` line per chunk.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 140);
        for c in &self.0 {
            s.push_str(&format!(
                "{} {} {}\n",
                hex::encode(c.address),
                c.length,
                hex::encode(c.sha256)
            ));
        }
        s
    }

    /// The locations' text: one `pack offset` line per chunk.
    pub fn locs_text(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 45);
        for c in &self.0 {
            s.push_str(&format!("{} {}\n", c.pack, c.offset));
        }
        s
    }

    /// Parses a list's text; without inline locations (the current form)
    /// its chunks have no pack until [`ChunkList::locate`].
    pub fn parse(text: &[u8], what: &str) -> Result<ChunkList> {
        let bad = |n: usize| {
            Error::new(
                ErrorKind::Integrity,
                format!("{what}: line {n} is not `address length sha256`"),
            )
        };
        let text = std::str::from_utf8(text).map_err(|_| bad(0))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            let (address, place, length, sha256) = match f[..] {
                [address, length, sha256] => (address, None, length, sha256),
                [address, pack, offset, length, sha256] => (address, Some((pack, offset)), length, sha256),
                _ => return Err(bad(i + 1)),
            };
            let hex32 = |s: &str| -> Option<[u8; 32]> { hex::decode(s).ok()?.try_into().ok() };
            let parsed = (|| {
                let (pack, offset) = match place {
                    Some((pack, offset)) => (valid_pack(pack)?, offset.parse().ok()?),
                    None => (String::new(), 0),
                };
                Some(ChunkRef {
                    address: hex32(address)?,
                    pack,
                    offset,
                    length: length
                        .parse()
                        .ok()
                        .filter(|&l| l > 0 && l <= 2 * MAX_CHUNK as u64)?,
                    sha256: hex32(sha256)?,
                })
            })();
            out.push(parsed.ok_or_else(|| bad(i + 1))?);
        }
        Ok(ChunkList(out))
    }

    /// Whether every chunk has its place (inline, or after
    /// [`ChunkList::locate`]).
    pub fn is_located(&self) -> bool {
        self.0.iter().all(|c| !c.pack.is_empty())
    }

    /// Sets where each chunk lies from a stored locations object (see
    /// [`ChunkList::locs_object`]); a damaged or short one is an integrity
    /// error.
    pub fn locate(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let text = decompress(bytes, what)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| Error::new(ErrorKind::Integrity, format!("{what}: not text")))?;
        let mut lines = text.lines();
        for (n, c) in self.0.iter_mut().enumerate() {
            let place = lines.next().and_then(|l| {
                let (pack, offset) = l.split_once(' ')?;
                Some((valid_pack(pack)?, offset.parse().ok()?))
            });
            let Some((pack, offset)) = place else {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!("{what}: line {} is not `pack offset`", n + 1),
                ));
            };
            (c.pack, c.offset) = (pack, offset);
        }
        if lines.next().is_some() {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!("{what}: more locations than chunks"),
            ));
        }
        Ok(())
    }

    /// The list as stored: its text in one zstd frame (addresses and
    /// hashes are hex: about half the size).
    pub fn to_object(&self) -> Vec<u8> {
        zstd::bulk::compress(self.to_text().as_bytes(), 19).expect("compressing memory")
    }

    /// The locations as stored: their text in one zstd frame.
    pub fn locs_object(&self) -> Vec<u8> {
        zstd::bulk::compress(self.locs_text().as_bytes(), 19).expect("compressing memory")
    }

    /// Reads a stored list (see [`ChunkList::to_object`]).
    pub fn from_object(bytes: &[u8], what: &str) -> Result<ChunkList> {
        ChunkList::parse(&decompress(bytes, what)?, what)
    }

    /// Ciphertext bytes referenced.
    pub fn stored_bytes(&self) -> u64 {
        self.0.iter().map(|c| c.length).sum()
    }

    /// The packs it references, with the bytes it uses in each.
    pub fn packs(&self) -> HashMap<&str, u64> {
        let mut m = HashMap::new();
        for c in &self.0 {
            *m.entry(c.pack.as_str()).or_default() += c.length;
        }
        m
    }
}

/// Key of a snapshot's chunk list.
pub fn chunks_key(id: &crate::SnapshotId) -> String {
    format!("{id}{CHUNKS_SUFFIX}")
}

/// Key of a snapshot's chunk locations.
pub fn locs_key(id: &crate::SnapshotId) -> String {
    format!("{id}{LOCS_SUFFIX}")
}

/// A pack name as lists and locations hold it: 32 lower-case hex digits.
fn valid_pack(pack: &str) -> Option<String> {
    (pack.len() == 32
        && pack
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    .then(|| pack.to_string())
}

/// A stored list's or locations' text (one zstd frame, bounded).
fn decompress(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    // A line is at most ~190 bytes for a chunk of at least 1 byte:
    // bounded by what the frame may decompress to.
    let mut text = Vec::new();
    let decoder = zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| Error::new(ErrorKind::Integrity, format!("{what}: {e}")))?;
    std::io::Read::read_to_end(&mut std::io::Read::take(decoder, MAX_LIST_TEXT), &mut text).map_err(|e| {
        Error::new(
            ErrorKind::Integrity,
            format!("{what}: not a compressed chunk list: {e}"),
        )
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_list_round_trips_and_rejects_junk() {
        let list = ChunkList(vec![ChunkRef {
            address: [7; 32],
            pack: "ab".repeat(16),
            offset: 12,
            length: 34,
            sha256: [9; 32],
        }]);
        let text = list.to_text();
        assert!(!text.contains(&list.0[0].pack), "the signed list names no pack");
        let mut back = ChunkList::parse(text.as_bytes(), "t").unwrap();
        assert!(!back.is_located());
        back.locate(&list.locs_object(), "t").unwrap();
        assert_eq!(back, list);
        for junk in ["x\n", "aa bb 1 2 3\n", &text.replace(" 34 ", " 0 ")] {
            assert!(ChunkList::parse(junk.as_bytes(), "t").is_err(), "{junk}");
        }
        // A list made before the locations moved out holds them inline.
        let c = &list.0[0];
        let inline = format!(
            "{} {} {} {} {}\n",
            hex::encode(c.address),
            c.pack,
            c.offset,
            c.length,
            hex::encode(c.sha256)
        );
        let old = ChunkList::parse(inline.as_bytes(), "t").unwrap();
        assert!(old.is_located());
        assert_eq!(old, list);
        // Locations that do not match the list are refused.
        let mut two = ChunkList(vec![c.clone(), c.clone()]);
        for bad in [&list.locs_text()[..], "ab 1\nab 2\n", ""] {
            let object = zstd::bulk::compress(bad.as_bytes(), 1).unwrap();
            assert!(two.locate(&object, "t").is_err(), "{bad:?}");
        }
        let three = zstd::bulk::compress(list.locs_text().repeat(3).as_bytes(), 1).unwrap();
        assert!(two.locate(&three, "t").is_err(), "more locations than chunks");
    }

    #[test]
    fn key_files_are_private_and_ids_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/dedup.key");
        let key = DedupKey::generate();
        key.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = DedupKey::load(&path).unwrap().unwrap();
        assert_eq!(back.id(), key.id());
        assert!(key.save(&path).is_err(), "never replaces a key");
        assert!(!key.file_text().contains(&key.id()));
    }

    #[test]
    fn the_readme_block_is_the_restore_script() {
        let readme = include_str!("../../../docs/chunked.md");
        let (begin, end) = (
            "<!-- restore-chunked-without-coffer:begin -->\n```sh\n",
            "```\n<!-- restore-chunked-without-coffer:end -->",
        );
        let block = &readme[readme.find(begin).unwrap() + begin.len()..readme.find(end).unwrap()];
        assert_eq!(block, RESTORE_SCRIPT);
    }

    #[test]
    fn pack_names() {
        let n = new_pack_name();
        assert_eq!(pack_name(&pack_key(&n)), Some(n.as_str()));
        assert_eq!(pack_name("data/zz/abc"), None);
        assert_eq!(pack_name("x.json"), None);
    }
}
