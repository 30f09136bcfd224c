//! Names and files of the bundle and signature formats (see
//! `docs/restore-without-coffer.md`): the entries every bundle holds, and
//! the detached signature of an index.

pub use crate::bundle::{MANIFEST_ENTRY, ManifestEntry, SOURCES_ENTRY, SUMS_ENTRY};
pub use crate::signing::{
    PUBLIC_KEY_PREFIX, SIGNATURE_CONTEXT, SIGNATURE_FORMAT, SignatureFile, check_signature,
};
