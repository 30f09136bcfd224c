//! The MongoDB check kinds (`[[job.NAME.checks]]`):
//!
//! - `mongo-counts`: every collection's document count equals the
//!   snapshot's (its manifest, plus what the replay of a point-in-time
//!   dump's writes changed), or is at least a declared minimum;
//! - `audit`: the newest entry of an audit collection in the snapshot and
//!   in the live database, the gap to reconcile by hand, and the entries
//!   written after the snapshot exported as JSON lines.
//!
//! In a drill they count the scratch databases
//! ([`coffer_core::checks::CheckEnv::renamed`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coffer_core::checks::{Check, CheckEnv, CheckFactory, CheckResult, check_result};
use coffer_core::{RestoreOutcome, Result, parse_table, toml};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where a MongoDB check connects: `uri`, or the variable `uri-env` names
/// (keeps the password out of the config), else the restore's
/// `--mongo-uri`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MongoTarget {
    /// A connection string (prefer `uri-env`).
    #[serde(default)]
    pub uri: Option<String>,
    /// The environment variable holding the connection string.
    #[serde(default)]
    pub uri_env: Option<String>,
}

/// `kind = "mongo-counts"`: with `minimums = { "db.coll" = N }` each named
/// collection needs at least N documents (a live service); without, every
/// collection of the snapshot must hold exactly the snapshot's count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MongoCountsCheck {
    /// Where to count.
    #[serde(flatten)]
    pub target: MongoTarget,
    /// Minimum counts per `db.collection`.
    #[serde(default)]
    pub minimums: BTreeMap<String, u64>,
    /// The exact counts a drill's scratch copy must hold (not from the
    /// config: a drill adds this check itself).
    #[serde(skip)]
    pub(crate) exact: Option<BTreeMap<String, u64>>,
}

/// `kind = "audit"`: `collection = "db.coll"`, `time-field`, and
/// optionally `export` (a file for the JSON lines written after the
/// snapshot, relative to the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditCheck {
    /// Where the live audit collection is.
    #[serde(flatten)]
    pub target: MongoTarget,
    /// `db.collection` of the audit log.
    pub collection: String,
    /// The field holding each entry's time (a BSON date).
    pub time_field: String,
    /// Export the entries newer than the snapshot here.
    #[serde(default)]
    pub export: Option<PathBuf>,
}

/// Registers `mongo-counts` and `audit`.
pub(crate) fn register(reg: &mut coffer_core::Registry) {
    reg.register_check(Arc::new(CountsKind));
    reg.register_check(Arc::new(AuditKind));
}

struct CountsKind;

impl CheckFactory for CountsKind {
    fn kind(&self) -> &'static str {
        "mongo-counts"
    }

    fn from_config(&self, table: toml::Table, _: &Path) -> Result<Arc<dyn Check>> {
        let check: MongoCountsCheck = parse_table(
            table,
            "`mongo-counts` check",
            "keys: uri, uri-env, minimums = { \"db.collection\" = N }",
        )?;
        Ok(Arc::new(check))
    }
}

struct AuditKind;

impl CheckFactory for AuditKind {
    fn kind(&self) -> &'static str {
        "audit"
    }

    fn from_config(&self, table: toml::Table, base_dir: &Path) -> Result<Arc<dyn Check>> {
        let mut check: AuditCheck = parse_table(
            table,
            "`audit` check",
            "keys: collection = \"db.coll\", time-field, export, uri, uri-env",
        )?;
        match check.collection.split_once('.') {
            Some((db, coll)) if !db.is_empty() && !coll.is_empty() => {}
            _ => {
                return Err(coffer_core::config_error(format!(
                    "audit collection `{}` must be `database.collection`",
                    check.collection
                )));
            }
        }
        check.export = check.export.map(|p| base_dir.join(p));
        Ok(Arc::new(check))
    }
}

/// A client for `target`, or why there is none.
async fn client(
    target: &MongoTarget,
    env: &CheckEnv<'_>,
) -> std::result::Result<(mongodb::Client, String), String> {
    let uri = match (&target.uri, &target.uri_env) {
        (Some(u), _) => u.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| format!("the variable {var} is not set"))?,
        (None, None) => crate::SERVER_KINDS
            .iter()
            .find_map(|kind| env.param(kind, crate::URI_OPTION))
            .map(str::to_owned)
            .ok_or("no server: give the check `uri-env` (or `uri`), or pass --mongo-uri")?,
    };
    connect(&uri).await
}

/// A client for `uri` (its server picked within 5 s) and the URI as shown.
pub(crate) async fn connect(uri: &str) -> std::result::Result<(mongodb::Client, String), String> {
    let shown = crate::uri::redact(uri);
    let mut options = mongodb::options::ClientOptions::parse(uri)
        .await
        .map_err(|e| crate::uri::scrub(&format!("bad connection string {shown}: {e}"), uri))?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let client = mongodb::Client::with_options(options)
        .map_err(|e| crate::uri::scrub(&format!("{shown}: {e}"), uri))?;
    Ok((client, shown))
}

fn split(ns: &str) -> (&str, &str) {
    ns.split_once('.').unwrap_or((ns, ""))
}

#[async_trait::async_trait]
impl Check for MongoCountsCheck {
    fn kind(&self) -> &str {
        "mongo-counts"
    }

    async fn run(&self, env: &CheckEnv<'_>) -> CheckResult {
        let hint = "compare with the snapshot's manifest (coffer show SNAPSHOT -i KEY): a missing collection or \
                    count means the restore did not bring everything back";
        let (client, server) = match client(&self.target, env).await {
            Ok(c) => c,
            Err(e) => return check_result("mongo-counts", "mongodb".into(), false, e, Some(hint)),
        };
        // What to compare: minimums (a live service), else the snapshot.
        let (wanted, exact): (BTreeMap<String, u64>, bool) = if let Some(exact) = &self.exact {
            (exact.clone(), true)
        } else if !self.minimums.is_empty() {
            (self.minimums.clone(), false)
        } else if let Some(m) = env.restored.and_then(expected_counts) {
            (m, true)
        } else {
            return check_result(
                "mongo-counts",
                server,
                false,
                "nothing to compare: no snapshot and no `minimums`".into(),
                Some("declare `minimums = { \"db.collection\" = N }` for `coffer check`"),
            );
        };
        let mut bad = Vec::new();
        let mut rows = Vec::new();
        let mut total = 0u64;
        for (ns, want) in &wanted {
            let (db, coll) = split(ns);
            let db = env.renamed(db);
            let counted = client
                .database(db)
                .collection::<Document>(coll)
                .count_documents(doc! {})
                .await;
            match counted {
                Ok(n) => {
                    total += n;
                    let ok = if exact { n == *want } else { n >= *want };
                    if !ok {
                        bad.push(format!(
                            "{db}.{coll}: {n}, {} {want}",
                            if exact { "snapshot" } else { "minimum" }
                        ));
                    }
                    rows.push(
                        json!({"collection": format!("{db}.{coll}"), "count": n, "expected": want, "ok": ok}),
                    );
                }
                Err(e) => {
                    bad.push(format!("{db}.{coll}: {e}"));
                    rows.push(json!({"collection": format!("{db}.{coll}"), "error": e.to_string()}));
                }
            }
        }
        let passed = bad.is_empty();
        let figure = if passed {
            format!(
                "{} collection(s), {total} documents, {}",
                wanted.len(),
                if exact {
                    "each as in the snapshot"
                } else {
                    "each at least its minimum"
                }
            )
        } else {
            format!("{} of {} differ: {}", bad.len(), wanted.len(), bad.join("; "))
        };
        let mut r = check_result("mongo-counts", server, passed, figure, Some(hint));
        r.details = json!({ "collections": rows });
        r
    }
}

/// The newest `field` of `db.coll`, as a timestamp.
async fn newest(
    client: &mongodb::Client,
    db: &str,
    coll: &str,
    field: &str,
) -> std::result::Result<Option<mongodb::bson::DateTime>, String> {
    let found = client
        .database(db)
        .collection::<Document>(coll)
        .find_one(doc! { field: { "$type": "date" } })
        .sort(doc! { field: -1 })
        .await
        .map_err(|e| e.to_string())?;
    Ok(found.and_then(|d| d.get_datetime(field).ok().copied()))
}

#[async_trait::async_trait]
impl Check for AuditCheck {
    fn kind(&self) -> &str {
        "audit"
    }

    async fn run(&self, env: &CheckEnv<'_>) -> CheckResult {
        let hint = "reconcile the entries written after the snapshot by hand (the export holds them)";
        match self.figures(env).await {
            Ok(r) => r,
            Err(why) => check_result("audit", self.collection.clone(), false, why, Some(hint)),
        }
    }
}

impl AuditCheck {
    async fn figures(&self, env: &CheckEnv<'_>) -> std::result::Result<CheckResult, String> {
        let (client, server) = client(&self.target, env).await?;
        let failed = |e: String| format!("{server}: {e}");
        let (db, coll) = split(&self.collection);
        let field = self.time_field.as_str();
        let live = newest(&client, db, coll, field).await.map_err(failed)?;
        // The snapshot's newest entry: in its scratch copy (a drill), else
        // the snapshot's time stands in.
        let snapshot_newest = match env.renamed(db) {
            scratch if scratch != db => newest(&client, scratch, coll, field).await.map_err(failed)?,
            _ => None,
        };
        let since = snapshot_newest
            .map(|t| t.timestamp_millis())
            .or(env.snapshot_time.map(|t| t.as_millisecond()));
        let now = jiff::Timestamp::now().as_millisecond();
        let gap_seconds = since.map(|s| (now - s) as f64 / 1000.0);
        // The entries written after the snapshot, from the live database.
        let mut after = 0u64;
        let mut exported = None;
        if let Some(since) = since {
            let filter = doc! { field: { "$gt": mongodb::bson::DateTime::from_millis(since) } };
            let docs: Vec<Document> = client
                .database(db)
                .collection::<Document>(coll)
                .find(filter)
                .sort(doc! { field: 1 })
                .await
                .map_err(|e| failed(e.to_string()))?
                .try_collect()
                .await
                .map_err(|e| failed(e.to_string()))?;
            after = docs.len() as u64;
            if let Some(path) = &self.export {
                let to = path.clone();
                tokio::task::spawn_blocking(move || write_lines(&to, &docs))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                exported = Some(path.display().to_string());
            }
        }
        let show = |t: Option<i64>| {
            t.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into())
        };
        let snapshot_shown = show(snapshot_newest.map(|t| t.timestamp_millis()));
        let live_shown = show(live.map(|t| t.timestamp_millis()));
        let figure = format!(
            "newest in snapshot {snapshot_shown}, live {live_shown}; {after} entr{} after the snapshot{}",
            if after == 1 { "y" } else { "ies" },
            exported
                .as_ref()
                .map(|p| format!(", exported to {p}"))
                .unwrap_or_default(),
        );
        let mut r = check_result("audit", self.collection.clone(), true, figure, None);
        r.details = json!({
            "snapshot_newest": snapshot_shown,
            "live_newest": live_shown,
            "gap_seconds": gap_seconds,
            "entries_after_snapshot": after,
            "export": exported,
        });
        Ok(r)
    }
}

/// `docs` as relaxed extended JSON, one per line, fsynced.
fn write_lines(path: &Path, docs: &[Document]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    for d in docs {
        let v = mongodb::bson::Bson::Document(d.clone()).into_relaxed_extjson();
        writeln!(f, "{v}")?;
    }
    f.sync_all()
}

/// The document counts a restore of `outcome` must show, `db.collection`
/// → documents of every collection its MongoDB sources hold (views have
/// no count): the manifest's (each collection as dumped), plus what the
/// replay of the writes made during a point-in-time dump added or
/// removed, so the counts are those at the snapshot's consistency point.
/// `None` when the restore held no MongoDB source.
pub fn expected_counts(outcome: &RestoreOutcome) -> Option<BTreeMap<String, u64>> {
    // The sources this restore wrote (`--only` leaves the others out).
    let restored: Vec<&str> = outcome.reports.iter().map(|(name, _)| name.as_str()).collect();
    counts_of(outcome, &restored)
}

/// As [`expected_counts`], for the restored sources named in `sources`.
pub(crate) fn counts_of(outcome: &RestoreOutcome, sources: &[&str]) -> Option<BTreeMap<String, u64>> {
    let restored: Vec<&str> = outcome
        .reports
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|n| sources.contains(n))
        .collect();
    let mut counts = manifest_counts(&outcome.summary.manifest, &restored)?;
    for (_, report) in outcome
        .reports
        .iter()
        .filter(|(n, _)| restored.contains(&n.as_str()))
    {
        for (ns, change) in &report.count_changes {
            let n = counts.entry(ns.clone()).or_default();
            *n = n.saturating_add_signed(*change);
        }
    }
    Some(counts)
}

fn manifest_counts(
    manifest: &coffer_core::format::Manifest,
    restored: &[&str],
) -> Option<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    let mut any = false;
    for source in manifest
        .sources
        .iter()
        .filter(|s| restored.contains(&s.name.as_str()))
    {
        let Some(list) = source.report.details.get("collections").and_then(Value::as_array) else {
            continue;
        };
        any = true;
        for c in list {
            if let (Some(db), Some(coll), Some(n)) = (
                c["db"].as_str(),
                c["collection"].as_str(),
                c["documents"].as_u64(),
            ) && c["type"] == "collection"
            {
                counts.insert(format!("{db}.{coll}"), n);
            }
        }
    }
    any.then_some(counts)
}
