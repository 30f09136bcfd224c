//! S3 Object Lock: a retention mode and a retain-until date on every
//! snapshot object, index and signature, so that a compromised backup host
//! cannot destroy history.

use coffer_core::{format::SnapshotId, ops::RetentionPolicy};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

/// The Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// `GOVERNANCE`: users with `s3:BypassGovernanceRetention` may still
    /// shorten the lock or delete a locked version.
    Governance,
    /// `COMPLIANCE`: nobody, not even the account's root user, can delete
    /// a locked version or shorten its lock until the date passes.
    Compliance,
}

impl LockMode {
    /// The value of the `x-amz-object-lock-mode` header.
    pub fn header_value(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// Parses `governance` or `compliance` (any case).
    pub fn parse(s: &str) -> Option<LockMode> {
        match s.to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// `object-lock = { mode = "governance"|"compliance", days = N }` of an S3
/// sink, or with the retain-until date derived from a retention policy.
///
/// For a snapshot taken at time `t` (the time in its id), every object of
/// that snapshot — `<id>.coffer`, `<id>.json`, `<id>.sig` — is stored with
/// `x-amz-object-lock-mode = MODE` and
///
/// ```text
/// retain-until = max( t + days × 24 h ,
///                     t + N hours   (keep-hourly N),
///                     t + N days    (keep-daily N),
///                     t + N weeks   (keep-weekly N),
///                     t + N months  (keep-monthly N),
///                     t + N years   (keep-yearly N),
///                     t + D         (keep-within D) )
/// ```
///
/// over the rules that are set (calendar arithmetic in the policy's time
/// zone; see [`RetentionPolicy::time_horizon_end`]). Any snapshot may end
/// up as its month's (or year's) keeper, so each is locked for the
/// longest horizon: with `keep-daily = 30, keep-monthly = 12`, a year.
/// `keep-last` and `keep-tag` have no time horizon and add nothing.
///
/// The CLI fills `retention` from the sink's own `retention` table when
/// `object-lock` sets neither `days` nor `retention` (a sink may serve jobs
/// with different policies, so the job's policy is not used).
///
/// Locks are not set when the date is already past (a snapshot copied
/// long after it was taken), nor on lock files and pin markers, which
/// coffer deletes and rewrites.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct ObjectLockConfig {
    /// `governance` or `compliance`.
    pub mode: LockMode,
    /// Lock each snapshot for this many days after its time.
    #[serde(default)]
    pub days: Option<u32>,
    /// Lock each snapshot for the longest horizon of this policy.
    #[serde(default)]
    pub retention: Option<RetentionPolicy>,
}

impl ObjectLockConfig {
    /// A lock of `mode` for `days` days after each snapshot's time.
    pub fn days(mode: LockMode, days: u32) -> Self {
        ObjectLockConfig {
            mode,
            days: Some(days),
            retention: None,
        }
    }

    /// A lock of `mode` until the end of `policy`'s longest horizon.
    pub fn from_retention(mode: LockMode, policy: RetentionPolicy) -> Self {
        ObjectLockConfig {
            mode,
            days: None,
            retention: Some(policy),
        }
    }

    /// The retain-until date of a snapshot taken at `taken` (see the type's
    /// docs for the formula).
    pub fn retain_until(&self, taken: Timestamp) -> Option<Timestamp> {
        let by_days = self.days.filter(|d| *d > 0).map(|d| {
            taken
                .checked_add(SignedDuration::from_hours(i64::from(d) * 24))
                .unwrap_or(Timestamp::MAX)
        });
        let by_policy = self.retention.as_ref().and_then(|p| p.time_horizon_end(taken));
        match (by_days, by_policy) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.days == Some(0) {
            return Err("`object-lock.days` must be at least 1".into());
        }
        if self.retain_until(Timestamp::UNIX_EPOCH).is_none() {
            return Err(
                "`object-lock` needs `days = N`, or a retention policy with a time-based rule \
                 (keep-hourly … keep-yearly, keep-within) on this sink"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The time of the snapshot a key belongs to: `<id>.coffer`, `<id>.json`
/// or `<id>.sig` at the top of the sink. `None` for any other key (locks,
/// pins, anything under a directory).
pub(crate) fn snapshot_time(key: &str) -> Option<Timestamp> {
    if key.contains('/') {
        return None;
    }
    let id = [".coffer", ".json", ".sig"]
        .iter()
        .find_map(|suffix| key.strip_suffix(suffix))?;
    let id: SnapshotId = id.parse().ok()?;
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", &id.as_str()[..15]).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The `x-amz-object-lock-retain-until-date` value: ISO 8601 in UTC,
/// whole seconds.
pub(crate) fn header_date(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_have_times() {
        let t = snapshot_time("20261127T221500Z-3f9a1c2e.coffer").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T22:15:00Z");
        assert_eq!(snapshot_time("20261127T221500Z-3f9a1c2e.json"), Some(t));
        assert_eq!(snapshot_time("20261127T221500Z-3f9a1c2e.sig"), Some(t));
        for other in [
            "20261127T221500Z-3f9a1c2e.pin",
            "locks/shared-1.json",
            "x/20261127T221500Z-3f9a1c2e.coffer",
            "hello.coffer",
        ] {
            assert_eq!(snapshot_time(other), None, "{other}");
        }
        assert_eq!(header_date(t), "2026-11-27T22:15:00Z");
    }

    #[test]
    fn retain_until_takes_the_longest_horizon() {
        let t: Timestamp = "2026-11-27T22:15:00Z".parse().unwrap();
        let lock = ObjectLockConfig::days(LockMode::Governance, 10);
        assert_eq!(lock.retain_until(t).unwrap().to_string(), "2026-12-07T22:15:00Z");
        let policy: RetentionPolicy =
            coffer_core::toml::from_str("keep-daily = 7\nkeep-monthly = 12").unwrap();
        let lock = ObjectLockConfig::from_retention(LockMode::Compliance, policy.clone());
        assert_eq!(lock.retain_until(t).unwrap().to_string(), "2027-11-27T22:15:00Z");
        // A daily-only policy locks for far less than one with monthlies.
        let daily: RetentionPolicy = coffer_core::toml::from_str("keep-daily = 7").unwrap();
        let lock = ObjectLockConfig::from_retention(LockMode::Compliance, daily);
        assert_eq!(lock.retain_until(t).unwrap().to_string(), "2026-12-04T22:15:00Z");
        let mut both = ObjectLockConfig::from_retention(LockMode::Governance, policy);
        both.days = Some(800);
        assert_eq!(both.retain_until(t).unwrap().to_string(), "2029-02-04T22:15:00Z");
        let count_only: RetentionPolicy = coffer_core::toml::from_str("keep-last = 3").unwrap();
        let err = ObjectLockConfig::from_retention(LockMode::Governance, count_only)
            .validate()
            .unwrap_err();
        assert!(err.contains("days"), "{err}");
        assert!(
            ObjectLockConfig::days(LockMode::Governance, 0)
                .validate()
                .is_err()
        );
    }
}
