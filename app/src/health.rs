//! The health wait of a cold backup: after the `after` hooks, poll an
//! HTTP(S) endpoint (e.g. `/health/live`) until it answers the expected
//! status (and body text, if asked), or a timeout. The run's result says
//! whether the service came back. Written to serve the post-restore checks
//! of drills too.

#[cfg(feature = "http")]
use std::time::{Duration, Instant};

use coffer_core::ops::{HealthWait, millis};
use coffer_core::{Error, ErrorKind};
use serde::Deserialize;

/// `health = { url = "…", status = 200, timeout = 120, interval = 2 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Health {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// The status that means healthy (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Text the body must contain, if given.
    #[serde(default)]
    pub contains: Option<String>,
    /// Seconds to wait in all (default 120).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Seconds between attempts (default 2).
    #[serde(default)]
    pub interval: Option<u64>,
    /// Accept a certificate that does not verify (a self-signed one on
    /// localhost).
    #[serde(default)]
    pub insecure: bool,
    /// Bytes of the body read at most for `contains` (default 1 MiB): a
    /// huge or endless body is never read whole into memory.
    #[serde(default = "default_max_body")]
    pub max_body: u64,
}

fn default_status() -> u16 {
    200
}

/// Bytes of a response body read at most, unless configured.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

pub fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY
}

/// Why a health wait or an HTTP check cannot run in a build without HTTP.
pub const WITHOUT_HTTP: &str = "this coffer was built without HTTP (cargo feature `http`): no health wait, no `http` or `prometheus` check";

/// Up to `limit` bytes of `resp`'s body, streamed (never more in memory),
/// and whether the body went on past them.
#[cfg(feature = "http")]
pub async fn read_body(
    mut resp: reqwest::Response,
    limit: u64,
) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(body.len() as u64) as usize;
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

impl Health {
    /// Checks the settings; `what` names them in a message (`health`,
    /// `` `http` check ``).
    pub fn check(&self, what: &str) -> std::result::Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "{what} url `{}` must start with http:// or https://",
                shown_url(&self.url)
            ));
        }
        if self.timeout == Some(0) || self.interval == Some(0) {
            return Err(format!(
                "{what} `timeout` and `interval` must be at least 1 second"
            ));
        }
        if cfg!(not(feature = "http")) {
            return Err(WITHOUT_HTTP.into());
        }
        Ok(())
    }
}

/// The URL without a password (`user:***@`).
pub fn shown_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            let user = url[scheme + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// How the wait went.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub url: String,
    pub ok: bool,
    pub attempts: u32,
    pub seconds: f64,
    /// What the last attempt saw.
    pub last: String,
}

impl HealthReport {
    pub fn typed(&self) -> HealthWait {
        HealthWait {
            url: self.url.clone(),
            ok: self.ok,
            attempts: self.attempts,
            seconds: millis(self.seconds),
            last: self.last.clone(),
        }
    }

    pub fn line(&self) -> String {
        if self.ok {
            format!(
                "health {}: {} after {:.1}s ({} attempt{})",
                self.url,
                self.last,
                self.seconds,
                self.attempts,
                if self.attempts == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "health {}: FAILED: not healthy within {:.0}s ({} attempts; last: {})",
                self.url, self.seconds, self.attempts, self.last
            )
        }
    }

    /// The run's error when the service did not come back.
    pub fn error(&self) -> Option<Error> {
        (!self.ok).then(|| {
            Error::new(
                ErrorKind::Unreachable,
                format!("the service did not come back: {}", self.line()),
            )
            .with_hint("check the service now: the backup itself is listed above")
        })
    }
}

/// Polls until healthy or the timeout (in a build without HTTP, which
/// refuses such a config, fails at once).
#[cfg(not(feature = "http"))]
pub async fn wait(h: &Health) -> HealthReport {
    HealthReport {
        url: shown_url(&h.url),
        ok: false,
        attempts: 0,
        seconds: 0.0,
        last: WITHOUT_HTTP.into(),
    }
}

/// Polls until healthy or the timeout.
#[cfg(feature = "http")]
pub async fn wait(h: &Health) -> HealthReport {
    let started = Instant::now();
    let timeout = Duration::from_secs(h.timeout.unwrap_or(120));
    let interval = Duration::from_secs(h.interval.unwrap_or(2));
    let mut report = HealthReport {
        url: shown_url(&h.url),
        ok: false,
        attempts: 0,
        seconds: 0.0,
        last: "no attempt".into(),
    };
    let client = match reqwest::Client::builder()
        .danger_accept_invalid_certs(h.insecure)
        .timeout(interval.max(Duration::from_secs(5)).min(timeout))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            report.last = format!("cannot make an HTTP client: {e}");
            return report;
        }
    };
    loop {
        report.attempts += 1;
        match client.get(&h.url).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let (body_ok, cut) = match &h.contains {
                    None => (true, false),
                    Some(text) => match read_body(resp, h.max_body).await {
                        Ok((body, cut)) => (contains(&body, text.as_bytes()), cut),
                        Err(_) => (false, false),
                    },
                };
                report.last = match (status == h.status, body_ok) {
                    (true, true) => {
                        report.ok = true;
                        format!("{status}")
                    }
                    (true, false) if cut => format!(
                        "{status} without the expected text in the first {} of the body (`max-body`)",
                        coffer_core::human_size(h.max_body)
                    ),
                    (true, false) => format!("{status} without the expected text"),
                    (false, _) => format!("{status}, not {}", h.status),
                };
            }
            Err(e) => report.last = short_error(&e),
        }
        report.seconds = started.elapsed().as_secs_f64();
        if report.ok || started.elapsed() + interval > timeout {
            return report;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(feature = "http")]
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The innermost cause of a request error, in one line.
#[cfg(feature = "http")]
pub fn short_error(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        cause.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown_url("https://u:secret@host/health"),
            "https://u:***@host/health"
        );
        assert_eq!(shown_url("http://host/a@b"), "http://host/a@b");
        assert_eq!(shown_url("http://host:80/x"), "http://host:80/x");
    }
}
