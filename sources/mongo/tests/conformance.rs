//! The `mongo` and `mongodump` sources pass coffer's source conformance
//! kit with a MongoDB observer: a dry run and an aborted restore leave the
//! target database untouched (no staging collection left), and a committed
//! restore leaves it holding exactly the captured documents.

use coffer_e2e::mongo_server as common;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use coffer_core::testkit::{CapturedEntry, RestoreObserver, source_suite_with};
use coffer_core::{RestoreEntryKind, RestoreOptions};
use futures::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{RawDocument, RawDocumentBuf, doc};

/// Restores the database `from` of a snapshot into `into` on `uri`, and
/// reads every collection of `into` back: its documents' raw bytes, sorted
/// (an order both sides share, whatever the server's natural order).
struct MongoObserver {
    uri: String,
    client: Client,
    from: String,
    into: String,
}

fn sorted_docs(mut docs: Vec<Vec<u8>>) -> Vec<u8> {
    docs.sort();
    docs.concat()
}

#[async_trait]
impl RestoreObserver for MongoObserver {
    fn options(&self, dry_run: bool) -> RestoreOptions {
        let mut opts = RestoreOptions::default();
        opts.dry_run = dry_run;
        // Both kinds: the suite runs a `mongo` and a `mongodump` source.
        for kind in [coffer_source_mongo::KIND, coffer_source_mongo::DUMP_KIND] {
            opts.params.insert(kind, "uri", self.uri.clone());
            opts.params.insert(kind, "ns-from", format!("{}.*", self.from));
            opts.params.insert(kind, "ns-to", format!("{}.*", self.into));
            opts.params.insert(kind, "drop", "true");
        }
        opts
    }

    async fn observe(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let db = self.client.database(&self.into);
        let mut out = BTreeMap::new();
        for name in db.list_collection_names().await.map_err(|e| e.to_string())? {
            if name.starts_with("system.") {
                continue;
            }
            let docs: Vec<RawDocumentBuf> = db
                .collection::<RawDocumentBuf>(&name)
                .find(doc! {})
                .await
                .map_err(|e| e.to_string())?
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            out.insert(
                name,
                sorted_docs(docs.into_iter().map(|d| d.into_bytes()).collect()),
            );
        }
        Ok(out)
    }

    fn expected(&self, entries: &[CapturedEntry]) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in entries {
            let (Some(rest), RestoreEntryKind::File { .. }) =
                (e.path.strip_prefix(&format!("{}/", self.from)), &e.kind)
            else {
                continue;
            };
            let Some(coll) = rest.strip_suffix(".bson") else {
                continue;
            };
            let mut docs = Vec::new();
            let mut pos = 0;
            while pos < e.data.len() {
                let len = i32::from_le_bytes(e.data[pos..pos + 4].try_into().unwrap()) as usize;
                RawDocument::from_bytes(&e.data[pos..pos + len]).expect("a captured document");
                docs.push(e.data[pos..pos + len].to_vec());
                pos += len;
            }
            out.insert(coll.to_string(), sorted_docs(docs));
        }
        out
    }

    fn stable_mtimes(&self) -> bool {
        // A dump's entries carry the dump's own time.
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mongo_source_passes_the_source_suite() {
    let Some(server) = common::MongoServer::start() else {
        return;
    };
    let client = support::client(&server.uri("")).await;
    let app = client.database("app");
    support::seed(&app, "users", 25).await;
    app.collection::<mongodb::bson::Document>("orders")
        .insert_many(
            (0..7).map(|i| doc! { "_id": format!("o{i}"), "total": i * 10, "lines": [{ "sku": "a" }] }),
        )
        .await
        .unwrap();
    let source = support::source(&format!("mongo:{}", server.uri("app")));
    let observer = MongoObserver {
        uri: server.uri(""),
        client: client.clone(),
        from: "app".into(),
        into: "app-suite".into(),
    };
    let entries = source_suite_with(source.as_ref(), &observer).await;
    assert!(entries.iter().any(|e| e.path == "app/users.bson"));
    // The source database is as it was.
    assert_eq!(support::docs(&client, "app", "users").await.len(), 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mongodump_source_passes_the_source_suite() {
    let Some(server) = common::MongoServer::start() else {
        return;
    };
    let client = support::client(&server.uri("")).await;
    let dump = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mongodump/test.bar.archive");
    let source = support::source(&format!("mongodump:{}", dump.display()));
    let observer = MongoObserver {
        uri: server.uri(""),
        client,
        from: "test".into(),
        into: "dump-suite".into(),
    };
    let entries = source_suite_with(source.as_ref(), &observer).await;
    assert!(
        entries.iter().any(|e| e.path == "test/bar.bson"),
        "{:?}",
        entries.iter().map(|e| &e.path).collect::<Vec<_>>()
    );
}
