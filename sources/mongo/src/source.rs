//! [`MongoSource`]: a hot logical dump of MongoDB databases into
//! `mongo/<source>/<db>/<coll>.bson` + `.metadata.json`, mongodump's layout.
//!
//! Tokio use: the driver is async; each collection is read by one raw
//! cursor (`RawDocumentBuf`, `hint({$natural: 1})`), its bytes appended
//! without decoding to a [`SpillTask`] (memory up to 8 MiB, then an
//! encrypted temp file; hashed, encrypted and written on a blocking thread
//! while the cursor waits for its next batch; the queue between them holds
//! 4 × 1 MiB). At most `parallel`
//! collections are read at once, largest first, and at most `parallel + 1`
//! bodies exist at any time (a semaphore permit travels with each body
//! until the bundle writer has consumed it), so memory stays bounded.

use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::{
    Area, CaptureContext, Entry, EntryBody, EntrySender, Error, ErrorKind, RestoreOptions, Restorer, Result,
    Source, SourceInfo, SourceReport, config_error,
};
use futures::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::options::{ClientOptions, Hint};
use mongodb::{Client, Database};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::KIND;
use crate::config::{MongoSourceConfig, UriSource};
use crate::error::driver;
use crate::metadata::{self, CollectionType};
use crate::restore::MongoRestorer;
use crate::uri::redact;
use coffer_core::spill::{SpillBody, SpillTask};

/// Bytes of one collection kept in memory before spilling (encrypted) to
/// disk.
const MEMORY_LIMIT: usize = 8 << 20;
/// Documents per cursor batch.
const BATCH_SIZE: u32 = 1000;
/// Bytes handed to the spill at once.
/// Databases never backed up unless named.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// MongoDB databases captured as raw BSON in mongodump's layout.
#[derive(Clone)]
pub struct MongoSource {
    name: String,
    uri: UriSource,
    databases: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    include_set: GlobSet,
    exclude_set: GlobSet,
    parallel: usize,
    timeout: Duration,
    point_in_time: bool,
}

impl fmt::Debug for MongoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSource")
            .field("name", &self.name)
            .field("uri", &self.uri.describe())
            .field("databases", &self.databases)
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("parallel", &self.parallel)
            .field("timeout", &self.timeout)
            .field("point_in_time", &self.point_in_time)
            .finish()
    }
}

impl MongoSource {
    /// A source from its config table; a relative `uri-file` is resolved
    /// against `base_dir`.
    pub fn with_config(name: impl Into<String>, config: &MongoSourceConfig, base_dir: &Path) -> Result<Self> {
        Self::build(name.into(), UriSource::from_config(config, base_dir), config)
    }

    /// A source reading `uri` (database from its path, else all
    /// non-system databases).
    pub fn from_uri(name: impl Into<String>, uri: impl Into<String>) -> Result<Self> {
        let config = MongoSourceConfig {
            uri: Some(uri.into()),
            ..MongoSourceConfig::default()
        };
        Self::build(
            name.into(),
            UriSource::from_config(&config, Path::new(".")),
            &config,
        )
    }

    fn build(name: String, uri: UriSource, config: &MongoSourceConfig) -> Result<Self> {
        if let UriSource::Literal(u) = &uri
            && !(u.starts_with("mongodb://") || u.starts_with("mongodb+srv://"))
        {
            return Err(
                config_error(format!("`{}` is not a MongoDB connection string", redact(u)))
                    .with_context("source", &name)
                    .with_hint(
                        "write mongo:mongodb://host:27017/db (or mongo-env:VAR to read it from a variable)",
                    ),
            );
        }
        Ok(MongoSource {
            include_set: globs(&config.include, &name)?,
            exclude_set: globs(&config.exclude, &name)?,
            name,
            uri,
            databases: config.databases.clone(),
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            parallel: config.parallel.max(1),
            timeout: Duration::from_secs(config.server_selection_timeout.max(1)),
            point_in_time: config.point_in_time,
        })
    }

    /// The connection string and a client for it (no I/O yet: the driver
    /// connects lazily, within the server-selection timeout).
    pub(crate) async fn connect(&self, uri: &str) -> Result<Client> {
        connect(uri, self.timeout).await
    }

    /// The databases to dump.
    async fn database_names(&self, client: &Client, uri: &str) -> Result<Vec<String>> {
        if !self.databases.is_empty() {
            return Ok(self.databases.clone());
        }
        if let Some(db) = crate::uri::database(uri) {
            return Ok(vec![db]);
        }
        let mut names = client
            .list_database_names()
            .await
            .map_err(|e| driver("cannot list databases", &e, uri, &redact(uri)))?;
        names.retain(|n| !SYSTEM_DATABASES.contains(&n.as_str()));
        names.sort();
        Ok(names)
    }

    /// The connection string (from the config or its variable).
    pub(crate) fn uri_string(&self) -> Result<String> {
        self.uri.resolve()
    }

    /// Which oplog entries a follower keeps: those of the databases this
    /// source dumps (the named ones, the connection string's, else every
    /// non-system one) and its selected collections, not a restore's
    /// staging collections. `coll` is empty for a whole-database command.
    pub(crate) fn follow_filter(&self) -> crate::follow::Keep {
        let this = self.clone();
        let uri_db = self.uri.resolve().ok().and_then(|u| crate::uri::database(&u));
        Box::new(move |db: &str, coll: &str| {
            let db_ok = if !this.databases.is_empty() {
                this.databases.iter().any(|d| d == db)
            } else if let Some(only) = &uri_db {
                only == db
            } else {
                !SYSTEM_DATABASES.contains(&db)
            };
            db_ok && (coll.is_empty() || (this.selected(db, coll) && !crate::restore::is_staging(coll)))
        })
    }

    fn selected(&self, db: &str, coll: &str) -> bool {
        let ns = format!("{db}.{coll}");
        if coll.starts_with("system.") {
            return false;
        }
        (self.include.is_empty() || self.include_set.is_match(&ns)) && !self.exclude_set.is_match(&ns)
    }

    /// The collections and views to dump, largest first.
    async fn plan(&self, client: &Client, uri: &str) -> Result<Vec<Planned>> {
        let target = redact(uri);
        let mut plans = Vec::new();
        for db_name in self.database_names(client, uri).await? {
            let specs = list_collections(client, &db_name, uri, &target).await?;
            for spec in specs {
                if let Some(plan) = self.planned(&db_name, spec) {
                    plans.push(plan);
                }
            }
        }
        if self.parallel > 1 && plans.len() > 1 {
            // Order only matters when collections are dumped side by side.
            order_by_size(client, &mut plans).await;
        }
        plans.sort_by(|a, b| {
            b.size
                .cmp(&a.size)
                .then_with(|| (&a.db, &a.name).cmp(&(&b.db, &b.name)))
        });
        Ok(plans)
    }

    /// The plan for one `listCollections` entry of `db_name`, unless it is left out.
    fn planned(&self, db_name: &str, spec: Document) -> Option<Planned> {
        let Ok(name) = spec.get_str("name") else {
            return None;
        };
        if !self.selected(db_name, name) {
            return None;
        }
        if crate::restore::is_staging(name) {
            // A restore's work in progress (or a killed one's
            // leftover): restored as a real collection it would be
            // swept as stale by the next restore.
            tracing::warn!(
                ns = %format!("{db_name}.{name}"),
                "skipping a coffer restore's staging collection"
            );
            return None;
        }
        let kind = match spec.get_str("type").unwrap_or("collection") {
            "collection" => CollectionType::Collection,
            "view" => CollectionType::View,
            other => {
                tracing::warn!(
                    ns = %format!("{db_name}.{name}"),
                    "skipping a collection of type `{other}`: not supported yet"
                );
                return None;
            }
        };
        Some(Planned {
            db: db_name.to_string(),
            name: name.to_string(),
            kind,
            spec,
            size: Size::Unknown,
        })
    }
}

/// The `listCollections` entries of database `db_name`.
async fn list_collections(client: &Client, db_name: &str, uri: &str, target: &str) -> Result<Vec<Document>> {
    let db = client.database(db_name);
    let failed = |e: mongodb::error::Error| {
        driver(
            format!("cannot list the collections of `{db_name}`"),
            &e,
            uri,
            target,
        )
    };
    let specs: Vec<Document> = db
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .map_err(failed)?
        .try_collect()
        .await
        .map_err(failed)?;
    Ok(specs)
}

/// Sets the planned collections' sizes, to dump the largest first, unless counting takes too long.
async fn order_by_size(client: &Client, plans: &mut [Planned]) {
    // Owned futures: borrowed ones trip the `Send` check of the
    // async-trait future.
    let counts: Vec<_> = plans
        .iter()
        .map(|p| order_size(client.clone(), p.db.clone(), p.name.clone(), p.kind))
        .collect();
    let counts = futures::stream::iter(counts)
        .buffered(ORDER_COUNTS_AT_ONCE)
        .collect::<Vec<Size>>();
    match tokio::time::timeout(ORDER_TOTAL_BUDGET, counts).await {
        Ok(sizes) => {
            for (plan, size) in plans.iter_mut().zip(sizes) {
                plan.size = size;
            }
        }
        Err(_) => tracing::debug!("no dump order: counting took over {ORDER_TOTAL_BUDGET:?}"),
    }
}

/// One collection or view to dump.
struct Planned {
    db: String,
    name: String,
    kind: CollectionType,
    /// Its `listCollections` entry.
    spec: Document,
    /// How large it is, to dump the largest first.
    size: Size,
}

/// A collection's size as far as ordering the dump goes; larger sorts
/// greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Size {
    /// Views, and collections not counted: a dump of one collection or
    /// with `parallel = 1`, a count that failed, or counting as a whole
    /// over [`ORDER_TOTAL_BUDGET`].
    Unknown,
    Documents(u64),
    /// The count did not answer within [`ORDER_COUNT_BUDGET`]: a server
    /// that counts by scanning, and a collection large enough to take
    /// that long, so it goes first.
    Large,
}

/// How long the metadata count that orders the dump may take. mongod
/// answers `estimatedDocumentCount` from collection metadata in about a
/// millisecond; a server that scans instead (secantusd-py: 0.6 s per 100k
/// documents, bench/mongo.sh) would otherwise spend more on ordering the
/// dump than the ordering saves.
const ORDER_COUNT_BUDGET: Duration = Duration::from_millis(50);
/// Counts that order the dump sent at once.
const ORDER_COUNTS_AT_ONCE: usize = 8;
/// How long ordering the dump may take in all (hundreds of collections on a
/// slow server); beyond it the collections go in name order.
const ORDER_TOTAL_BUDGET: Duration = Duration::from_secs(1);

/// How long learning the collections' sizes for the progress display may
/// take in all; beyond it the display shows bytes and rate without a total.
const SIZE_BUDGET: Duration = Duration::from_secs(2);

/// The BSON size of the planned collections (`collStats` `size`), for the
/// progress display; `None` when the server does not tell within
/// [`SIZE_BUDGET`].
async fn data_size(client: &Client, plans: &[Planned]) -> Option<u64> {
    // Owned futures: borrowed ones trip the `Send` check of the
    // async-trait future (as in `plan`).
    let sizes: Vec<_> = plans
        .iter()
        .filter(|p| p.kind == CollectionType::Collection)
        .map(|p| collection_size(client.clone(), p.db.clone(), p.name.clone()))
        .collect();
    let all = futures::stream::iter(sizes)
        .buffered(ORDER_COUNTS_AT_ONCE)
        .collect::<Vec<Option<u64>>>();
    let sizes = tokio::time::timeout(SIZE_BUDGET, all).await.ok()?;
    sizes.into_iter().sum()
}

/// A collection's BSON size as `collStats` reports it.
async fn collection_size(client: Client, db: String, name: String) -> Option<u64> {
    let stats = client
        .database(&db)
        .run_command(doc! { "collStats": name })
        .await
        .ok()?;
    match stats.get("size")? {
        mongodb::bson::Bson::Int32(n) => u64::try_from(*n).ok(),
        mongodb::bson::Bson::Int64(n) => u64::try_from(*n).ok(),
        mongodb::bson::Bson::Double(n) if *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

async fn order_size(client: Client, db: String, name: String, kind: CollectionType) -> Size {
    if kind != CollectionType::Collection {
        return Size::Unknown;
    }
    let count = client
        .database(&db)
        .collection::<Document>(&name)
        .estimated_document_count()
        .max_time(ORDER_COUNT_BUDGET)
        .await;
    match count {
        Ok(n) => Size::Documents(n),
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 50) => Size::Large,
        Err(e) => {
            tracing::debug!(ns = %format!("{db}.{name}"), "no document count: {e}");
            Size::Unknown
        }
    }
}

/// What was dumped of one collection, for the manifest.
struct Dumped {
    db: String,
    name: String,
    kind: CollectionType,
    documents: u64,
    bytes: u64,
    indexes: usize,
    sha256: Option<String>,
    spilled: bool,
}

impl Dumped {
    /// The collection `plan` names, nothing dumped of it yet (a view).
    fn of(plan: Planned) -> Dumped {
        Dumped {
            db: plan.db,
            name: plan.name,
            kind: plan.kind,
            documents: 0,
            bytes: 0,
            indexes: 0,
            sha256: None,
            spilled: false,
        }
    }
}

#[async_trait]
impl Source for MongoSource {
    fn info(&self) -> SourceInfo {
        let origin = match &self.uri {
            UriSource::Env(var) => json!({ "uri-env": var }),
            UriSource::Literal(uri) => {
                json!({ "uri": redact(uri), "has-password": crate::uri::password(uri).is_some() })
            }
            UriSource::DotEnv { file, key } => json!({ "uri-file": file.to_string_lossy(), "uri-key": key }),
            UriSource::Recorded(uri) => json!({ "uri": uri, "has-password": true }),
        };
        let mut origin = origin;
        origin["databases"] = json!(self.databases);
        SourceInfo::new(
            KIND,
            self.name.clone(),
            format!("mongo {}", self.uri.describe()),
            origin,
        )
    }

    async fn check(&self) -> Result<()> {
        let uri = self.uri.resolve()?;
        let client = self.connect(&uri).await?;
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| driver("cannot connect to the MongoDB server", &e, &uri, &redact(&uri)))?;
        Ok(())
    }

    async fn capture(&self, ctx: &CaptureContext, out: EntrySender) -> Result<SourceReport> {
        let uri = self.uri.resolve()?;
        let target = redact(&uri);
        let client = self.connect(&uri).await?;
        let started = jiff::Timestamp::now();
        let admin = client.database("admin");
        let build = admin
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(|e| driver("cannot connect to the MongoDB server", &e, &uri, &target))?;
        let version = build.get_str("version").unwrap_or("unknown").to_string();
        let hello = admin
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| driver("cannot connect to the MongoDB server", &e, &uri, &target))?;
        let replica_set = hello.get_str("setName").ok().map(str::to_string);
        // Point in time: the oplog's newest entry before anything is listed
        // (unless `point-in-time = false`: no oplog queries at all). Only
        // on a replica set member: a member restarted as a standalone (for
        // maintenance) still has `local.oplog.rs` but no longer writes to
        // it, so the window would miss the writes made during the dump.
        let oplog_start = if !self.point_in_time || replica_set.is_none() {
            None
        } else {
            match crate::oplog::present(&client, &uri).await? {
                true => crate::oplog::edge(&client, &uri, -1).await?,
                false => None,
            }
        };
        if oplog_start.is_some() {
            test_pause().await;
        }
        let plans = self.plan(&client, &uri).await?;
        if ctx.size_wanted()
            && let Some(bytes) = data_size(&client, &plans).await
        {
            ctx.report_size(bytes);
        }
        let mut dbs: std::collections::BTreeSet<String> = plans.iter().map(|p| p.db.clone()).collect();
        dbs.extend(self.databases.iter().cloned());
        let mtime = started.as_second();
        let permits = Arc::new(Semaphore::new(self.parallel + 1));
        let dumped: Vec<Dumped> = futures::stream::iter(plans)
            .map(|plan| {
                let client = client.clone();
                let out = out.clone();
                let permits = permits.clone();
                let uri = uri.as_str();
                async move { dump_one(&client, plan, &out, permits, mtime, uri).await }
            })
            .buffer_unordered(self.parallel)
            .try_collect()
            .await?;
        let oplog = match oplog_start {
            Some(start) => Some(
                self.capture_oplog(&client, &uri, start, &dbs, &out, mtime)
                    .await?,
            ),
            None => None,
        };
        let finished = jiff::Timestamp::now();
        Ok(report(
            &dumped,
            &version,
            replica_set.as_deref(),
            started,
            finished,
            oplog.as_ref(),
            self.point_in_time,
        ))
    }

    async fn restore(&self, opts: &RestoreOptions) -> Result<Box<dyn Restorer>> {
        let uri = match opts.text(crate::URI_OPTION) {
            Some(u) => UriSource::Literal(u.to_owned()).resolve()?,
            None => self.uri.resolve()?,
        };
        let client = self.connect(&uri).await?;
        let drop = opts.flag("drop");
        let rules = crate::ns::NsRules::from_params(opts.own())?;
        let mut restorer = MongoRestorer::new(client, uri, drop, rules, opts).await?;
        restorer.tail = opts.log_replays.iter().find(|r| r.source == self.name).cloned();
        if let Some(tail) = &restorer.tail {
            let tail = tail.clone();
            tokio::task::spawn_blocking(move || crate::restore::check_archive(&tail))
                .await
                .map_err(|e| coffer_core::Error::new(ErrorKind::Unexpected, e.to_string()))??;
        }
        Ok(Box::new(restorer))
    }

    fn change_log(&self) -> Option<Box<dyn coffer_core::slices::follow::ChangeLog>> {
        Some(Box::new(crate::follow::MongoLog::new(self.clone())))
    }
}

impl MongoSource {
    /// Stores the oplog entries written since `start` on the dumped
    /// databases and selected collections as `oplog.bson`, after checking
    /// that the oplog did not roll over.
    async fn capture_oplog(
        &self,
        client: &Client,
        uri: &str,
        start: mongodb::bson::Timestamp,
        dbs: &std::collections::BTreeSet<String>,
        out: &EntrySender,
        mtime: i64,
    ) -> Result<OplogDump> {
        use crate::oplog::{self, ts_pair};
        let target = redact(uri);
        // Not the writes of a restore's staging collections (a restore
        // running on this server during the dump): they are not dumped.
        let keep = |db: &str, coll: &str| {
            dbs.contains(db)
                && (coll.is_empty() || (self.selected(db, coll) && !crate::restore::is_staging(coll)))
        };
        let mut cursor = oplog::window(client, uri, start).await?;
        let mut spill = SpillTask::spawn(MEMORY_LIMIT);
        let spill_error = |e| spill_error("cannot buffer the oplog", e);
        let (mut entries, mut skipped) = (0u64, 0u64);
        // The first entry must be `start` itself: else the oplog rolled over.
        let mut end = None;
        while cursor
            .advance()
            .await
            .map_err(|e| driver("cannot read the oplog (local.oplog.rs)", &e, uri, &target))?
        {
            let entry = cursor.current();
            let ts = entry.get_timestamp("ts").ok();
            if end.is_none() {
                if ts.map(ts_pair) != Some(ts_pair(start)) {
                    return Err(oplog::rolled_over(start, ts));
                }
                end = ts;
                continue;
            }
            if let Some(ts) = ts {
                end = Some(ts);
            }
            if oplog::wanted(entry, &keep) {
                spill.append(entry.as_bytes()).await.map_err(spill_error)?;
                entries += 1;
            } else {
                skipped += 1;
            }
        }
        let Some(end) = end else {
            return Err(oplog::rolled_over(start, None));
        };
        let body = spill.finish().await.map_err(spill_error)?;
        out.send(Entry {
            area: Area::Mongo,
            path: oplog::OPLOG_FILE.to_string(),
            mode: 0o644,
            mtime,
            owner: None,
            stat: None,
            body: EntryBody::File {
                size: body.size,
                reader: body.reader,
            },
        })
        .await?;
        Ok(OplogDump {
            start: ts_pair(start),
            end: ts_pair(end),
            entries,
            skipped,
            bytes: body.size,
            sha256: hex::encode(body.sha256),
        })
    }
}

/// Test-only (cargo feature `test-hooks`, never in a shipped build): with
/// `COFFER_TEST_MONGO_PAUSE_DIR=D` a point-in-time dump,
/// once it has noted where the oplog starts, creates `D/started` and waits
/// (up to a minute) for `D/go` before it lists anything, so a test can
/// write into the window, or roll the oplog over, deterministically.
#[cfg(feature = "test-hooks")]
pub(crate) const PAUSE_DIR_ENV: &str = "COFFER_TEST_MONGO_PAUSE_DIR";

#[cfg(not(feature = "test-hooks"))]
async fn test_pause() {}

#[cfg(feature = "test-hooks")]
async fn test_pause() {
    let Some(dir) = std::env::var_os(PAUSE_DIR_ENV).map(std::path::PathBuf::from) else {
        return;
    };
    let _ = tokio::fs::write(dir.join("started"), b"").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !tokio::fs::try_exists(dir.join("go")).await.unwrap_or(false)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The oplog window stored with a dump.
struct OplogDump {
    start: (u32, u32),
    end: (u32, u32),
    entries: u64,
    skipped: u64,
    bytes: u64,
    sha256: String,
}

/// A client for `uri` (no I/O yet: the driver connects lazily, within
/// the server-selection timeout).
pub(crate) async fn connect(uri: &str, timeout: Duration) -> Result<Client> {
    let target = redact(uri);
    let mut opts = ClientOptions::parse(uri)
        .await
        .map_err(|e| driver("invalid MongoDB connection string", &e, uri, &target))?;
    opts.server_selection_timeout.get_or_insert(timeout);
    opts.connect_timeout.get_or_insert(timeout);
    opts.app_name.get_or_insert_with(|| "coffer".to_string());
    Client::with_options(opts).map_err(|e| driver("cannot set up the MongoDB client", &e, uri, &target))
}

/// Dumps one collection (or view) and sends its entries.
async fn dump_one(
    client: &Client,
    plan: Planned,
    out: &EntrySender,
    permits: Arc<Semaphore>,
    mtime: i64,
    uri: &str,
) -> Result<Dumped> {
    let ns = format!("{}.{}", plan.db, plan.name);
    let db = client.database(&plan.db);
    let options = plan.spec.get_document("options").cloned().unwrap_or_default();
    let base = format!("{}/{}", plan.db, metadata::escape_name(&plan.name));
    if plan.kind == CollectionType::View {
        return dump_view(plan, &options, &base, out, mtime).await;
    }
    let permit = permits
        .acquire_owned()
        .await
        .map_err(|_| Error::new(ErrorKind::Cancelled, "the backup stopped"))?;
    let indexes = list_indexes(&db, &plan.name, uri)
        .await
        .map_err(|e| e.with_context("collection", &ns))?;
    let (documents, body) = read_collection(&db, &plan.name, &ns, uri).await?;
    let uuid = metadata::uuid_of(&plan.spec);
    let json = metadata::to_json(&plan.name, plan.kind, &options, &indexes, uuid.as_deref());
    out.send(file_entry(
        format!("{base}.metadata.json"),
        json.into_bytes(),
        mtime,
    ))
    .await?;
    out.send(bson_entry(
        format!("{base}.bson"),
        body.size,
        body.reader,
        permit,
        mtime,
    ))
    .await?;
    Ok(Dumped {
        documents,
        bytes: body.size,
        indexes: indexes.len(),
        sha256: Some(hex::encode(body.sha256)),
        spilled: body.spilled,
        ..Dumped::of(plan)
    })
}

/// Sends the metadata entry of a view (it has no documents); what was dumped of it.
async fn dump_view(
    plan: Planned,
    options: &Document,
    base: &str,
    out: &EntrySender,
    mtime: i64,
) -> Result<Dumped> {
    let json = metadata::to_json(&plan.name, plan.kind, options, &[], None);
    out.send(file_entry(
        format!("{base}.metadata.json"),
        json.into_bytes(),
        mtime,
    ))
    .await?;
    Ok(Dumped::of(plan))
}

/// Reads collection `name` (`ns`) of `db` by one cursor into a spill; the document count and the body.
async fn read_collection(db: &Database, name: &str, ns: &str, uri: &str) -> Result<(u64, SpillBody)> {
    let target = redact(uri);
    let coll = db.collection::<RawDocumentBuf>(name);
    let read_error = |e: mongodb::error::Error| driver(format!("cannot read `{ns}`"), &e, uri, &target);
    let mut cursor = coll
        .find(doc! {})
        .batch_size(BATCH_SIZE)
        .hint(Hint::Keys(doc! { "$natural": 1 }))
        .await
        .map_err(read_error)?;
    let mut spill = SpillTask::spawn(MEMORY_LIMIT);
    let spill_error = |e| spill_error("cannot buffer a collection", e).with_context("collection", ns);
    let mut documents = 0u64;
    while cursor.advance().await.map_err(read_error)? {
        spill
            .append(cursor.current().as_bytes())
            .await
            .map_err(spill_error)?;
        documents += 1;
    }
    let body = spill.finish().await.map_err(spill_error)?;
    Ok((documents, body))
}

/// The entry of a collection's `.bson` body, which holds `permit` until the bundle writer drops it.
fn bson_entry(
    path: String,
    size: u64,
    reader: Box<dyn Read + Send>,
    permit: OwnedSemaphorePermit,
    mtime: i64,
) -> Entry {
    Entry {
        area: Area::Mongo,
        path,
        mode: 0o644,
        mtime,
        owner: None,
        stat: None,
        body: EntryBody::File {
            size,
            reader: Box::new(PermitReader {
                inner: reader,
                _permit: permit,
            }),
        },
    }
}

/// A body that could not be buffered (in its encrypted temp file).
fn spill_error(what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} in an encrypted temp file"), e)
        .with_hint("make room in the temp directory (TMPDIR)")
}

/// The index specs of a collection, verbatim, in order.
pub(crate) async fn list_indexes(db: &Database, coll: &str, uri: &str) -> Result<Vec<Document>> {
    let what = || format!("cannot list the indexes of `{}.{coll}`", db.name());
    db.run_cursor_command(doc! { "listIndexes": coll })
        .await
        .map_err(|e| driver(what(), &e, uri, &redact(uri)))?
        .try_collect()
        .await
        .map_err(|e| driver(what(), &e, uri, &redact(uri)))
}

fn file_entry(path: String, data: Vec<u8>, mtime: i64) -> Entry {
    Entry {
        area: Area::Mongo,
        path,
        mode: 0o644,
        mtime,
        owner: None,
        stat: None,
        body: EntryBody::File {
            size: data.len() as u64,
            reader: Box::new(Cursor::new(data)),
        },
    }
}

/// A body that holds its semaphore permit until the bundle writer drops it.
struct PermitReader {
    inner: Box<dyn Read + Send>,
    _permit: OwnedSemaphorePermit,
}

impl Read for PermitReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

fn report(
    dumped: &[Dumped],
    version: &str,
    replica_set: Option<&str>,
    started: jiff::Timestamp,
    finished: jiff::Timestamp,
    oplog: Option<&OplogDump>,
    point_in_time: bool,
) -> SourceReport {
    let mut sorted: Vec<&Dumped> = dumped.iter().collect();
    sorted.sort_by(|a, b| (&a.db, &a.name).cmp(&(&b.db, &b.name)));
    let summary = summary_line(&sorted, oplog, point_in_time);
    let consistency = consistency_text(oplog, point_in_time);
    let list = collection_list(&sorted);
    SourceReport {
        position: oplog.map(|o| coffer_core::slices::LogPos {
            t: o.end.0,
            i: o.end.1,
        }),
        summary,
        details: json!({
            "server_version": version,
            "topology": match replica_set {
                Some(rs) => format!("replica set {rs}"),
                None => "standalone".to_string(),
            },
            "started_at": started.to_string(),
            "finished_at": finished.to_string(),
            "consistency": consistency,
            "oplog": oplog.map(|o| json!({
                "file": crate::oplog::OPLOG_FILE,
                "start": { "t": o.start.0, "i": o.start.1 },
                "end": { "t": o.end.0, "i": o.end.1 },
                "entries": o.entries,
                "left_out": o.skipped,
                "bytes": o.bytes,
                "sha256": o.sha256,
            })),
            "collections": list,
        }),
    }
}

/// The report's one-line summary: counts, size and consistency of the dump.
fn summary_line(sorted: &[&Dumped], oplog: Option<&OplogDump>, point_in_time: bool) -> String {
    let collections = sorted
        .iter()
        .filter(|d| d.kind == CollectionType::Collection)
        .count();
    let views = sorted.len() - collections;
    let documents: u64 = sorted.iter().map(|d| d.documents).sum();
    let bytes: u64 = sorted.iter().map(|d| d.bytes).sum();
    let mut summary = format!(
        "{collections} collection{}, {documents} document{}, {}",
        if collections == 1 { "" } else { "s" },
        if documents == 1 { "" } else { "s" },
        coffer_core::human_size(bytes)
    );
    if views > 0 {
        summary.push_str(&format!(", {views} view{}", if views == 1 { "" } else { "s" }));
    }
    match oplog {
        Some(o) => summary.push_str(&format!(
            ", point in time (oplog {{t: {}, i: {}}}, {} entr{})",
            o.end.0,
            o.end.1,
            o.entries,
            if o.entries == 1 { "y" } else { "ies" }
        )),
        None if !point_in_time => summary.push_str(", per-collection consistent (point-in-time disabled)"),
        None => summary.push_str(", per-collection consistent"),
    }
    summary
}

/// The report's account of how consistent the dump is.
fn consistency_text(oplog: Option<&OplogDump>, point_in_time: bool) -> String {
    let consistency = "per-collection consistent: each collection is read by one cursor, collections at \
                       different moments; no point in time across collections";
    match oplog {
        Some(o) => format!(
            "point in time: the collections plus the {} oplog entries written during the dump, replayed on \
             restore, give the databases as of oplog ts {{t: {}, i: {}}}",
            o.entries, o.end.0, o.end.1
        ),
        None if !point_in_time => format!(
            "per-collection consistent (point-in-time disabled): {}",
            consistency.trim_start_matches("per-collection consistent: ")
        ),
        None => consistency.to_string(),
    }
}

/// The report's list of the dumped collections and views.
fn collection_list(sorted: &[&Dumped]) -> Vec<Value> {
    sorted
        .iter()
        .map(|d| {
            let mut v = json!({
                "db": d.db,
                "collection": d.name,
                "type": d.kind.as_str(),
            });
            if d.kind == CollectionType::Collection {
                v["documents"] = json!(d.documents);
                v["bytes"] = json!(d.bytes);
                v["indexes"] = json!(d.indexes);
                v["sha256"] = json!(d.sha256);
                v["spilled"] = json!(d.spilled);
            }
            v
        })
        .collect()
}

fn globs(patterns: &[String], source: &str) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| {
            config_error(format!("invalid collection pattern `{p}`: {e}"))
                .with_context("source", source)
                .with_hint("patterns are globs on `db.collection`, e.g. `app.*` or `*.cache_*`")
        })?);
    }
    builder
        .build()
        .map_err(|e| config_error(format!("invalid collection patterns: {e}")).with_context("source", source))
}

/// Rebuilds a source from a bundle's origin: the variable or `.env` key it
/// read, or the recorded (redacted) URI, which a restore may replace with
/// `--mongo-uri`.
pub(crate) fn source_from_origin(name: &str, origin: &Value) -> Result<Arc<dyn Source>> {
    let s = |k: &str| origin.get(k).and_then(Value::as_str).map(str::to_string);
    let databases = origin
        .get("databases")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let config = MongoSourceConfig {
        databases,
        ..MongoSourceConfig::default()
    };
    let uri = if let Some(var) = s("uri-env") {
        UriSource::Env(var)
    } else if let (Some(file), Some(key)) = (s("uri-file"), s("uri-key")) {
        UriSource::DotEnv {
            file: file.into(),
            key,
        }
    } else if let Some(uri) = s("uri") {
        if origin
            .get("has-password")
            .and_then(Value::as_bool)
            .unwrap_or(true)
        {
            UriSource::Recorded(uri)
        } else {
            UriSource::Literal(uri)
        }
    } else {
        return Err(Error::new(
            ErrorKind::Integrity,
            "the bundle's origin of a `mongo` source is malformed",
        )
        .with_context("source", name)
        .with_hint("restore with --mongo-uri URI"));
    };
    Ok(Arc::new(MongoSource::build(name.to_string(), uri, &config)?))
}

/// `[A-Za-z0-9._-]` only, for source names.
pub(crate) fn clean_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_order_puts_uncountable_collections_first_and_views_last() {
        let mut sizes = vec![
            Size::Documents(10),
            Size::Unknown,
            Size::Large,
            Size::Documents(1_000),
            Size::Documents(0),
        ];
        sizes.sort_by(|a, b| b.cmp(a));
        assert_eq!(
            sizes,
            [
                Size::Large,
                Size::Documents(1_000),
                Size::Documents(10),
                Size::Documents(0),
                Size::Unknown
            ]
        );
    }

    #[test]
    fn one_off_names_and_redaction() {
        use coffer_core::SourceFactory;
        let f = crate::kinds::MongoKind::Mongo;
        assert_eq!(
            f.spec_name("mongodb://u:p@h:1/issuer-directory?x=1"),
            "issuer-directory"
        );
        assert_eq!(f.spec_name("mongodb://h:1/"), "mongo");
        let s = f.from_spec("db", "mongodb://app:hunter2@h:1/db").unwrap();
        let info = s.info();
        assert!(!info.description.contains("hunter2"), "{}", info.description);
        assert!(!info.origin.to_string().contains("hunter2"), "{}", info.origin);
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = f.from_spec("db", "http://x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConfigInvalid);
    }

    #[test]
    fn selection_globs() {
        let config = MongoSourceConfig {
            uri: Some("mongodb://h/".into()),
            include: vec!["app.*".into()],
            exclude: vec!["*.cache_*".into()],
            ..MongoSourceConfig::default()
        };
        let s = MongoSource::with_config("m", &config, Path::new(".")).unwrap();
        assert!(s.selected("app", "users"));
        assert!(!s.selected("app", "cache_x"));
        assert!(!s.selected("other", "users"));
        assert!(!s.selected("app", "system.views"));
    }
}
