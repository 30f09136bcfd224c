//! The retention flags of `coffer prune`, over the configured policies.

use clap::Args;
use coffer_core::{KeepWithin, PolicyTimeZone, RetentionPolicy};

/// Policy flags; any rule flag given replaces the configured policy.
#[derive(Debug, Args, Default, Clone)]
pub struct PolicyFlags {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within DURATION of the newest one (30d, 12h, 2w, 1y2m).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<KeepWithin>,
    /// Keep snapshots with this tag (`a,b`: both); repeatable.
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Time zone of day/week/month boundaries (IANA name; default UTC, or the
    /// configured policy's).
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<PolicyTimeZone>,
}

impl PolicyFlags {
    /// The policy the rule flags make, if any rule flag was given.
    pub(crate) fn policy(&self) -> Option<RetentionPolicy> {
        let p = RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_tag: self.keep_tag.clone(),
            timezone: self.timezone.clone(),
        };
        let any = self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
            || !self.keep_tag.is_empty();
        any.then_some(p)
    }
}
