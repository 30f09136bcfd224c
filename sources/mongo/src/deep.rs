//! [`DumpCheck`]: `verify --deep` of a MongoDB source's entries, beyond
//! their hashes: every `.bson` file parses as a sequence of well-formed
//! documents (length prefix, terminating byte, every element readable, an
//! `_id` on each), every `.metadata.json` parses, and each collection holds
//! exactly the documents the manifest counted at backup time.

use std::collections::BTreeMap;
use std::io::Read;

use coffer_core::{Error, ErrorKind, Result, format::ManifestSource};
use mongodb::bson::RawDocument;

use crate::metadata::{escape_name, parse};
use crate::oplog::OPLOG_FILE;

/// The largest document a server accepts (16 MiB), plus mongodump's slack
/// for internal fields.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;

impl coffer_core::EntryCheck for DumpCheck {
    fn entry(&mut self, entry: coffer_core::RestoreEntry<'_>) -> Result<()> {
        match entry.kind {
            coffer_core::RestoreEntryKind::File { size } => {
                DumpCheck::entry(self, entry.path, entry.reader, size)
            }
            _ => Ok(()),
        }
    }

    fn finish(self: Box<Self>, manifest: &ManifestSource) -> Result<()> {
        DumpCheck::finish(*self, manifest).map(|_| ())
    }
}

/// Checks the entries of one MongoDB source (kinds `mongo`, `mongo-env`,
/// `mongodump`) as they stream by.
#[derive(Debug, Default)]
pub struct DumpCheck {
    /// `db/escaped-collection` → documents read.
    counts: BTreeMap<String, u64>,
    /// Collections with a metadata file.
    metadata: usize,
}

impl DumpCheck {
    /// A check with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one entry of the source (`path` relative to
    /// `mongo/<source>/`, `size` bytes from `reader`).
    pub fn entry(&mut self, path: &str, reader: &mut dyn Read, size: u64) -> Result<()> {
        if let Some(base) = path.strip_suffix(".metadata.json") {
            let mut text = Vec::new();
            reader
                .take(size.min(64 << 20))
                .read_to_end(&mut text)
                .map_err(|e| Error::io("cannot read the bundle", e))?;
            parse(&text, path)?;
            let _ = base;
            self.metadata += 1;
        } else if let Some(base) = path.strip_suffix(".bson") {
            let needs_id = path != OPLOG_FILE;
            let n = documents(reader, size, path, needs_id)?;
            if needs_id {
                self.counts.insert(base.to_string(), n);
            }
        }
        Ok(())
    }

    /// Compares the documents read with the manifest's counts of this
    /// source; returns the number of collections and documents checked.
    pub fn finish(self, manifest: &ManifestSource) -> Result<(usize, u64)> {
        let list = manifest
            .report
            .details
            .get("collections")
            .and_then(|c| c.as_array());
        let mut expected = BTreeMap::new();
        for c in list.into_iter().flatten() {
            if let (Some(db), Some(coll), Some(n), Some("collection")) = (
                c["db"].as_str(),
                c["collection"].as_str(),
                c["documents"].as_u64(),
                c["type"].as_str(),
            ) {
                expected.insert(format!("{db}/{}", escape_name(coll)), (format!("{db}.{coll}"), n));
            }
        }
        let mut differ = Vec::new();
        for (key, (ns, want)) in &expected {
            match self.counts.get(key) {
                Some(n) if n == want => {}
                Some(n) => differ.push(format!(
                    "{ns}: {n} documents in the bundle, {want} in the manifest"
                )),
                None => differ.push(format!("{ns}: in the manifest, not in the bundle")),
            }
        }
        for key in self.counts.keys().filter(|k| !expected.contains_key(*k)) {
            differ.push(format!("{key}.bson: in the bundle, not in the manifest"));
        }
        if !differ.is_empty() {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "source `{}`: collection counts differ: {}",
                    manifest.name,
                    differ.join("; ")
                ),
            )
            .with_hint("the bundle does not hold what its backup counted; restore another snapshot"));
        }
        Ok((self.counts.len(), self.counts.values().sum()))
    }
}

/// Reads `size` bytes of back-to-back BSON documents; their number.
fn documents(reader: &mut dyn Read, size: u64, path: &str, needs_id: bool) -> Result<u64> {
    let bad = |n: u64, what: String| {
        Error::new(
            ErrorKind::Integrity,
            format!("malformed BSON: document {} {what}", n + 1),
        )
        .with_context("path", coffer_core::printable(path))
        .with_hint("the bundle is damaged or forged; restore another snapshot")
    };
    let io = |e| Error::io("cannot read the bundle", e);
    let mut left = size;
    let mut n = 0u64;
    let mut buf = Vec::new();
    while left > 0 {
        if left < 5 {
            return Err(bad(n, format!("is cut short ({left} bytes left)")));
        }
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(io)?;
        let len = i32::from_le_bytes(len);
        if len < 5 || len as usize > MAX_DOCUMENT || len as u64 > left {
            return Err(bad(n, format!("claims {len} bytes")));
        }
        buf.clear();
        buf.extend_from_slice(&len.to_le_bytes());
        buf.resize(len as usize, 0);
        reader.read_exact(&mut buf[4..]).map_err(io)?;
        let doc = RawDocument::from_bytes(&buf).map_err(|e| bad(n, e.to_string()))?;
        let mut has_id = false;
        for element in doc.iter() {
            let (key, _) = element.map_err(|e| bad(n, e.to_string()))?;
            has_id |= key == "_id";
        }
        if needs_id && !has_id {
            return Err(bad(n, "has no _id".into()));
        }
        left -= len as u64;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn bson(docs: &[mongodb::bson::Document]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in docs {
            d.to_writer(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn documents_are_counted_and_damage_is_found() {
        let data = bson(&[doc! {"_id": 1, "a": "x"}, doc! {"_id": 2}]);
        assert_eq!(
            documents(&mut &data[..], data.len() as u64, "d/c.bson", true).unwrap(),
            2
        );
        // Cut short, a lying length, a missing _id, a broken element.
        let cut = &data[..data.len() - 3];
        let e = documents(&mut &cut[..], cut.len() as u64, "d/c.bson", true).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        let mut lying = data.clone();
        lying[0] = 0xff;
        assert!(documents(&mut &lying[..], lying.len() as u64, "d/c.bson", true).is_err());
        let no_id = bson(&[doc! {"a": 1}]);
        let e = documents(&mut &no_id[..], no_id.len() as u64, "d/c.bson", true).unwrap_err();
        assert!(e.to_string().contains("no _id"), "{e}");
        assert_eq!(
            documents(&mut &no_id[..], no_id.len() as u64, "oplog.bson", false).unwrap(),
            1
        );
        let mut broken = data.clone();
        broken[4] = 0x20; // an element type that does not exist
        assert!(documents(&mut &broken[..], broken.len() as u64, "d/c.bson", true).is_err());
    }
}
