//! Helpers of the restore tests: capture a source's entries in memory and
//! feed them to its restorer as the bundle pipeline does.

#![allow(dead_code)]

use std::io::Read;
use std::sync::Arc;

use coffer_core::{
    Area, CaptureContext, EntryBody, EntrySender, Registry, RestoreEntry, RestoreEntryKind, RestoreOptions,
    RestoreReport, Source, SourceReport,
};
use mongodb::Client;
use mongodb::bson::{Document, doc};

/// A captured entry: path and content.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub data: Vec<u8>,
}

/// A source from a one-off spec such as `mongo:URI` or `mongodump:PATH`.
pub fn source(spec: &str) -> Arc<dyn Source> {
    let mut reg = Registry::new();
    coffer_source_mongo::register(&mut reg);
    let (factory, rest) = reg.source_spec(spec).expect("spec");
    factory.from_spec("db", rest).expect("source")
}

/// Runs a capture, returning the entries sorted by path.
pub async fn capture(src: &dyn Source) -> coffer_core::Result<(Vec<Captured>, SourceReport)> {
    let (tx, mut rx) = EntrySender::channel(4);
    let drain = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(entry) = rx.recv().await {
            assert_eq!(entry.area, Area::Mongo);
            let EntryBody::File { size, mut reader } = entry.body else {
                panic!("not a file: {}", entry.path)
            };
            let data = tokio::task::spawn_blocking(move || {
                let mut data = Vec::new();
                reader.read_to_end(&mut data).unwrap();
                data
            })
            .await
            .unwrap();
            assert_eq!(data.len() as u64, size, "{}", entry.path);
            out.push(Captured {
                path: entry.path,
                data,
            });
        }
        out
    });
    let report = src.capture(&CaptureContext::new("test"), tx).await;
    let mut entries = drain.await.unwrap();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((entries, report?))
}

/// Restores `entries` through `src`'s restorer into `uri` with `params`
/// (besides `uri`), metadata before data as in a bundle.
pub async fn restore(
    src: &dyn Source,
    entries: &[Captured],
    uri: &str,
    params: &[(&str, &str)],
) -> coffer_core::Result<RestoreReport> {
    restore_with(src, entries, uri, params, true).await
}

/// [`restore`], finishing with `commit` (false: abort after staging).
pub async fn restore_with(
    src: &dyn Source,
    entries: &[Captured],
    uri: &str,
    params: &[(&str, &str)],
    commit: bool,
) -> coffer_core::Result<RestoreReport> {
    restore_hooked(src, entries, uri, params, commit, || {}).await
}

/// [`restore_with`], running `before_finish` (on the restore's blocking
/// thread) once every entry was fed, before the restorer finishes.
pub async fn restore_hooked(
    src: &dyn Source,
    entries: &[Captured],
    uri: &str,
    params: &[(&str, &str)],
    commit: bool,
    before_finish: impl FnOnce() + Send + 'static,
) -> coffer_core::Result<RestoreReport> {
    let mut opts = RestoreOptions::default();
    let kind = src.info().kind;
    opts.params.insert(kind, "uri", uri);
    for (k, v) in params {
        opts.params.insert(kind, k, *v);
    }
    let restorer = src.restore(&opts.for_kind(kind)).await?;
    let mut entries = entries.to_vec();
    entries.sort_by_key(|e| !e.path.ends_with(".metadata.json"));
    tokio::task::spawn_blocking(move || {
        let mut restorer = restorer;
        for e in &entries {
            let mut reader = std::io::Cursor::new(&e.data[..]);
            let fed = restorer.entry(RestoreEntry {
                area: Area::Mongo,
                path: &e.path,
                mode: 0o644,
                mtime: 0,
                owner: None,
                kind: RestoreEntryKind::File {
                    size: e.data.len() as u64,
                },
                reader: &mut reader,
            });
            if let Err(err) = fed {
                // As the pipeline does: abort after a failed entry.
                restorer.finish(false).expect("abort");
                return Err(err);
            }
        }
        before_finish();
        restorer.finish(commit)
    })
    .await
    .unwrap()
}

/// A source server and a target server, with a client of each; `None`
/// when the server binary is missing outside CI (the test then skips).
pub async fn source_and_target() -> Option<(
    crate::common::MongoServer,
    crate::common::MongoServer,
    Client,
    Client,
)> {
    let (Some(a), Some(b)) = (
        crate::common::MongoServer::start(),
        crate::common::MongoServer::start(),
    ) else {
        return None;
    };
    let (ca, cb) = (client(&a.uri("")).await, client(&b.uri("")).await);
    Some((a, b, ca, cb))
}

/// A client of `uri`.
pub async fn client(uri: &str) -> Client {
    Client::with_uri_str(uri).await.unwrap()
}

/// The collection names of `db`, sorted.
/// Inserts `{_id: 0}` … `{_id: n - 1}` into `db.coll`.
pub async fn seed(db: &mongodb::Database, coll: &str, n: i32) {
    db.collection::<Document>(coll)
        .insert_many((0..n).map(|i| doc! { "_id": i }))
        .await
        .unwrap();
}

pub async fn names(client: &Client, db: &str) -> Vec<String> {
    let mut n = client.database(db).list_collection_names().await.unwrap();
    n.sort();
    n
}

/// The documents of `db.coll` in natural order.
pub async fn docs(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    use futures::TryStreamExt;
    client
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The index specs of `db.coll`, sorted by name.
pub async fn index_specs(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    use futures::TryStreamExt;
    let mut specs: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    specs.sort_by(|x, y| x.get_str("name").unwrap().cmp(y.get_str("name").unwrap()));
    specs
}

/// The `listCollections` options of `db`, by collection name.
pub async fn collection_options(client: &Client, db: &str) -> std::collections::BTreeMap<String, Document> {
    use futures::TryStreamExt;
    let specs: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    specs
        .into_iter()
        .map(|s| {
            let name = s.get_str("name").unwrap().to_string();
            let options = s.get_document("options").cloned().unwrap_or_default();
            (name, options)
        })
        .collect()
}
