//! The per-host file cache of chunked backups: for each file of the last
//! run, its identity on disk ([`FileStat`]), its SHA-256 and the
//! addresses of its data chunks. A file whose identity is unchanged, and
//! whose chunks every sink of the run still stores, is not read again:
//! its header is written and its chunks referenced.
//!
//! Only an optimisation: a missing, stale or corrupt cache means more
//! reading, never a wrong snapshot. A file changed in the same second as
//! the run that cached it (racy: a later write in that second could keep
//! its mtime) is never cached, nor are secrets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::FileStat;

const VERSION: u32 = 1;

/// One cached file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedFile {
    pub(crate) stat: FileStat,
    /// SHA-256 of the content, hex.
    pub(crate) sha256: String,
    /// Addresses of its data chunks, hex, in order.
    pub(crate) chunks: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// Bundle path → file.
    files: HashMap<String, CachedFile>,
}

/// The cache of one job and dedup key on this host.
#[derive(Debug, Default)]
pub struct FileCache {
    path: Option<PathBuf>,
    files: HashMap<String, CachedFile>,
}

/// A file this run read or reused: what the next run's cache holds.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) stat: FileStat,
    /// Sequence numbers of its data chunks in the run.
    pub(crate) seqs: std::ops::Range<u64>,
}

impl FileCache {
    /// Where the cache of `job` and dedup key `key_id` is kept:
    /// `$XDG_CACHE_HOME/coffer` (`~/.cache/coffer`).
    pub fn location(job: &str, key_id: &str) -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        let job: String = job
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(base.join("coffer").join(format!("files-{key_id}-{job}.json")))
    }

    /// Loads the cache at `path`; an unreadable one is empty (and says so).
    pub fn load(path: Option<PathBuf>) -> FileCache {
        let files = path
            .as_deref()
            .and_then(|p| match std::fs::read(p) {
                Ok(b) => Some((p, b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!("file cache {}: {e}; reading every file", p.display());
                    None
                }
            })
            .and_then(|(p, b)| match serde_json::from_slice::<CacheFile>(&b) {
                Ok(c) if c.version == VERSION => Some(c.files),
                _ => {
                    tracing::warn!("file cache {} is not readable; reading every file", p.display());
                    None
                }
            })
            .unwrap_or_default();
        FileCache { path, files }
    }

    /// Where it is kept, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The data chunks of the file at bundle path `path`, when the cache
    /// holds that very version of it.
    pub(crate) fn lookup(&self, path: &str, stat: &FileStat) -> Option<(&str, Vec<[u8; 32]>)> {
        let c = self.files.get(path).filter(|c| c.stat == *stat)?;
        let chunks: Option<Vec<[u8; 32]>> = c
            .chunks
            .iter()
            .map(|h| hex::decode(h).ok()?.try_into().ok())
            .collect();
        Some((c.sha256.as_str(), chunks?))
    }

    /// Writes the cache of this run to `path`: the files it `saw`, with their hashes
    /// (`sums`: bundle path → SHA-256) and chunk addresses (`addresses`,
    /// by sequence number); files changed within `racy_after` (ns since
    /// the epoch) of the run's start are left out. Failing to write only
    /// warns. The file is written (and synced) on a blocking thread.
    pub(crate) async fn save(
        path: &Path,
        saw: &[Seen],
        sums: &HashMap<&str, &str>,
        addresses: &[[u8; 32]],
        racy_after: i64,
    ) {
        let mut files = HashMap::new();
        for s in saw {
            if s.stat.mtime_ns >= racy_after || s.stat.ctime_ns >= racy_after {
                continue;
            }
            let (Some(sha), Some(chunks)) = (
                sums.get(s.path.as_str()),
                addresses.get(s.seqs.start as usize..s.seqs.end as usize),
            ) else {
                continue;
            };
            files.insert(
                s.path.clone(),
                CachedFile {
                    stat: s.stat,
                    sha256: sha.to_string(),
                    chunks: chunks.iter().map(hex::encode).collect(),
                },
            );
        }
        let body = serde_json::to_vec(&CacheFile {
            version: VERSION,
            files,
        })
        .expect("serializes");
        let path = path.to_path_buf();
        let written =
            tokio::task::spawn_blocking(move || write_private(&path, &body).map_err(|e| (path, e))).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err((path, e))) => tracing::warn!("cannot write the file cache {}: {e}", path.display()),
            Err(e) => tracing::warn!("cannot write the file cache: {e}"),
        }
    }
}

/// Writes `path` whole or not at all, mode 0600 (staged beside it, then
/// renamed).
fn write_private(path: &Path, body: &[u8]) -> crate::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(format!("creating {}", dir.display()), e))?;
    crate::fsutil::stage_file(path, &mut &body[..], body.len() as u64, 0o600, &mut Vec::new())?.commit()
}
