//! Post-restore checks, declared per job (`[[job.NAME.checks]]`) and run
//! after `coffer restore`, by `coffer drill`, and alone by `coffer check`.
//! Each kind is a [`CheckFactory`] in the registry; the generic ones are
//! here, plugins bring their own (the MongoDB plugin: `mongo-counts`,
//! `audit`):
//!
//! - `http`: a URL answers an expected status (and body text) within a
//!   timeout, retried ([`crate::health`], the cold backup's health wait);
//! - `prometheus`: a metrics endpoint exposes named series, optionally
//!   increasing between scrapes within a window (parsed with
//!   `prometheus-parse`).
//!
//! Each check reports pass/fail, its figure and what to do on failure.

use std::sync::Arc;
use std::time::Instant;

use coffer_core::Registry;
use coffer_core::checks::{Check, CheckEnv};

pub use coffer_core::ops::CheckResult;

/// Registers the generic check kinds, `http` and `prometheus` (without
/// the `http` feature, kinds that refuse a config naming them).
pub fn register(reg: &mut Registry) {
    #[cfg(feature = "http")]
    {
        reg.register_check(Arc::new(http::HttpKind));
        reg.register_check(Arc::new(http::PrometheusKind));
    }
    #[cfg(not(feature = "http"))]
    for kind in ["http", "prometheus"] {
        reg.register_check(Arc::new(WithoutHttp(kind)));
    }
}

/// `http` and `prometheus` in a build without HTTP: a config that asks
/// for them is refused, saying why.
#[cfg(not(feature = "http"))]
struct WithoutHttp(&'static str);

#[cfg(not(feature = "http"))]
#[allow(clippy::wrong_self_convention)]
impl coffer_core::checks::CheckFactory for WithoutHttp {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn from_config(
        &self,
        _: coffer_core::toml::Table,
        _: &std::path::Path,
    ) -> coffer_core::Result<Arc<dyn Check>> {
        Err(coffer_core::config_error(crate::health::WITHOUT_HTTP)
            .with_hint("build coffer with its default features (or `--features http`)"))
    }
}

#[cfg(feature = "http")]
mod http {
    use std::collections::BTreeMap;
    use std::ops::ControlFlow;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use coffer_core::checks::{Check, CheckEnv, CheckFactory, check_result as result};
    use coffer_core::{Result, parse_table, toml};
    use serde::Deserialize;
    use serde_json::json;

    use super::CheckResult;
    use crate::health::{Health, shown_url};

    pub(super) struct HttpKind;

    impl CheckFactory for HttpKind {
        fn kind(&self) -> &'static str {
            "http"
        }

        fn from_config(&self, table: toml::Table, _: &Path) -> Result<Arc<dyn Check>> {
            let h: Health = parse_table(
                table,
                "`http` check",
                "keys: url, status, contains, timeout, interval, insecure, max-body",
            )?;
            h.check("`http` check").map_err(coffer_core::config_error)?;
            Ok(Arc::new(HttpCheck(h)))
        }
    }

    pub(super) struct PrometheusKind;

    impl CheckFactory for PrometheusKind {
        fn kind(&self) -> &'static str {
            "prometheus"
        }

        fn from_config(&self, table: toml::Table, _: &Path) -> Result<Arc<dyn Check>> {
            let p: PrometheusCheck = parse_table(
                table,
                "`prometheus` check",
                "keys: url, series = [\"name\", …], increasing, window, interval, insecure, max-body",
            )?;
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                return Err(coffer_core::config_error(format!(
                    "prometheus url `{}` must start with http:// or https://",
                    shown_url(&p.url)
                )));
            }
            if p.series.is_empty() {
                return Err(coffer_core::config_error(
                    "a prometheus check names at least one series",
                ));
            }
            Ok(Arc::new(p))
        }
    }

    /// `kind = "http"`: the keys of `health` (url, status, contains, timeout,
    /// interval, insecure).
    #[derive(Debug)]
    struct HttpCheck(Health);

    #[async_trait::async_trait]
    impl Check for HttpCheck {
        fn kind(&self) -> &str {
            "http"
        }

        async fn run(&self, _: &CheckEnv<'_>) -> CheckResult {
            http(&self.0).await
        }
    }

    #[async_trait::async_trait]
    impl Check for PrometheusCheck {
        fn kind(&self) -> &str {
            "prometheus"
        }

        async fn run(&self, _: &CheckEnv<'_>) -> CheckResult {
            prometheus(self).await
        }
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
                Ok(values) => match judge(p, &url, values, &mut first, started) {
                    ControlFlow::Break(r) => return r,
                    ControlFlow::Continue(seen) => last = seen,
                },
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

    /// Judges one scrape: the passed check's result, else what it showed (`first` keeps the first full one).
    fn judge(
        p: &PrometheusCheck,
        url: &str,
        values: Vec<Option<f64>>,
        first: &mut Option<Vec<Option<f64>>>,
        started: Instant,
    ) -> ControlFlow<CheckResult, String> {
        let missing: Vec<&str> = p
            .series
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            return ControlFlow::Continue(format!("missing {}", missing.join(", ")));
        }
        let totals: Vec<f64> = values.iter().map(|v| v.unwrap_or(0.0)).collect();
        let shown = p
            .series
            .iter()
            .zip(&totals)
            .map(|(n, v)| format!("{n} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !p.increasing {
            let mut r = result("prometheus", url.to_string(), true, shown, None);
            r.details = json!({ "values": p.series.iter().zip(&totals).collect::<BTreeMap<_, _>>() });
            return ControlFlow::Break(r);
        }
        match first.as_ref() {
            None => *first = Some(values),
            Some(before) => {
                let grew = before.iter().zip(&totals).all(|(b, now)| *now > b.unwrap_or(0.0));
                if grew {
                    let figure = format!("increasing: {shown}");
                    let mut r = result("prometheus", url.to_string(), true, figure, None);
                    r.details = json!({
                        "before": before, "after": totals,
                        "seconds": started.elapsed().as_secs_f64()
                    });
                    return ControlFlow::Break(r);
                }
            }
        }
        ControlFlow::Continue(format!("not increasing yet: {shown}"))
    }
}

/// The checks of `job` after a restore of its snapshot taken at
/// `snapshot_time` to its own places (`outcome`, with the restore options
/// `params`); none when the job declares none.
pub async fn after_restore(
    config: &crate::config::Config,
    job: &str,
    snapshot_time: jiff::Timestamp,
    outcome: &coffer_core::RestoreOutcome,
    params: &coffer_core::KindOptions,
) -> Vec<CheckResult> {
    let Some(job) = config.jobs.get(job).filter(|j| !j.checks.is_empty()) else {
        return Vec::new();
    };
    let env = CheckEnv {
        restored: Some(outcome),
        params: Some(params),
        snapshot_time: Some(snapshot_time),
        ..Default::default()
    };
    run_checks(&job.checks, &env).await
}

/// Runs `checks` in order, each timed.
pub async fn run_checks(checks: &[Arc<dyn Check>], env: &CheckEnv<'_>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for check in checks {
        let started = Instant::now();
        let mut result = check.run(env).await;
        result.seconds = coffer_core::ops::millis(started.elapsed().as_secs_f64());
        out.push(result);
    }
    out
}

/// `None` when every check passed, else what failed, in one line.
pub fn failures(results: &[CheckResult]) -> Option<String> {
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
