//! `coffer oplog export`: the base snapshot's dump of one source and the
//! archived oplog up to a target, as a directory the real `mongorestore
//! --oplogReplay --dir DIR` restores: the source's files as the bundle
//! holds them (`<db>/<coll>.bson`, `<db>/<coll>.metadata.json`) and
//! `oplog.bson` at the top, one BSON document per entry in `ts` order (the
//! snapshot's own entries, then the archived ones after its position up to
//! the target).
//!
//! The directory is written under a temp name beside it and renamed into
//! place only when the snapshot verified (hash, `SHA256SUMS`) and every
//! slice was written, so a failed export leaves nothing.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::LogPos;
use super::pitr::LogReplay;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{
    CaptureContext, EntrySender, RestoreEntry, RestoreEntryKind, RestoreOptions, RestoreReport, Restorer,
    Source, SourceInfo, SourceReport,
};

/// The oplog's file name, in the bundle and in the export.
pub const OPLOG_FILE: &str = "oplog.bson";

/// A restore target that writes one source's entries into a directory.
#[derive(Debug)]
pub struct DirSource {
    kind: &'static str,
    name: String,
    dir: PathBuf,
}

impl DirSource {
    /// Entries of source `name` (of kind `kind`) go under `dir`.
    pub fn new(kind: &'static str, name: &str, dir: &Path) -> DirSource {
        DirSource {
            kind,
            name: name.to_string(),
            dir: dir.to_path_buf(),
        }
    }
}

#[async_trait]
impl Source for DirSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::new(
            self.kind,
            &self.name,
            format!("export to {}", self.dir.display()),
            serde_json::Value::Null,
        )
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }

    async fn capture(&self, _: &CaptureContext, _: EntrySender) -> Result<SourceReport> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "an export directory is not backed up",
        ))
    }

    async fn restore(&self, _: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        Ok(Box::new(DirRestorer {
            dir: self.dir.clone(),
            files: 0,
        }))
    }
}

struct DirRestorer {
    dir: PathBuf,
    files: u64,
}

impl Restorer for DirRestorer {
    fn entry(&mut self, entry: RestoreEntry<'_>) -> Result<()> {
        let path = self.dir.join(entry.path);
        match entry.kind {
            RestoreEntryKind::File { size } => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io("creating the export directory", e))?;
                }
                let mut out =
                    File::create(&path).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                let copied = std::io::copy(&mut entry.reader.take(size), &mut out)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                if copied != size {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        "an entry is shorter than its header says",
                    ));
                }
                self.files += 1;
            }
            RestoreEntryKind::Dir => {
                std::fs::create_dir_all(&path).map_err(|e| Error::io("creating the export directory", e))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _commit: bool) -> Result<RestoreReport> {
        Ok(RestoreReport {
            summary: format!("{} files", self.files),
            ..Default::default()
        })
    }
}

/// The position of a BSON oplog entry: its top-level `ts` (a BSON
/// timestamp: increment, then seconds, little-endian).
pub fn bson_ts(doc: &[u8]) -> Option<LogPos> {
    let len = u32::from_le_bytes(doc.get(..4)?.try_into().ok()?) as usize;
    let doc = doc.get(..len)?;
    let mut at = 4;
    while at < len.saturating_sub(1) {
        let kind = doc[at];
        at += 1;
        let name_end = at + doc[at..].iter().position(|&b| b == 0)?;
        let name = &doc[at..name_end];
        at = name_end + 1;
        let i32_at = |p: usize| -> Option<usize> {
            Some(u32::from_le_bytes(doc.get(p..p + 4)?.try_into().ok()?) as usize)
        };
        let size = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => 8,
            0x02 | 0x0D | 0x0E => 4 + i32_at(at)?,
            0x03 | 0x04 | 0x0F => i32_at(at)?,
            0x05 => 5 + i32_at(at)?,
            0x06 | 0x0A | 0x7F | 0xFF => 0,
            0x07 => 12,
            0x08 => 1,
            0x0B => {
                let a = doc[at..].iter().position(|&b| b == 0)? + 1;
                let b = doc[at + a..].iter().position(|&b| b == 0)? + 1;
                a + b
            }
            0x0C => 4 + i32_at(at)? + 12,
            0x10 => 4,
            0x13 => 16,
            _ => return None,
        };
        if name == b"ts" && kind == 0x11 {
            let v = doc.get(at..at + 8)?;
            return Some(LogPos {
                i: u32::from_le_bytes(v[..4].try_into().ok()?),
                t: u32::from_le_bytes(v[4..].try_into().ok()?),
            });
        }
        at += size;
    }
    None
}

/// Appends the replay's entries after its base position up to its target
/// to `out`; returns how many.
pub fn append_replay(replay: &LogReplay, out: &Path) -> Result<u64> {
    let Some(body) = replay.take() else {
        return Ok(0);
    };
    let mut reader = std::io::BufReader::new(body.reader);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
    let mut w = BufWriter::new(file);
    let mut left = body.size;
    let mut n = 0;
    let bad = || Error::new(ErrorKind::Integrity, "an archived oplog entry is malformed");
    while left > 0 {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(|_| bad())?;
        let size = u32::from_le_bytes(len) as usize;
        if size < 5 || size as u64 > left {
            return Err(bad());
        }
        let mut doc = vec![0u8; size];
        doc[..4].copy_from_slice(&len);
        reader.read_exact(&mut doc[4..]).map_err(|_| bad())?;
        left -= size as u64;
        let ts = bson_ts(&doc).ok_or_else(bad)?;
        if ts > replay.after && ts <= replay.until {
            w.write_all(&doc)
                .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
            n += 1;
        }
    }
    w.flush()
        .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
    w.get_ref()
        .sync_all()
        .map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ts_after_other_fields() {
        // {op: "i", n: 1.5, o: {_id: 1}, ts: Timestamp(1700000000, 7)}
        let mut d = Vec::new();
        d.extend_from_slice(&[0; 4]);
        d.push(0x02);
        d.extend_from_slice(b"op\0");
        d.extend_from_slice(&2u32.to_le_bytes());
        d.extend_from_slice(b"i\0");
        d.push(0x01);
        d.extend_from_slice(b"n\0");
        d.extend_from_slice(&1.5f64.to_le_bytes());
        d.push(0x03);
        d.extend_from_slice(b"o\0");
        let sub = [
            &14u32.to_le_bytes()[..],
            &[0x10],
            b"_id\0",
            &1u32.to_le_bytes(),
            &[0],
        ]
        .concat();
        d.extend_from_slice(&sub);
        d.push(0x11);
        d.extend_from_slice(b"ts\0");
        d.extend_from_slice(&7u32.to_le_bytes());
        d.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        d.push(0);
        let len = d.len() as u32;
        d[..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            bson_ts(&d),
            Some(LogPos {
                t: 1_700_000_000,
                i: 7
            })
        );
        assert_eq!(bson_ts(&d[..10]), None);
    }
}
