//! The oplog as a change log a follower archives (`coffer oplog follow`):
//! a tailable, awaiting cursor on `local.oplog.rs` from the entry to resume
//! after, read by its own task into a bounded queue, so waiting for the
//! next entry never cancels a driver call half-way.
//!
//! Entries of the source's databases and selected collections are kept
//! whole (a transaction's `applyOps` entry stays one entry); others (other
//! databases, no-ops, a restore's staging collections) only advance the
//! archived position, which is how an idle database's covered time moves
//! on (the server's periodic no-op entries).

use std::time::Duration;

use async_trait::async_trait;
use coffer_core::slices::follow::{ChangeLog, LogEntry, LogTail, LogWindow, Resume};
use coffer_core::slices::{LogMark, LogPos};
use coffer_core::{Result, config_error};
use mongodb::bson::{RawDocument, RawDocumentBuf, Timestamp, doc};
use mongodb::options::{CursorType, Hint};
use mongodb::{Client, Collection};
use tokio::sync::mpsc;

use crate::error::driver;
use crate::oplog::wanted;
use crate::source::MongoSource;
use crate::uri::redact;

/// Entries queued between the cursor task and the follower.
const QUEUE: usize = 8192;
/// How long the server holds a `getMore` open waiting for entries.
const AWAIT: Duration = Duration::from_secs(1);

/// A MongoDB source's oplog.
pub(crate) struct MongoLog {
    pub(crate) source: MongoSource,
    client: tokio::sync::OnceCell<(Client, String)>,
    /// The oldest entry and when it was read: finding it scans the whole
    /// oplog on some servers, so it is asked once a minute.
    oldest: std::sync::Mutex<Option<(std::time::Instant, Option<LogPos>)>>,
}

/// How long the oldest entry read stays good for the window.
const OLDEST_TTL: Duration = Duration::from_secs(60);

impl MongoLog {
    pub(crate) fn new(source: MongoSource) -> MongoLog {
        MongoLog {
            source,
            client: tokio::sync::OnceCell::new(),
            oldest: std::sync::Mutex::new(None),
        }
    }
}

fn oplog(client: &Client) -> Collection<RawDocumentBuf> {
    client.database("local").collection("oplog.rs")
}

fn pos(ts: Timestamp) -> LogPos {
    LogPos {
        t: ts.time,
        i: ts.increment,
    }
}

fn term(entry: &RawDocument) -> Option<i64> {
    match entry.get("t").ok().flatten()? {
        mongodb::bson::RawBsonRef::Int64(t) => Some(t),
        mongodb::bson::RawBsonRef::Int32(t) => Some(i64::from(t)),
        _ => None,
    }
}

/// The position and term of an entry (`None` without a `ts`).
pub(crate) fn mark(entry: &RawDocument) -> Option<LogMark> {
    let ts = entry.get_timestamp("ts").ok()?;
    Some(LogMark {
        ts: pos(ts),
        term: term(entry),
    })
}

impl MongoLog {
    async fn client(&self) -> Result<(Client, String)> {
        let (client, uri) = self
            .client
            .get_or_try_init(|| async {
                let uri = self.source.uri_string()?;
                let client = self.source.connect(&uri).await?;
                Ok::<_, coffer_core::Error>((client, uri))
            })
            .await?;
        Ok((client.clone(), uri.clone()))
    }

    async fn edge(&self, client: &Client, uri: &str, dir: i32) -> Result<Option<RawDocumentBuf>> {
        oplog(client)
            .find_one(doc! {})
            .sort(doc! { "$natural": dir })
            .hint(Hint::Keys(doc! { "$natural": dir }))
            .projection(doc! { "ts": 1, "t": 1 })
            .await
            .map_err(|e| driver("cannot read the oplog (local.oplog.rs)", &e, uri, &redact(uri)))
    }
}

#[async_trait]
impl ChangeLog for MongoLog {
    async fn window(&self) -> Result<LogWindow> {
        let (client, uri) = self.client().await?;
        let hello = client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| driver("cannot connect to the MongoDB server", &e, &uri, &redact(&uri)))?;
        if hello.get_str("setName").is_err() {
            return Err(config_error(
                "the MongoDB server is not a replica set member: it keeps no oplog to follow",
            )
            .with_hint("point-in-time recovery needs a replica set (a single-member one is enough)"));
        }
        let majority = hello
            .get_document("lastWrite")
            .ok()
            .and_then(|w| w.get_document("majorityOpTime").ok())
            .and_then(|o| o.get_timestamp("ts").ok())
            .map(pos);
        let newest = hello
            .get_document("lastWrite")
            .ok()
            .and_then(|w| w.get_document("opTime").ok())
            .and_then(|o| {
                Some(LogMark {
                    ts: pos(o.get_timestamp("ts").ok()?),
                    term: o.get_i64("t").ok().or_else(|| o.get_i32("t").ok().map(i64::from)),
                })
            });
        let cached = *self.oldest.lock().expect("oldest");
        let oldest = match cached {
            Some((at, oldest)) if at.elapsed() < OLDEST_TTL => oldest,
            _ => {
                let oldest = self
                    .edge(&client, &uri, 1)
                    .await?
                    .as_deref()
                    .and_then(mark)
                    .map(|m| m.ts);
                *self.oldest.lock().expect("oldest") = Some((std::time::Instant::now(), oldest));
                oldest
            }
        };
        Ok(LogWindow {
            oldest,
            newest,
            majority,
        })
    }

    async fn newest(&self) -> Result<Option<LogMark>> {
        let (client, uri) = self.client().await?;
        Ok(self.edge(&client, &uri, -1).await?.as_deref().and_then(mark))
    }

    async fn open(&self, after: LogMark) -> Result<Resume> {
        let (client, uri) = self.client().await?;
        let ts = Timestamp {
            time: after.ts.t,
            increment: after.ts.i,
        };
        let cursor = oplog(&client)
            .find(doc! { "ts": { "$gte": ts } })
            .sort(doc! { "$natural": 1 })
            .cursor_type(CursorType::TailableAwait)
            .max_await_time(AWAIT)
            .batch_size(1000)
            .await
            .map_err(|e| driver("cannot read the oplog (local.oplog.rs)", &e, &uri, &redact(&uri)))?;
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(read(cursor, tx, uri.clone()));
        let first = match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(first)) => first?,
            Ok(None) | Err(_) => {
                reader.abort();
                return Ok(Resume::Lost(format!(
                    "the oplog holds no entry at or after {}",
                    after.ts
                )));
            }
        };
        let found = mark(&first);
        let same = found.is_some_and(|m| {
            m.ts == after.ts && (m.term.is_none() || after.term.is_none() || m.term == after.term)
        });
        if !same {
            reader.abort();
            let why = match found {
                Some(m) if m.ts == after.ts => format!(
                    "the oplog's entry at {} is from term {:?}, the archived one from term {:?}: the server rolled back after a failover",
                    m.ts, m.term, after.term
                ),
                Some(m) => format!(
                    "the oplog rolled over: its first entry at or after the archived {} is {}",
                    after.ts, m.ts
                ),
                None => "the oplog returned an entry without `ts`".into(),
            };
            return Ok(Resume::Lost(why));
        }
        let keep = self.source.follow_filter();
        Ok(Resume::Tail(Box::new(MongoTail {
            rx,
            reader,
            keep,
            // The other entries of `after`'s position (a transaction's)
            // were archived with it.
            skip: Some(after.ts),
        })))
    }

    async fn count(&self, after: LogPos, upto: LogPos) -> Result<u64> {
        let (client, uri) = self.client().await?;
        oplog(&client)
            .count_documents(range_filter(after, upto))
            .await
            .map_err(|e| driver("cannot read the oplog (local.oplog.rs)", &e, &uri, &redact(&uri)))
    }

    async fn range(&self, after: LogPos, upto: LogPos) -> Result<Vec<LogEntry>> {
        let (client, uri) = self.client().await?;
        let fail = |e: mongodb::error::Error| {
            driver("cannot read the oplog (local.oplog.rs)", &e, &uri, &redact(&uri))
        };
        let mut cursor = oplog(&client)
            .find(range_filter(after, upto))
            .sort(doc! { "$natural": 1 })
            .batch_size(1000)
            .await
            .map_err(fail)?;
        let keep = self.source.follow_filter();
        let mut out = Vec::new();
        while cursor.advance().await.map_err(fail)? {
            out.push(entry(cursor.current().to_raw_document_buf(), &*keep)?);
        }
        Ok(out)
    }
}

fn range_filter(after: LogPos, upto: LogPos) -> mongodb::bson::Document {
    let ts = |p: LogPos| Timestamp {
        time: p.t,
        increment: p.i,
    };
    doc! { "ts": { "$gt": ts(after), "$lte": ts(upto) } }
}

fn entry(doc: RawDocumentBuf, keep: &dyn Fn(&str, &str) -> bool) -> Result<LogEntry> {
    let mark = mark(&doc).ok_or_else(|| {
        coffer_core::Error::new(coffer_core::ErrorKind::Integrity, "an oplog entry without `ts`")
    })?;
    // A transaction logged as separate entries sharing one `ts` (each
    // with its session's `txnNumber`; mongod logs one `applyOps` entry).
    let grouped = doc.get("txnNumber").ok().flatten().is_some() && doc.get_str("op") != Ok("c");
    Ok(LogEntry {
        mark,
        wanted: wanted(&doc, keep),
        bytes: doc.into_bytes(),
        grouped,
    })
}

/// Reads the cursor into the queue until the follower goes away.
async fn read(
    mut cursor: mongodb::Cursor<RawDocumentBuf>,
    tx: mpsc::Sender<Result<RawDocumentBuf>>,
    uri: String,
) {
    loop {
        match cursor.advance().await {
            Ok(true) => {
                if tx.send(Ok(cursor.current().to_raw_document_buf())).await.is_err() {
                    return;
                }
            }
            Ok(false) => {
                let _ = tx
                    .send(Err(coffer_core::Error::new(
                        coffer_core::ErrorKind::Unreachable,
                        "the oplog cursor ended (the server closed it)",
                    )
                    .with_hint(
                        "the follower stops; start it again (a supervisor restarts it)",
                    )))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(driver(
                        "cannot read the oplog (local.oplog.rs)",
                        &e,
                        &uri,
                        &redact(&uri),
                    )))
                    .await;
                return;
            }
        }
    }
}

/// Which entries a follower keeps: `(db, collection)` (collection empty
/// for a whole-database command).
pub(crate) type Keep = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

struct MongoTail {
    rx: mpsc::Receiver<Result<RawDocumentBuf>>,
    reader: tokio::task::JoinHandle<()>,
    keep: Keep,
    /// Entries at this position are skipped (until a later one comes).
    skip: Option<LogPos>,
}

impl Drop for MongoTail {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl MongoTail {
    /// The entry, unless it is one of the resumed-after position's.
    fn entry(&mut self, doc: RawDocumentBuf) -> Result<Option<LogEntry>> {
        let e = entry(doc, &*self.keep)?;
        match self.skip {
            Some(ts) if e.mark.ts == ts => Ok(None),
            _ => {
                self.skip = None;
                Ok(Some(e))
            }
        }
    }
}

#[async_trait]
impl LogTail for MongoTail {
    async fn next(&mut self, wait: Duration) -> Result<Vec<LogEntry>> {
        let first = match tokio::time::timeout(wait, self.rx.recv()).await {
            Ok(Some(r)) => r?,
            Ok(None) => {
                return Err(coffer_core::Error::new(
                    coffer_core::ErrorKind::Unexpected,
                    "the oplog reader stopped",
                ));
            }
            Err(_) => return Ok(Vec::new()),
        };
        let mut out: Vec<LogEntry> = self.entry(first)?.into_iter().collect();
        while out.len() < 10_000 {
            match self.rx.try_recv() {
                Ok(r) => out.extend(self.entry(r?)?),
                Err(_) => break,
            }
        }
        Ok(out)
    }
}
