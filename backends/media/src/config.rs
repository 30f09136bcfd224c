//! Configuration of the media sink: a `[sink.NAME]` table or a URL.

use std::path::PathBuf;

use std::sync::Arc;

use coffer_core::{Result, Sink, SinkSettings, TableContext};
use coffer_sink_local::LocalSinkConfig;
use serde::{Deserialize, Serialize};

use crate::MediaSink;
use crate::error::MediaError;
use crate::identity::{MediaIdentity, check_name};

/// Settings of a media sink: where the medium is mounted and which media
/// it accepts.
///
/// ```toml
/// [sink.offsite]
/// kind = "media"
/// path = "/mnt/usb"
/// labels = ["OFFSITE-A", "OFFSITE-B"]   # and/or
/// set = "weekly"
/// retention = { keep-monthly = 12 }     # per medium
/// ```
///
/// With neither `labels` nor `set`, any initialized coffer medium is
/// accepted; with both, a medium must match both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct MediaSinkConfig {
    /// The mount point of the medium.
    pub path: PathBuf,
    /// Accepted labels (any of them).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Accepted rotation set.
    #[serde(default)]
    pub set: Option<String>,
}

impl MediaSinkConfig {
    /// Settings for the medium mounted at `path`, accepting any medium.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MediaSinkConfig {
            path: path.into(),
            labels: Vec::new(),
            set: None,
        }
    }

    /// Accepts only these labels.
    pub fn with_labels(mut self, labels: Vec<String>) -> Self {
        self.labels = labels;
        self
    }

    /// Accepts only this rotation set.
    pub fn with_set(mut self, set: Option<String>) -> Self {
        self.set = set;
        self
    }

    fn check(&self) -> Result<()> {
        for l in &self.labels {
            check_name("label", l)?;
        }
        if let Some(s) = &self.set {
            check_name("set", s)?;
        }
        Ok(())
    }

    /// Whether the medium `id` is one this sink accepts.
    pub fn accepts(&self, id: &MediaIdentity) -> bool {
        let label_ok = self.labels.is_empty() || self.labels.contains(&id.label);
        let set_ok = self.set.is_none() || self.set == id.set;
        label_ok && set_ok
    }

    /// What is accepted, for messages: `labels OFFSITE-A, OFFSITE-B; set weekly`.
    pub fn describe_accepted(&self) -> String {
        let mut parts = Vec::new();
        if !self.labels.is_empty() {
            parts.push(format!("labels {}", self.labels.join(", ")));
        }
        if let Some(s) = &self.set {
            parts.push(format!("set {s}"));
        }
        if parts.is_empty() {
            "any coffer medium".into()
        } else {
            parts.join("; ")
        }
    }
}

impl SinkSettings for MediaSinkConfig {
    const KIND: &'static str = crate::KIND;
    const SCHEMES: &'static [&'static str] = &[crate::SCHEME];

    /// Parses the `[sink.NAME]` table (without `kind`); a relative path is
    /// resolved against the config file's directory.
    fn from_table(table: coffer_core::toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let name = at.name;
        let mut config: MediaSinkConfig = coffer_core::toml::Value::Table(table).try_into().map_err(
            |e: coffer_core::toml::de::Error| MediaError::InvalidConfig {
                name: name.to_string(),
                message: e.message().to_string(),
            },
        )?;
        if config.path.as_os_str().is_empty() {
            return Err(MediaError::InvalidConfig {
                name: name.to_string(),
                message: "`path` is empty".into(),
            }
            .into());
        }
        config.path = LocalSinkConfig::new(config.path).resolved(at.base_dir).path;
        config.check()?;
        Ok(config)
    }

    /// Parses `media:PATH[?labels=A,B][&set=S]` (also `media://PATH`). A
    /// relative path is made absolute against the current directory.
    fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| MediaError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("media:")
            .ok_or_else(|| invalid("it does not start with media:".into()))?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(invalid("no path".into()).into());
        }
        let mut config = MediaSinkConfig::new(
            std::path::absolute(path).map_err(|e| coffer_core::Error::io("resolving the media path", e))?,
        );
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("labels" | "label", v)) => config.labels.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                Some(("set", v)) if !v.is_empty() => config.set = Some(v.to_string()),
                _ => return Err(invalid(format!("unknown option `{pair}` (known: labels=, set=)")).into()),
            }
        }
        config.check()?;
        Ok(config)
    }

    fn open(self) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(MediaSink::new(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = MediaSinkConfig::from_url("media:/mnt/usb?labels=OFFSITE-A,OFFSITE-B").unwrap();
        assert_eq!(c.path, PathBuf::from("/mnt/usb"));
        assert_eq!(c.labels, ["OFFSITE-A", "OFFSITE-B"]);
        let c = MediaSinkConfig::from_url("media:///mnt/usb?set=weekly").unwrap();
        assert_eq!(
            (c.path.to_str().unwrap(), c.set.as_deref()),
            ("/mnt/usb", Some("weekly"))
        );
        assert!(MediaSinkConfig::from_url("media:/mnt/usb?bogus=1").is_err());
        assert!(MediaSinkConfig::from_url("media:").is_err());
        assert!(MediaSinkConfig::from_url("media:/x?labels=a b").is_err());
    }

    #[test]
    fn acceptance() {
        let id = MediaIdentity::new("OFFSITE-A", Some("weekly")).unwrap();
        let c = MediaSinkConfig::new("/m");
        assert!(c.accepts(&id));
        assert!(c.clone().with_labels(vec!["OFFSITE-A".into()]).accepts(&id));
        assert!(!c.clone().with_labels(vec!["OFFSITE-B".into()]).accepts(&id));
        assert!(c.clone().with_set(Some("weekly".into())).accepts(&id));
        assert!(!c.with_set(Some("monthly".into())).accepts(&id));
    }
}
