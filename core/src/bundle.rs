//! The snapshot format: ids, the public index (`<id>.json`), and what is
//! inside the encrypted tar (`sources.json` first, then the entries, then
//! `SHA256SUMS` and `manifest.json`).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, config_error};
use crate::source::SourceReport;

/// Format tag of the public index.
pub const INDEX_FORMAT: &str = "coffer-index/1";
/// Format tag of the manifest inside the bundle.
pub const MANIFEST_FORMAT: &str = "coffer-manifest/1";
/// First entry of the tar: the sources and where they restore to.
pub const SOURCES_ENTRY: &str = "sources.json";
/// Checksums of every file entry, `sha256sum -c` compatible.
pub const SUMS_ENTRY: &str = "SHA256SUMS";

/// One line of `SHA256SUMS`, as GNU `sha256sum` writes it: a name holding a
/// backslash, a newline or a carriage return is escaped (`\\`, `\n`,
/// `\r`) and the line starts with a backslash, so `sha256sum -c` checks it.
pub fn sums_line(sha256: &str, path: &str) -> String {
    if path.contains(['\\', '\n', '\r']) {
        let escaped = path
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{sha256}  {escaped}\n")
    } else {
        format!("{sha256}  {path}\n")
    }
}

/// Parses one line of `SHA256SUMS` (without its `\n`) into `(sha256,
/// path)`, undoing [`sums_line`]'s escapes; `None` if malformed.
pub fn parse_sums_line(line: &str) -> Option<(String, String)> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (sha, path) = line.split_once("  ")?;
    if !escaped {
        return Some((sha.to_string(), path.to_string()));
    }
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            _ => return None,
        }
    }
    Some((sha.to_string(), out))
}
/// Last entry of the tar.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Suffix of the ciphertext object.
pub const OBJECT_SUFFIX: &str = ".coffer";
/// Suffix of the public index object.
pub const INDEX_SUFFIX: &str = ".json";
/// Suffix of the signature stored beside a signed index.
pub const SIGNATURE_SUFFIX: &str = ".sig";

/// A snapshot id: UTC time and a random suffix, e.g.
/// `20261127T221500Z-3f9a1c2e`. Ids sort by time.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A new id for a snapshot taken at `time`.
    pub fn new(time: Timestamp) -> SnapshotId {
        let suffix: u32 = rand::random();
        SnapshotId(format!("{}-{suffix:08x}", time.strftime("%Y%m%dT%H%M%SZ")))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Key of the ciphertext object.
    pub fn object_key(&self) -> String {
        format!("{}{OBJECT_SUFFIX}", self.0)
    }

    /// Key of the public index.
    pub fn index_key(&self) -> String {
        format!("{}{INDEX_SUFFIX}", self.0)
    }

    /// Key of the chunk list of a chunked snapshot.
    pub fn chunks_key(&self) -> String {
        crate::chunked::chunks_key(self)
    }

    /// Key of the index's signature (signed snapshots only).
    pub fn signature_key(&self) -> String {
        format!("{}{SIGNATURE_SUFFIX}", self.0)
    }
}

impl FromStr for SnapshotId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        let ok = b.len() == 25
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z'
            && b[16] == b'-'
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if ok {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(
                Error::new(ErrorKind::ConfigInvalid, format!("`{s}` is not a snapshot id"))
                    .with_hint("ids look like 20261127T221500Z-3f9a1c2e; `coffer list` shows them"),
            )
        }
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compression of the tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// zstd at a level (1–19, default 3), multithreaded.
    Zstd(i32),
    /// gzip at a level (0–9, default 6).
    Gzip(u32),
    /// No compression.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

impl Compression {
    /// Parses `zstd`, `zstd:5`, `gzip`, `gzip:9`, `none`.
    pub fn parse(s: &str) -> Result<Compression> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let bad_level = || config_error(format!("bad compression level in `{s}`"));
        match (name, level) {
            ("zstd", None) => Ok(Compression::Zstd(3)),
            ("zstd", Some(l)) => match l.parse() {
                Ok(l @ 1..=19) => Ok(Compression::Zstd(l)),
                _ => Err(bad_level().with_hint("zstd levels are 1 to 19")),
            },
            ("gzip", None) => Ok(Compression::Gzip(6)),
            ("gzip", Some(l)) => match l.parse() {
                Ok(l @ 0..=9) => Ok(Compression::Gzip(l)),
                _ => Err(bad_level().with_hint("gzip levels are 0 to 9")),
            },
            ("none", None) => Ok(Compression::None),
            _ => Err(config_error(format!("unknown compression `{s}`"))
                .with_hint("use zstd, zstd:LEVEL, gzip, gzip:LEVEL or none")),
        }
    }

    /// The name recorded in the index: `zstd`, `gzip` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd(_) => "zstd",
            Compression::Gzip(_) => "gzip",
            Compression::None => "none",
        }
    }

    /// The inverse of [`Compression::name`] (level irrelevant for reading).
    pub fn from_name(name: &str) -> Result<Compression> {
        match name {
            "zstd" => Ok(Compression::Zstd(3)),
            "gzip" => Ok(Compression::Gzip(6)),
            "none" => Ok(Compression::None),
            _ => Err(Error::new(
                ErrorKind::Unsupported,
                format!("unknown compression `{name}` in index"),
            )
            .with_hint("a newer coffer made this snapshot; upgrade coffer")),
        }
    }
}

/// A source as the public index names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct IndexSource {
    /// Source name in the job.
    pub name: String,
    /// Plugin kind.
    pub kind: String,
    /// Where it is consistent in its change log (the oplog `ts` of a
    /// MongoDB point in time): the base of a point-in-time restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<crate::slices::LogPos>,
}

/// The ciphertext object an index describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct IndexObject {
    /// Key of `<id>.coffer`.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
    /// Bytes of the uncompressed tar stream inside (absent in indexes of
    /// older versions). A restore may then hash the object while it
    /// decrypts it into staging instead of reading it twice: what it stages
    /// is bounded by this signed size, so a forged object cannot fill a disk
    /// beyond what the genuine one would, and nothing leaves staging before
    /// the hash matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_size: Option<u64>,
}

/// How the bundle is encrypted, publicly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct IndexEncryption {
    /// Always `age`.
    pub scheme: String,
    /// `recipients` or `passphrase-scrypt-N`.
    pub mode: String,
    /// Public fingerprints of the recipients (see `RecipientKey::fingerprint`).
    pub recipients: Vec<String>,
}

/// The public index `<id>.json`: no secrets, written after the object, so
/// its presence means the snapshot is complete.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// [`INDEX_FORMAT`].
    pub format: String,
    /// Snapshot id.
    pub id: SnapshotId,
    /// Job that made it (`one-off` for flag-only runs).
    pub job: String,
    /// Snapshot time (RFC 3339, UTC).
    pub created_at: Timestamp,
    /// Host that made it.
    pub host: String,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// coffer version that wrote it.
    pub coffer_version: String,
    /// Sources in the bundle.
    pub sources: Vec<IndexSource>,
    /// The ciphertext object.
    pub object: IndexObject,
    /// Compression name.
    pub compression: String,
    /// Encryption.
    pub encryption: IndexEncryption,
    /// A chunked snapshot: its object is the chunk list `<id>.chunks`
    /// (absent for a bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<crate::chunked::IndexChunks>,
}

impl Index {
    /// Parses and checks an index read from a sink.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<Index> {
        let index: Index = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(ErrorKind::Integrity, format!("unreadable snapshot index: {e}"))
                .with_context("key", key)
        })?;
        if index.format != INDEX_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("unknown index format `{}`", index.format),
            )
            .with_context("key", key));
        }
        if key != index.id.index_key() && !key.ends_with(&format!("/{}", index.id.index_key())) {
            return Err(
                Error::new(ErrorKind::Integrity, "index names another snapshot than its key")
                    .with_context("key", key)
                    .with_context("id", &index.id),
            );
        }
        Ok(index)
    }

    /// Canonical JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("index serializes");
        v.push(b'\n');
        v
    }
}

/// A source as recorded in `sources.json` inside the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct SourceRecord {
    /// Name in the job.
    pub name: String,
    /// Plugin kind.
    pub kind: String,
    /// Description (no secrets).
    pub description: String,
    /// Where it restores to without a config (no secrets).
    pub origin: serde_json::Value,
}

/// `sources.json`: the first entry of the tar.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct SourcesFile {
    /// Snapshot id (binds the bundle to its index).
    pub id: SnapshotId,
    /// The sources, in capture order.
    pub sources: Vec<SourceRecord>,
}

/// One file entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct ManifestEntry {
    /// Path inside the tar.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// A source's report in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct ManifestSource {
    /// Source name.
    pub name: String,
    /// Plugin kind.
    pub kind: String,
    /// What capture reported.
    pub report: SourceReport,
}

/// `manifest.json`: the last entry of the tar.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// Snapshot id (must equal the index's).
    pub id: SnapshotId,
    /// Job name.
    pub job: String,
    /// Snapshot time.
    pub created_at: Timestamp,
    /// Host.
    pub host: String,
    /// coffer version.
    pub coffer_version: String,
    /// Per-source reports.
    pub sources: Vec<ManifestSource>,
    /// Every file entry (also in `SHA256SUMS`).
    pub entries: Vec<ManifestEntry>,
    /// Total bytes of file entries.
    pub total_bytes: u64,
}

/// `base`, or `base-2`, `base-3`, … : the first not in `taken` (names of
/// one-off sources, of the sources of an imported backup).
pub fn unique_source_name(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.contains(n))
        .expect("infinite")
}

/// Checks a source name: it becomes a folder of the bundle
/// (`files/<name>/…`), so only `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_source_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(config_error(format!("invalid source name `{name}`"))
            .with_hint("use letters, digits, '.', '_' and '-' only (the name is a folder in the bundle)"))
    }
}

/// The host name, for indexes.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// An index of snapshot `id` whose object holds `body`, for the unit
/// tests that use the testkit.
#[cfg(all(test, feature = "testkit"))]
pub(crate) fn test_index(id: &SnapshotId, body: &[u8]) -> Index {
    use sha2::Digest;
    Index {
        format: INDEX_FORMAT.into(),
        id: id.clone(),
        job: "j".into(),
        created_at: "2026-11-27T22:15:00Z".parse().unwrap(),
        host: "h".into(),
        tags: vec![],
        coffer_version: "0".into(),
        sources: vec![],
        object: IndexObject {
            key: id.object_key(),
            size: body.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(body)),
            plain_size: None,
        },
        compression: "none".into(),
        encryption: IndexEncryption {
            scheme: "age".into(),
            mode: "recipients".into(),
            recipients: vec![],
        },
        chunks: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_lines_escape_like_gnu_sha256sum() {
        // As `sha256sum` 9.1 prints them.
        let sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
        for (path, line) in [
            ("files/a/plain name", format!("{sha}  files/a/plain name\n")),
            ("files/a/a\nb", format!("\\{sha}  files/a/a\\nb\n")),
            ("files/a/c\\d", format!("\\{sha}  files/a/c\\\\d\n")),
            ("files/a/e\rf", format!("\\{sha}  files/a/e\\rf\n")),
        ] {
            assert_eq!(sums_line(sha, path), line);
            let parsed = parse_sums_line(line.strip_suffix('\n').unwrap()).unwrap();
            assert_eq!(parsed, (sha.to_string(), path.to_string()));
        }
        // Lines of older bundles with a backslash in a name were not escaped.
        assert_eq!(
            parse_sums_line(&format!("{sha}  files/a/c\\d")).unwrap().1,
            "files/a/c\\d"
        );
        assert!(parse_sums_line(&format!("\\{sha}  files/a/bad\\x")).is_none());
        assert!(parse_sums_line("no separator").is_none());
    }

    #[test]
    fn ids_parse_and_sort() {
        let t: Timestamp = "2026-11-27T22:15:00Z".parse().unwrap();
        let id = SnapshotId::new(t);
        assert!(id.as_str().starts_with("20261127T221500Z-"));
        assert_eq!(id.as_str().parse::<SnapshotId>().unwrap(), id);
        assert!("20261127T221500Z-3F9A1C2E".parse::<SnapshotId>().is_err());
        assert!("latest".parse::<SnapshotId>().is_err());
        let later = SnapshotId::new("2026-11-28T00:00:00Z".parse().unwrap());
        assert!(later > id);
    }

    #[test]
    fn compression_parse() {
        assert_eq!(Compression::parse("zstd").unwrap(), Compression::Zstd(3));
        assert_eq!(Compression::parse("zstd:19").unwrap(), Compression::Zstd(19));
        assert_eq!(Compression::parse("gzip:9").unwrap(), Compression::Gzip(9));
        assert!(Compression::parse("zstd:30").is_err());
        assert!(Compression::parse("lz4").is_err());
    }
}
