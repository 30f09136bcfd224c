//! Post-restore checks, declared per job (`[[job.NAME.checks]]`) and run
//! after `coffer restore`, by `coffer drill`, and alone by `coffer check`:
//!
//! - `http`: a URL answers an expected status (and body text) within a
//!   timeout, retried ([`crate::health`], the cold backup's health wait);
//! - `prometheus`: a metrics endpoint exposes named series, optionally
//!   increasing between scrapes within a window (parsed with
//!   `prometheus-parse`);
//! - `mongo-counts`: every collection's document count equals the
//!   snapshot's manifest, or is at least a declared minimum;
//! - `audit`: the newest entry of an audit collection in the snapshot and
//!   in the live database, the gap to reconcile by hand, and the entries
//!   written after the snapshot exported as JSON lines.
//!
//! Each check reports pass/fail, its figure and what to do on failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

pub(crate) use coffer_core::ops::CheckResult;

use crate::health::{Health, shown_url};

/// One check of a job.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CheckSpec {
    /// `kind = "http"`: the keys of `health` (url, status, contains,
    /// timeout, interval, insecure).
    Http(Health),
    /// `kind = "prometheus"`.
    Prometheus(PrometheusCheck),
    /// `kind = "mongo-counts"`.
    MongoCounts(MongoCountsCheck),
    /// `kind = "audit"`.
    Audit(AuditCheck),
}

/// `kind = "prometheus"`: `url`, `series = ["name", …]`, `increasing`,
/// `window` (seconds, default 60), `interval` (default 5), `insecure`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PrometheusCheck {
    /// The metrics endpoint.
    pub url: String,
    /// Metric names that must be exposed.
    pub series: Vec<String>,
    /// Each series' total must grow between two scrapes within `window`.
    #[serde(default)]
    pub increasing: bool,
    /// Seconds to wait for the series (and their increase).
    #[serde(default)]
    pub window: Option<u64>,
    /// Seconds between scrapes.
    #[serde(default)]
    pub interval: Option<u64>,
    /// Accept a certificate that does not verify.
    #[serde(default)]
    pub insecure: bool,
    /// Bytes of a scrape read at most (default 1 MiB); a larger one fails
    /// the scrape instead of filling memory.
    #[serde(default = "crate::health::default_max_body")]
    pub max_body: u64,
}

/// Where a MongoDB check connects: `uri`, or the variable `uri-env` names
/// (keeps the password out of the config), else `--mongo-uri`.
// Read by the MongoDB checks, which need the `mongo` feature.
#[cfg_attr(not(feature = "mongo"), allow(dead_code))]
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
/// collection of the snapshot must hold exactly the manifest's count.
// Read by the MongoDB checks, which need the `mongo` feature.
#[cfg_attr(not(feature = "mongo"), allow(dead_code))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MongoCountsCheck {
    /// Where to count.
    #[serde(flatten)]
    pub target: MongoTarget,
    /// Minimum counts per `db.collection`.
    #[serde(default)]
    pub minimums: BTreeMap<String, u64>,
}

/// `kind = "audit"`: `collection = "db.coll"`, `time-field`, and
/// optionally `export` (a file for the JSON lines written after the
/// snapshot, relative to the config file).
// Read by the MongoDB checks, which need the `mongo` feature.
#[cfg_attr(not(feature = "mongo"), allow(dead_code))]
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

impl CheckSpec {
    /// Checks the settings (called when the config loads).
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        match self {
            CheckSpec::Http(h) => h.check(),
            CheckSpec::Prometheus(p) => {
                if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                    return Err(format!(
                        "prometheus url `{}` must start with http:// or https://",
                        shown_url(&p.url)
                    ));
                }
                if p.series.is_empty() {
                    return Err("a prometheus check names at least one series".into());
                }
                Ok(())
            }
            CheckSpec::MongoCounts(_) => Ok(()),
            CheckSpec::Audit(a) => match a.collection.split_once('.') {
                Some((db, coll)) if !db.is_empty() && !coll.is_empty() => Ok(()),
                _ => Err(format!(
                    "audit collection `{}` must be `database.collection`",
                    a.collection
                )),
            },
        }
    }
}

/// What the checks compare against.
// Read by the MongoDB checks, which need the `mongo` feature.
#[cfg_attr(not(feature = "mongo"), allow(dead_code))]
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckEnv {
    /// `db.collection` → documents, from the snapshot's manifest.
    pub(crate) manifest_counts: Option<BTreeMap<String, u64>>,
    /// A source database → the database to check instead (a drill's
    /// scratch copy).
    pub(crate) db_map: BTreeMap<String, String>,
    /// The server when a check names none (`--mongo-uri`).
    pub(crate) mongo_uri: Option<String>,
    /// When the snapshot was taken.
    pub(crate) snapshot_time: Option<jiff::Timestamp>,
    /// Relative export paths are resolved against this directory.
    pub(crate) base_dir: PathBuf,
}

/// Runs `specs` in order.
pub(crate) async fn run_checks(specs: &[CheckSpec], env: &CheckEnv) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for spec in specs {
        let started = Instant::now();
        let mut result = match spec {
            CheckSpec::Http(h) => http(h).await,
            CheckSpec::Prometheus(p) => prometheus(p).await,
            CheckSpec::MongoCounts(m) => mongo::counts(m, env).await,
            CheckSpec::Audit(a) => mongo::audit(a, env).await,
        };
        result.seconds = coffer_core::ops::millis(started.elapsed().as_secs_f64());
        out.push(result);
    }
    out
}

pub(crate) fn result(
    kind: &str,
    target: String,
    passed: bool,
    figure: String,
    hint: Option<&str>,
) -> CheckResult {
    CheckResult {
        kind: kind.to_string(),
        target,
        passed,
        figure,
        hint: if passed { None } else { hint.map(str::to_owned) },
        seconds: 0.0,
        details: Value::Null,
    }
}

async fn http(h: &Health) -> CheckResult {
    let report = crate::health::wait(h).await;
    let figure = if report.ok {
        format!(
            "{} after {:.1} s ({} attempt(s))",
            report.last, report.seconds, report.attempts
        )
    } else {
        format!(
            "not {} within {:.0} s; last: {}",
            h.status, report.seconds, report.last
        )
    };
    let mut r = result(
        "http",
        report.url.clone(),
        report.ok,
        figure,
        Some(
            "check that the service runs and answers on that URL (its logs, its port); raise `timeout` for a slow start",
        ),
    );
    r.details = serde_json::to_value(report.typed()).expect("json");
    r
}

/// Sums of each named series in one scrape; `None` for a series absent.
async fn scrape(
    client: &reqwest::Client,
    url: &str,
    series: &[String],
    max_body: u64,
) -> std::result::Result<Vec<Option<f64>>, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| crate::health::short_error(&e))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let (body, cut) = crate::health::read_body(resp, max_body)
        .await
        .map_err(|e| crate::health::short_error(&e))?;
    if cut {
        return Err(format!(
            "the metrics page is larger than {} (`max-body`)",
            coffer_core::human_size(max_body)
        ));
    }
    let text = String::from_utf8_lossy(&body);
    let scraped = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("not the Prometheus text format: {e}"))?;
    Ok(series
        .iter()
        .map(|name| {
            let values: Vec<f64> = scraped
                .samples
                .iter()
                .filter(|s| &s.metric == name)
                .filter_map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => Some(v),
                    _ => None,
                })
                .collect();
            (!values.is_empty()).then(|| values.iter().sum())
        })
        .collect())
}

async fn prometheus(p: &PrometheusCheck) -> CheckResult {
    let url = shown_url(&p.url);
    let window = Duration::from_secs(p.window.unwrap_or(60));
    let interval = Duration::from_secs(p.interval.unwrap_or(5).max(1));
    let hint = "check that the service exports these series (curl its metrics URL); a series that does not \
                increase means the service is up but not working";
    let client = match reqwest::Client::builder()
        .danger_accept_invalid_certs(p.insecure)
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return result(
                "prometheus",
                url,
                false,
                format!("cannot make an HTTP client: {e}"),
                Some(hint),
            );
        }
    };
    let started = Instant::now();
    let mut first: Option<Vec<Option<f64>>> = None;
    let mut last: String;
    loop {
        match scrape(&client, &p.url, &p.series, p.max_body).await {
            Err(e) => last = e,
            Ok(values) => {
                let missing: Vec<&str> = p
                    .series
                    .iter()
                    .zip(&values)
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| n.as_str())
                    .collect();
                if missing.is_empty() {
                    let totals: Vec<f64> = values.iter().map(|v| v.unwrap_or(0.0)).collect();
                    let shown = p
                        .series
                        .iter()
                        .zip(&totals)
                        .map(|(n, v)| format!("{n} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if !p.increasing {
                        let mut r = result("prometheus", url, true, shown, None);
                        r.details =
                            json!({ "values": p.series.iter().zip(&totals).collect::<BTreeMap<_, _>>() });
                        return r;
                    }
                    match &first {
                        None => first = Some(values),
                        Some(before) => {
                            let grew = before.iter().zip(&totals).all(|(b, now)| *now > b.unwrap_or(0.0));
                            if grew {
                                let figure = format!("increasing: {shown}");
                                let mut r = result("prometheus", url, true, figure, None);
                                r.details = json!({
                                    "before": before, "after": totals,
                                    "seconds": started.elapsed().as_secs_f64()
                                });
                                return r;
                            }
                        }
                    }
                    last = format!("not increasing yet: {shown}");
                } else {
                    last = format!("missing {}", missing.join(", "));
                }
            }
        }
        if started.elapsed() + interval > window {
            return result(
                "prometheus",
                url,
                false,
                format!("within {} s: {last}", window.as_secs()),
                Some(hint),
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// `path` against `base`, unless absolute.
// Read by the MongoDB checks, which need the `mongo` feature.
#[cfg_attr(not(feature = "mongo"), allow(dead_code))]
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(feature = "mongo")]
pub(crate) mod mongo {
    use std::collections::BTreeMap;
    use std::io::Write;

    use futures::TryStreamExt;
    use mongodb::bson::{Document, doc};
    use serde_json::json;

    use super::{AuditCheck, CheckEnv, CheckResult, MongoCountsCheck, MongoTarget, resolve, result};

    /// A client for `target`, or why there is none.
    async fn client(
        target: &MongoTarget,
        env: &CheckEnv,
    ) -> std::result::Result<(mongodb::Client, String), String> {
        let uri = match (&target.uri, &target.uri_env) {
            (Some(u), _) => u.clone(),
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("the variable {var} is not set"))?,
            (None, None) => env
                .mongo_uri
                .clone()
                .ok_or("no server: give the check `uri-env` (or `uri`), or pass --mongo-uri")?,
        };
        let shown = crate::health::shown_url(&uri);
        let mut options = mongodb::options::ClientOptions::parse(&uri)
            .await
            .map_err(|e| format!("bad connection string {shown}: {e}"))?;
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let client = mongodb::Client::with_options(options).map_err(|e| format!("{shown}: {e}"))?;
        Ok((client, shown))
    }

    fn split(ns: &str) -> (&str, &str) {
        ns.split_once('.').unwrap_or((ns, ""))
    }

    pub(super) async fn counts(check: &MongoCountsCheck, env: &CheckEnv) -> CheckResult {
        let hint = "compare with the snapshot's manifest (coffer show SNAPSHOT -i KEY): a missing collection or \
                    count means the restore did not bring everything back";
        let (client, server) = match client(&check.target, env).await {
            Ok(c) => c,
            Err(e) => return result("mongo-counts", "mongodb".into(), false, e, Some(hint)),
        };
        // What to compare: minimums (a live service), else the manifest.
        let (wanted, exact): (BTreeMap<String, u64>, bool) = if !check.minimums.is_empty() {
            (check.minimums.clone(), false)
        } else if let Some(m) = &env.manifest_counts {
            (m.clone(), true)
        } else {
            return result(
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
            let db = env.db_map.get(db).map(String::as_str).unwrap_or(db);
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
        let mut r = result("mongo-counts", server, passed, figure, Some(hint));
        r.details = json!({ "collections": rows });
        r
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

    /// Drops the databases `names` on `uri` (a drill's scratch copies).
    pub(crate) async fn drop_databases(uri: &str, names: &[String]) -> std::result::Result<(), String> {
        let target = MongoTarget {
            uri: Some(uri.to_string()),
            uri_env: None,
        };
        let (client, server) = client(&target, &CheckEnv::default()).await?;
        for name in names {
            client
                .database(name)
                .drop()
                .await
                .map_err(|e| format!("dropping {name} on {server}: {e}"))?;
        }
        Ok(())
    }

    pub(super) async fn audit(check: &AuditCheck, env: &CheckEnv) -> CheckResult {
        let hint = "reconcile the entries written after the snapshot by hand (the export holds them)";
        match audit_figures(check, env).await {
            Ok(r) => r,
            Err(why) => result("audit", check.collection.clone(), false, why, Some(hint)),
        }
    }

    async fn audit_figures(check: &AuditCheck, env: &CheckEnv) -> std::result::Result<CheckResult, String> {
        let (client, server) = client(&check.target, env).await?;
        let failed = |e: String| format!("{server}: {e}");
        let (db, coll) = split(&check.collection);
        let field = check.time_field.as_str();
        let live = newest(&client, db, coll, field).await.map_err(failed)?;
        // The snapshot's newest entry: in its scratch copy (a drill), else
        // the snapshot's time stands in.
        let snapshot_newest = match env.db_map.get(db) {
            Some(scratch) => newest(&client, scratch, coll, field).await.map_err(failed)?,
            None => None,
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
            if let Some(path) = &check.export {
                let path = resolve(&env.base_dir, path);
                write_lines(&path, &docs).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
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
        let mut r = result("audit", check.collection.clone(), true, figure, None);
        r.details = json!({
            "snapshot_newest": snapshot_shown,
            "live_newest": live_shown,
            "gap_seconds": gap_seconds,
            "entries_after_snapshot": after,
            "export": exported,
        });
        Ok(r)
    }

    /// `docs` as relaxed extended JSON, one per line, fsynced.
    fn write_lines(path: &std::path::Path, docs: &[Document]) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        for d in docs {
            let v = mongodb::bson::Bson::Document(d.clone()).into_relaxed_extjson();
            writeln!(f, "{v}")?;
        }
        f.sync_all()
    }
}

#[cfg(not(feature = "mongo"))]
pub(crate) mod mongo {
    use super::{AuditCheck, CheckEnv, CheckResult, MongoCountsCheck, result};

    const HINT: &str = "build coffer with the `mongo` feature";

    pub(crate) async fn drop_databases(_: &str, _: &[String]) -> std::result::Result<(), String> {
        Err(HINT.into())
    }

    pub(super) async fn counts(_: &MongoCountsCheck, _: &CheckEnv) -> CheckResult {
        result(
            "mongo-counts",
            "mongodb".into(),
            false,
            "not built in".into(),
            Some(HINT),
        )
    }

    pub(super) async fn audit(a: &AuditCheck, _: &CheckEnv) -> CheckResult {
        result(
            "audit",
            a.collection.clone(),
            false,
            "not built in".into(),
            Some(HINT),
        )
    }
}

/// `db.collection` → documents of every collection the snapshot's
/// MongoDB sources hold (views have no count), from its manifest.
/// The document counts a restore of `outcome` must show: the manifest's
/// (each collection as dumped), plus what the replay of the writes made
/// during a point-in-time dump added or removed, so the counts are those
/// at the snapshot's consistency point.
pub(crate) fn expected_counts(outcome: &coffer_core::RestoreOutcome) -> Option<BTreeMap<String, u64>> {
    // The sources this restore wrote (`--only` leaves the others out).
    let restored: Vec<&str> = outcome.reports.iter().map(|(name, _)| name.as_str()).collect();
    let mut counts = manifest_counts(&outcome.summary.manifest, &restored)?;
    for (_, report) in &outcome.reports {
        for (ns, change) in &report.count_changes {
            let n = counts.entry(ns.clone()).or_default();
            *n = n.saturating_add_signed(*change);
        }
    }
    Some(counts)
}

fn manifest_counts(manifest: &coffer_core::Manifest, restored: &[&str]) -> Option<BTreeMap<String, u64>> {
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

/// `None` when every check passed, else what failed, in one line.
pub(crate) fn failures(results: &[CheckResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} {}", r.kind, r.target))
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "{} of {} checks failed: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        )
    })
}
