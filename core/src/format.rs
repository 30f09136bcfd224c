//! Names and files of the bundle and signature formats (see
//! `docs/restore-without-coffer.md`): the entries every bundle holds, and
//! the detached signature of an index.

pub use crate::bundle::{
    Compression, INDEX_FORMAT, INDEX_SUFFIX, Index, IndexEncryption, IndexObject, IndexSource,
    MANIFEST_ENTRY, Manifest, ManifestEntry, ManifestSource, OBJECT_SUFFIX, SOURCES_ENTRY, SUMS_ENTRY,
    SnapshotId, SourceRecord, SourcesFile, check_source_name, hostname, unique_source_name,
};
pub use crate::signing::{
    PUBLIC_KEY_PREFIX, SIGNATURE_CONTEXT, SIGNATURE_FORMAT, SignatureFile, check_signature,
};
