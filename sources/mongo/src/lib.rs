//! coffer-source-mongo: backs up MongoDB databases as raw BSON in
//! mongodump's layout (`mongo/<source>/<db>/<coll>.bson` and
//! `<coll>.metadata.json`) and restores them through staging collections.
//!
//! - Documents are streamed as raw BSON (`RawDocumentBuf`), never decoded
//!   and re-encoded, so every value round-trips byte-identical.
//! - `.metadata.json` is canonical Extended JSON v2 with key order kept:
//!   `options` from `listCollections`, `indexes` from `listIndexes`,
//!   `uuid` as 32 hex digits, `collectionName`, `type`; views are metadata
//!   only; file names are escaped as mongodump escapes them.
//! - A collection is held in memory up to 8 MiB, beyond that in a temp file
//!   encrypted with an ephemeral key: never plaintext on disk.
//! - The report gives per collection the document count, bytes, index
//!   count and SHA-256 of the `.bson`, plus server version, start and end
//!   time, and the consistency of the dump: a point in time where the
//!   server has an oplog (the entries written during the dump are stored
//!   as `mongo/<source>/oplog.bson` and replayed on restore as ordinary
//!   writes, see `oplog.rs`), else per collection.
//! - The connection string's password never appears in descriptions,
//!   errors, manifests or logs (`user:***@`).
//! - A restore (`--mongo-uri URI`, `--drop`) fills staging collections,
//!   builds their indexes, checks their counts and swaps them in only when
//!   the whole bundle verified; without `--drop`, existing documents are
//!   kept and counted as conflicts. Staging collections a killed restore
//!   left behind are dropped by the next restore of the same collection;
//!   where the server cannot rename collections, replacing an existing
//!   one needs `--unsafe-in-place` (drop, recreate, fill: not atomic).
//!
//! ```toml
//! [source.db]
//! kind = "mongo"
//! uri-env = "ISSUER_DIRECTORY_MONGO_CONNECTION_STRING"
//! databases = ["issuer-directory"]
//! ```
//!
//! or, one-off: `--source mongo:mongodb://host:27017/issuer-directory`,
//! `--source mongo-env:VAR`.
//!
//! Existing mongodump output (a directory, plain or `--gzip`, or an
//! `--archive` file, plain or gzipped) is read by the `mongodump` kind
//! (`--source mongodump:PATH`, or `kind = "mongodump"` with `path = "…"`),
//! which emits the same entries, so it restores the same way.
//!
//! ```
//! let mut registry = coffer_core::Registry::new();
//! coffer_source_mongo::register(&mut registry);
//! let (factory, spec) = registry.source_spec("mongo:mongodb://u:pw@h:27017/app").unwrap();
//! assert_eq!(factory.spec_name(spec), "app");
//! let source = factory.from_spec("app", spec).unwrap();
//! assert_eq!(source.info().description, "mongo mongodb://u:***@h:27017/app");
//! ```
#![deny(missing_docs)]

mod checks;
mod config;
mod deep;
mod drill;
mod dump;
mod error;
mod follow;
mod kinds;
mod metadata;
mod ns;
mod oplog;
mod restore;
mod source;
mod uri;

use std::sync::Arc;

pub use checks::{AuditCheck, MongoCountsCheck, MongoTarget, expected_counts};
pub use coffer_core::spill::{Spill, SpillBody};
pub use config::MongoSourceConfig;
pub use deep::DumpCheck;
pub use dump::MongodumpSource;
pub use source::MongoSource;

/// The TOML `kind` and one-off prefix of this source: `mongo`.
pub const KIND: &str = "mongo";

/// The one-off prefix reading the URI from an environment variable:
/// `mongo-env:VAR`.
pub const ENV_KIND: &str = "mongo-env";

/// The TOML `kind` and one-off prefix reading an existing mongodump
/// directory or `--archive` file: `mongodump:PATH`.
pub const DUMP_KIND: &str = "mongodump";

/// Registers the `mongo`, `mongo-env` and `mongodump` source kinds and the
/// `mongo-counts` and `audit` check kinds.
pub fn register(reg: &mut coffer_core::Registry) {
    use kinds::MongoKind;
    for kind in [MongoKind::Mongo, MongoKind::MongoEnv, MongoKind::Mongodump] {
        reg.register_source(Arc::new(kind));
    }
    checks::register(reg);
}

/// The restore option naming the server (`--opt mongo.uri`, `--mongo-uri`).
pub(crate) const URI_OPTION: &str = "uri";

/// The kinds whose restorers write to a server (they share the restore
/// options and their flags).
pub(crate) const SERVER_KINDS: [&str; 2] = [KIND, DUMP_KIND];

/// The restore options of the `mongo` and `mongodump` kinds (`--opt
/// mongo.uri=…`); the built-in flags of `coffer restore` are their aliases.
pub fn restore_options() -> Vec<coffer_core::RestoreOptionSpec> {
    use coffer_core::OptionKind::{Flag, List, Text};
    let spec = |name, kind, help, alias| coffer_core::RestoreOptionSpec {
        name,
        kind,
        help,
        alias: Some(alias),
        env: None,
    };
    vec![
        coffer_core::RestoreOptionSpec {
            name: URI_OPTION,
            kind: Text,
            help: "the MongoDB server: a restore (or a drill's scratch databases) goes there instead of the one \
                   dumped from, and checks that name no server count there (prefer the variable: a password on \
                   the command line is visible to other users)",
            alias: Some("--mongo-uri"),
            env: Some("COFFER_MONGO_URI"),
        },
        spec(
            "drop",
            Flag,
            "replace each existing collection with the bundle's (swapped in whole, after it was staged and \
             counted); without it documents are only inserted, and existing `_id`s are kept and counted as conflicts",
            "--drop",
        ),
        spec(
            "unsafe-in-place",
            Flag,
            "with --drop, where the server cannot rename: drop and insert in place (not atomic: a failure half-way \
             leaves that collection partial until run again)",
            "--unsafe-in-place",
        ),
        coffer_core::RestoreOptionSpec {
            name: "always-stage",
            kind: Flag,
            help: "stage new collections too, so their data appears only whole (slower: the swap copies it on \
                   servers whose rename copies); by default a collection the target lacks is loaded in place, \
                   marked unfinished until done",
            alias: None,
            env: None,
        },
        spec(
            "ns-include",
            List,
            "restore only the collections matching this `db.collection` glob",
            "--ns-include",
        ),
        spec(
            "ns-exclude",
            List,
            "leave out the collections matching this glob",
            "--ns-exclude",
        ),
        spec(
            "ns-from",
            List,
            "rename the namespaces matching this pattern (in pairs with ns-to)",
            "--ns-from",
        ),
        spec("ns-to", List, "the new name for the matching ns-from", "--ns-to"),
    ]
}
