//! Configuration of the SFTP sink: a `[sink.NAME]` table or an `sftp://`
//! URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coffer_core::{Result, Sink, SinkSettings, TableContext};
use serde::Deserialize;

use crate::SftpSink;
use crate::error::SftpError;

/// Settings of an SFTP sink.
///
/// ```toml
/// [sink.nas]
/// kind = "sftp"
/// host = "backup.example.org"
/// port = 22                              # default 22
/// user = "coffer"
/// path = "/srv/backups/issuer-directory" # absolute, or relative to the login directory
/// key = "~/.ssh/id_ed25519"              # relative to the config file's folder;
///                                        # without `key`, the ssh-agent at
///                                        # $SSH_AUTH_SOCK (or `agent-socket`)
/// known-hosts = "~/.ssh/known_hosts"     # default ~/.ssh/known_hosts
/// # insecure-accept-host-key = true      # never in production
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct SftpSinkConfig {
    /// Server name or address.
    pub host: String,
    /// SSH port (default 22).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Login name.
    pub user: String,
    /// Directory holding the objects; created on first write.
    #[serde(default)]
    pub path: String,
    /// Private key file (OpenSSH format, unencrypted). The key's content is
    /// never logged. Empty: authenticate with the keys of an ssh-agent.
    #[serde(default)]
    pub key: PathBuf,
    /// The ssh-agent socket used when `key` is empty (default
    /// `$SSH_AUTH_SOCK`).
    #[serde(default)]
    pub agent_socket: Option<PathBuf>,
    /// known_hosts file the server's host key must be listed in (default
    /// `~/.ssh/known_hosts`). Hashed entries and `[host]:port` work.
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Accept any host key (a man in the middle could read nothing — the
    /// bundle is encrypted — but could drop or replace snapshots).
    #[serde(default)]
    pub insecure_accept_host_key: bool,
    /// Timeout of connecting and authenticating, seconds (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Timeout of one SFTP request, seconds (default 30).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_port() -> u16 {
    22
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_timeout() -> u64 {
    30
}

impl SftpSinkConfig {
    /// Settings for `user@host:port/path` with key file `key`.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        path: impl Into<String>,
        key: impl Into<PathBuf>,
    ) -> Self {
        SftpSinkConfig {
            host: host.into(),
            port,
            user: user.into(),
            path: path.into(),
            key: key.into(),
            agent_socket: None,
            known_hosts: None,
            insecure_accept_host_key: false,
            connect_timeout_secs: default_connect_timeout(),
            timeout_secs: default_timeout(),
        }
    }

    /// Sets the known_hosts file.
    pub fn with_known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }

    /// Accepts any host key.
    pub fn with_insecure_accept_host_key(mut self, yes: bool) -> Self {
        self.insecure_accept_host_key = yes;
        self
    }

    /// Sets the connect and request timeouts.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout_secs = connect.as_secs().max(1);
        self.timeout_secs = request.as_secs().max(1);
        self
    }

    /// `sftp://user@host:port/path`.
    pub fn location(&self) -> String {
        let sep = if self.path.starts_with('/') { "" } else { "/" };
        format!(
            "sftp://{}@{}:{}{sep}{}",
            self.user, self.host, self.port, self.path
        )
    }

    /// The known_hosts file in use.
    pub fn known_hosts_path(&self) -> Option<PathBuf> {
        self.known_hosts
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".ssh/known_hosts")))
    }

    /// Whether the keys of an ssh-agent authenticate (no key file given).
    pub fn uses_agent(&self) -> bool {
        self.key.as_os_str().is_empty()
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.host.is_empty() || self.user.is_empty() {
            return Err("`host` and `user` must not be empty".into());
        }
        if self.path.split('/').any(|s| s == "..") {
            return Err("`path` must not contain `..`".into());
        }
        if self.connect_timeout_secs == 0 || self.timeout_secs == 0 {
            return Err("timeouts must be at least 1 second".into());
        }
        Ok(())
    }
}

fn resolve(p: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SinkSettings for SftpSinkConfig {
    const KIND: &'static str = crate::KIND;
    const SCHEMES: &'static [&'static str] = &[crate::SCHEME];

    /// Parses `sftp://USER@HOST[:PORT]/PATH?key=FILE&known-hosts=FILE[&insecure-accept-host-key=true]`
    /// (no `key`: the ssh-agent at `$SSH_AUTH_SOCK` or `agent-socket=PATH`).
    /// `/PATH` is relative to the login directory; `//PATH` is absolute.
    fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| SftpError::InvalidUrl {
            url: url.split('?').next().unwrap_or("").to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("sftp://")
            .ok_or_else(|| invalid("it does not start with sftp://".into()))?;
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, q),
            None => (rest, ""),
        };
        let (authority, path) = match main.find('/') {
            Some(i) => (&main[..i], &main[i + 1..]),
            None => (main, ""),
        };
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| invalid("no user: write sftp://USER@HOST:PORT/PATH".into()))?;
        if user.contains(':') {
            return Err(SftpError::PasswordInUrl.into());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| invalid(format!("bad port `{p}`")))?,
            ),
            _ => (hostport, 22),
        };
        if host.is_empty() || user.is_empty() {
            return Err(invalid("empty user or host".into()).into());
        }
        let mut key = None;
        let mut c = SftpSinkConfig::new(host, port, decode(user), decode(path), PathBuf::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("query option `{pair}` has no `=`")))?;
            let v = decode(v);
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| invalid(format!("`{k}` must be a whole number")))
            };
            match k {
                "key" => key = Some(PathBuf::from(v)),
                "agent-socket" => c.agent_socket = Some(PathBuf::from(v)),
                "known-hosts" => c.known_hosts = Some(PathBuf::from(v)),
                "insecure-accept-host-key" => c.insecure_accept_host_key = v == "true",
                "connect-timeout-secs" => c.connect_timeout_secs = num(&v)?,
                "timeout-secs" => c.timeout_secs = num(&v)?,
                "password" => return Err(SftpError::PasswordInUrl.into()),
                other => return Err(invalid(format!("unknown option `{other}`")).into()),
            }
        }
        // Without `key`, the ssh-agent authenticates.
        c.key = key.unwrap_or_default();
        c.validate().map_err(invalid)?;
        Ok(c)
    }

    /// Parses the `[sink.NAME]` table of sink `name` (without `kind`);
    /// relative key and known_hosts paths are resolved against `base_dir`.
    fn from_table(table: coffer_core::toml::Table, at: &TableContext<'_>) -> Result<Self> {
        let (name, base_dir) = (at.name, at.base_dir);
        let mut c: SftpSinkConfig = coffer_core::toml::Value::Table(table).try_into().map_err(
            |e: coffer_core::toml::de::Error| SftpError::InvalidConfig {
                name: name.to_string(),
                message: e.message().to_string(),
            },
        )?;
        if !c.key.as_os_str().is_empty() {
            c.key = resolve(&c.key, base_dir);
        }
        c.known_hosts = c.known_hosts.map(|p| resolve(&p, base_dir));
        c.validate().map_err(|message| SftpError::InvalidConfig {
            name: name.to_string(),
            message,
        })?;
        Ok(c)
    }

    fn open(self) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(SftpSink::new(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c =
            SftpSinkConfig::from_url("sftp://coffer@127.0.0.1:2222/backups/x?key=/k/id&known-hosts=/k/kh")
                .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), c.path.as_str()),
            ("127.0.0.1", 2222, "coffer", "backups/x")
        );
        assert_eq!(c.key, PathBuf::from("/k/id"));
        assert!(!c.insecure_accept_host_key);
        let c = SftpSinkConfig::from_url("sftp://u@h//abs/dir?key=k&insecure-accept-host-key=true").unwrap();
        assert_eq!((c.port, c.path.as_str()), (22, "/abs/dir"));
        assert!(c.insecure_accept_host_key);
        let c = SftpSinkConfig::from_url("sftp://u@h/p?agent-socket=/run/a.sock").unwrap();
        assert!(c.uses_agent());
        assert_eq!(c.agent_socket, Some(PathBuf::from("/run/a.sock")));
        for bad in [
            "sftp://h/p?key=k",
            "sftp://u:pw@h/p?key=k",
            "sftp://u@h:x/p?key=k",
            "sftp://u@h/p?key=k&bogus=1",
        ] {
            let err = SftpSinkConfig::from_url(bad).expect_err(bad);
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }
}
