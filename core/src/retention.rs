//! Retention: which snapshots a [`RetentionPolicy`] keeps, with restic's
//! `forget` semantics, as a pure function of the snapshots, the policy and
//! an injected clock ([`apply`]).
//!
//! # Semantics
//! - Snapshots are grouped by job; each group is decided on its own.
//! - In a group, snapshots are sorted newest first (ties by id).
//! - `keep-last N` keeps the N newest.
//! - `keep-hourly|daily|weekly|monthly|yearly N` keep the newest snapshot of
//!   each of the last N hours/days/ISO weeks/months/years *that have
//!   snapshots* (gaps are skipped, they are not calendar periods). Bucket
//!   boundaries are those of the policy's time zone (UTC by default): a day
//!   is the local calendar day, 23 or 25 hours long across DST changes.
//! - `keep-within D` keeps the snapshots strictly newer than the newest
//!   snapshot's time minus D (calendar arithmetic in the policy's zone),
//!   so an old history is never wiped because backups stopped.
//! - `keep-tag T` keeps snapshots carrying tag T (`a,b`: both tags).
//! - Every rule has its own counter and the rules are OR-ed.
//! - A snapshot dated after `now` is kept (reason `future`) and takes no
//!   part in the time rules: it consumes no bucket and is not the
//!   reference of `keep-within`.
//! - Safety floor: a pinned snapshot is always kept; the newest snapshot
//!   that verified good (else the newest) is always kept; an empty policy
//!   keeps everything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use crate::bundle::SnapshotId;
use crate::error::{Error, Result, config_error};

/// Suffix of a pin marker, `<id>.pin`: a small public JSON object beside a
/// snapshot; while it exists, no retention policy deletes the snapshot.
pub const PIN_SUFFIX: &str = ".pin";

/// The key of the pin marker of `id`.
pub fn pin_key(id: &SnapshotId) -> String {
    format!("{id}{PIN_SUFFIX}")
}

/// The content of a pin marker `<id>.pin`. Its presence alone pins the
/// snapshot; the fields say who pinned it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct PinMarker {
    /// The pinned snapshot.
    pub id: SnapshotId,
    /// When it was pinned.
    pub pinned_at: Timestamp,
    /// Why, as the user said it.
    #[serde(default)]
    pub reason: Option<String>,
    /// Host that pinned it.
    pub host: String,
}

impl PinMarker {
    /// Canonical JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("pin serializes");
        v.push(b'\n');
        v
    }
}

/// Which snapshots to keep. The same struct serves `coffer.toml`
/// (`retention = { keep-daily = 30, keep-monthly = 12 }`) and, with the
/// `clap` feature, the flags of `coffer prune` (`--keep-daily 30`). A count
/// of 0 is the same as leaving the rule out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the N newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within DURATION of the newest one (30d, 12h, 2w,
    /// 1y2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub keep_within: Option<KeepWithin>,
    /// Keep snapshots with this tag (`a,b`: both a and b); repeatable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "clap", arg(long = "keep-tag", value_name = "TAG"))]
    pub keep_tag: Vec<String>,
    /// Time zone of day/week/month boundaries (IANA name; default UTC, or
    /// the configured policy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "TZ"))]
    pub timezone: Option<PolicyTimeZone>,
}

impl RetentionPolicy {
    /// Whether any rule is given, even as 0: flags that give one replace
    /// the configured policy.
    pub fn has_rules(&self) -> bool {
        self.counts().iter().any(Option::is_some) || self.keep_within.is_some() || !self.keep_tag.is_empty()
    }

    fn counts(&self) -> [Option<u32>; 6] {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
    }

    /// Whether no rule is set: such a policy deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|c| c.unwrap_or(0) == 0)
            && self.keep_within.is_none()
            && self.keep_tag.iter().all(|t| t.trim().is_empty())
    }

    /// The time zone of the bucket boundaries.
    pub fn time_zone(&self) -> TimeZone {
        self.timezone
            .as_ref()
            .map(|z| z.tz.clone())
            .unwrap_or(TimeZone::UTC)
    }

    /// The end of the longest time-based horizon that could keep a
    /// snapshot taken at `taken`: the latest of `taken + N hours|days|weeks|
    /// months|years` for each `keep-hourly|daily|weekly|monthly|yearly N`
    /// and `taken + D` for `keep-within D` (calendar arithmetic in the
    /// policy's zone). `None` when the policy has no time-based rule
    /// (`keep-last` and `keep-tag` count snapshots and tags, not time).
    ///
    /// While backups run at least once per period, a time rule stops
    /// keeping the snapshot by that date (a daily keeps it for N days, a
    /// monthly for N months: whichever snapshot ends up its period's
    /// keeper, this bound holds). Backups that pause, `keep-last`,
    /// `keep-tag` and pins can keep a snapshot longer. Used to derive S3
    /// Object Lock retain-until dates.
    pub fn time_horizon_end(&self, taken: Timestamp) -> Option<Timestamp> {
        let zoned: Zoned = taken.to_zoned(self.time_zone());
        let n = |c: Option<u32>| i64::from(c.unwrap_or(0));
        type Unit = fn(Span, i64) -> std::result::Result<Span, jiff::Error>;
        let rules: [(i64, Unit); 5] = [
            (n(self.keep_hourly), |s, n| s.try_hours(n)),
            (n(self.keep_daily), |s, n| s.try_days(n)),
            (n(self.keep_weekly), |s, n| s.try_weeks(n)),
            (n(self.keep_monthly), |s, n| s.try_months(n)),
            (n(self.keep_yearly), |s, n| s.try_years(n)),
        ];
        let mut end: Option<Timestamp> = None;
        for (count, unit) in rules {
            if count == 0 {
                continue;
            }
            // Out of range (e.g. 20 000 years): the far end of time.
            let t = unit(Span::new(), count)
                .ok()
                .and_then(|span| zoned.checked_add(span).ok())
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::MAX);
            end = Some(end.map_or(t, |e| e.max(t)));
        }
        if let Some(w) = &self.keep_within {
            let t = w.end(&zoned).unwrap_or(Timestamp::MAX);
            end = Some(end.map_or(t, |e| e.max(t)));
        }
        end
    }
}

impl fmt::Display for RetentionPolicy {
    /// `keep-daily 30, keep-monthly 12` (or `no rule`), plus the zone if set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (name, n) in [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ] {
            if let Some(n) = n.filter(|n| *n > 0) {
                parts.push(format!("{name} {n}"));
            }
        }
        if let Some(w) = &self.keep_within {
            parts.push(format!("keep-within {w}"));
        }
        for t in &self.keep_tag {
            parts.push(format!("keep-tag {t}"));
        }
        if parts.is_empty() {
            parts.push("no rule".into());
        }
        if let Some(z) = &self.timezone {
            parts.push(format!("timezone {}", z.name));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A `keep-within` duration: `30d`, `1y2m`, `12h`, `2w`, `1y2m3w4d5h`
/// (y years, m months, w weeks, d days, h hours; each unit at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeepWithin {
    years: u16,
    months: u16,
    weeks: u16,
    days: u32,
    hours: u32,
}

impl KeepWithin {
    /// The oldest excluded time: snapshots strictly after
    /// `reference - self` (calendar arithmetic in `tz`) are within.
    fn bound(&self, reference: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let span = Span::new()
            .try_years(self.years)
            .and_then(|s| s.try_months(self.months))
            .and_then(|s| s.try_weeks(self.weeks))
            .and_then(|s| s.try_days(self.days))
            .and_then(|s| s.try_hours(self.hours))
            .ok()?;
        let zoned: Zoned = reference.to_zoned(tz.clone());
        // Out of range (e.g. 9999 years): everything is within.
        zoned.checked_sub(span).ok().map(|z| z.timestamp())
    }

    /// `start + self` (calendar arithmetic in `start`'s zone), or `None`
    /// when out of range.
    fn end(&self, start: &Zoned) -> Option<Timestamp> {
        let span = Span::new()
            .try_years(self.years)
            .and_then(|s| s.try_months(self.months))
            .and_then(|s| s.try_weeks(self.weeks))
            .and_then(|s| s.try_days(self.days))
            .and_then(|s| s.try_hours(self.hours))
            .ok()?;
        start.checked_add(span).ok().map(|z| z.timestamp())
    }
}

impl FromStr for KeepWithin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        const UNITS: &str =
            "use a number and a unit (y years, m months, w weeks, d days, h hours), e.g. 30d, 12h or 1y2m";
        let bad = |why: String| {
            config_error(format!("`{s}` is not a keep-within duration: {why}; {UNITS}")).with_hint(UNITS)
        };
        let mut w = KeepWithin {
            years: 0,
            months: 0,
            weeks: 0,
            days: 0,
            hours: 0,
        };
        if s.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut seen = String::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad(format!("expected a number before `{rest}`")));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| bad(format!("`{}` is too large", &rest[..digits])))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(bad(format!("`{}` has no unit", &rest[..digits])));
            };
            if seen.contains(unit) {
                return Err(bad(format!("unit `{unit}` appears twice")));
            }
            let too_large = || bad(format!("`{number}{unit}` is too large"));
            match unit {
                'y' => {
                    w.years = u16::try_from(number)
                        .ok()
                        .filter(|n| *n <= 200)
                        .ok_or_else(too_large)?
                }
                'm' => {
                    w.months = u16::try_from(number)
                        .ok()
                        .filter(|n| *n <= 2400)
                        .ok_or_else(too_large)?
                }
                'w' => {
                    w.weeks = u16::try_from(number)
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .ok_or_else(too_large)?
                }
                'd' => {
                    w.days = u32::try_from(number)
                        .ok()
                        .filter(|n| *n <= 100_000)
                        .ok_or_else(too_large)?
                }
                'h' => {
                    w.hours = u32::try_from(number)
                        .ok()
                        .filter(|n| *n <= 2_000_000)
                        .ok_or_else(too_large)?
                }
                other => return Err(bad(format!("unknown unit `{other}`"))),
            }
            seen.push(unit);
            rest = &rest[digits + unit.len_utf8()..];
        }
        if w.years == 0 && w.months == 0 && w.weeks == 0 && w.days == 0 && w.hours == 0 {
            return Err(
                config_error(format!("keep-within `{s}` is zero: it would keep nothing"))
                    .with_hint("leave keep-within out, or give a duration such as 30d"),
            );
        }
        Ok(w)
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (u32::from(self.years), 'y'),
            (u32::from(self.months), 'm'),
            (u32::from(self.weeks), 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl TryFrom<String> for KeepWithin {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<KeepWithin> for String {
    fn from(w: KeepWithin) -> String {
        w.to_string()
    }
}

/// Both serialize as their text form.
macro_rules! text_schema {
    ($ty:ty, $name:literal, $description:literal) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}

text_schema!(
    KeepWithin,
    "KeepWithin",
    "A duration such as `30d`, `1y2m`, `12h`, `2w`."
);
text_schema!(
    PolicyTimeZone,
    "PolicyTimeZone",
    "An IANA time zone such as `Europe/Berlin` or `UTC`."
);

/// An IANA time zone (`Europe/Berlin`, `UTC`), checked when parsed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PolicyTimeZone {
    name: String,
    tz: TimeZone,
}

impl PolicyTimeZone {
    /// The IANA name as given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PartialEq for PolicyTimeZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PolicyTimeZone {}

impl FromStr for PolicyTimeZone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match TimeZone::get(s) {
            Ok(tz) => Ok(PolicyTimeZone {
                name: s.to_string(),
                tz,
            }),
            Err(e) => Err(config_error(format!(
                "unknown time zone `{s}` ({e}); use an IANA name such as UTC or Europe/Berlin"
            ))
            .with_hint("use an IANA name such as UTC or Europe/Berlin (see /usr/share/zoneinfo)")),
        }
    }
}

impl TryFrom<String> for PolicyTimeZone {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<PolicyTimeZone> for String {
    fn from(z: PolicyTimeZone) -> String {
        z.name
    }
}

/// What [`apply`] needs to know of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Snapshot time.
    pub time: Timestamp,
    /// Job that made it: the retention group.
    pub job: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// A pin marker exists: never deleted.
    pub pinned: bool,
    /// It verified good (the CLI: index and object present, sizes agree).
    pub verified_good: bool,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Decision {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Snapshot time.
    pub time: Timestamp,
    /// Its job (retention group).
    pub job: String,
    /// Keep (true) or delete (false).
    pub keep: bool,
    /// Why it is kept, e.g. `last 2/5`, `daily 3/30 (2026-11-25)`,
    /// `monthly 2/12 (2026-10)`, `within 30d`, `tag prod`, `pinned`,
    /// `newest`, `future`, `no policy`. Empty when deleted.
    pub reasons: Vec<String>,
}

/// Decides which snapshots `policy` keeps at time `now` (see the module
/// docs for the exact rules). Returns one decision per snapshot, grouped by
/// job (jobs in name order), newest first within a job. Pure: reads no
/// clock and touches no storage.
pub fn apply(snapshots: &[SnapshotMeta], policy: &RetentionPolicy, now: Timestamp) -> Vec<Decision> {
    let mut groups: BTreeMap<&str, Vec<&SnapshotMeta>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(s.job.as_str()).or_default().push(s);
    }
    let mut out = Vec::with_capacity(snapshots.len());
    for (_, mut group) in groups {
        group.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        apply_group(&group, policy, now, &mut out);
    }
    out
}

#[derive(Clone, Copy)]
enum Period {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The bucket of a snapshot: a key and its label.
    fn bucket(self, nr: usize, local: &Zoned) -> (i64, String) {
        let (y, m, d, h) = (
            i64::from(local.year()),
            i64::from(local.month()),
            i64::from(local.day()),
            i64::from(local.hour()),
        );
        match self {
            Period::Last => (nr as i64, String::new()),
            Period::Hour => (
                ((y * 100 + m) * 100 + d) * 100 + h,
                local.strftime(" (%Y-%m-%dT%H)").to_string(),
            ),
            Period::Day => ((y * 100 + m) * 100 + d, local.strftime(" (%Y-%m-%d)").to_string()),
            Period::Week => {
                let iso = local.date().iso_week_date();
                let (wy, w) = (i64::from(iso.year()), i64::from(iso.week()));
                (wy * 100 + w, format!(" ({wy:04}-W{w:02})"))
            }
            Period::Month => (y * 100 + m, local.strftime(" (%Y-%m)").to_string()),
            Period::Year => (y, format!(" ({y:04})")),
        }
    }
}

struct Counter {
    period: Period,
    limit: u32,
    used: u32,
    last: Option<i64>,
}

fn apply_group(group: &[&SnapshotMeta], policy: &RetentionPolicy, now: Timestamp, out: &mut Vec<Decision>) {
    let mut rules = GroupRules::new(group, policy, now);
    for (nr, s) in group.iter().enumerate() {
        let reasons = rules.reasons(nr, s);
        out.push(Decision {
            id: s.id.clone(),
            time: s.time,
            job: s.job.clone(),
            keep: !reasons.is_empty(),
            reasons,
        });
    }
}

/// The rules of a policy as they apply to one group, newest first, with
/// the counters they advance.
struct GroupRules<'a> {
    empty: bool,
    now: Timestamp,
    tz: TimeZone,
    /// Indexes of the snapshots not in the future.
    present: Vec<usize>,
    /// The snapshot kept as the safety floor: the newest verified one.
    floor: Option<usize>,
    within_bound: Option<(&'a KeepWithin, Option<Timestamp>)>,
    counters: Vec<Counter>,
    /// `a,b` as given, and its tags.
    tag_rules: Vec<(&'a str, Vec<&'a str>)>,
}

impl<'a> GroupRules<'a> {
    fn new(group: &[&SnapshotMeta], policy: &'a RetentionPolicy, now: Timestamp) -> GroupRules<'a> {
        let tz = policy.time_zone();
        let present: Vec<usize> = (0..group.len()).filter(|&i| group[i].time <= now).collect();
        let floor = present
            .iter()
            .copied()
            .find(|&i| group[i].verified_good)
            .or_else(|| present.first().copied());
        let within_bound = policy
            .keep_within
            .as_ref()
            .and_then(|w| present.first().map(|&i| (w, w.bound(group[i].time, &tz))));
        let counters = [
            (Period::Last, policy.keep_last),
            (Period::Hour, policy.keep_hourly),
            (Period::Day, policy.keep_daily),
            (Period::Week, policy.keep_weekly),
            (Period::Month, policy.keep_monthly),
            (Period::Year, policy.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(period, n)| {
            n.filter(|n| *n > 0).map(|limit| Counter {
                period,
                limit,
                used: 0,
                last: None,
            })
        })
        .collect();
        let tag_rules = policy
            .keep_tag
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(|t| (t, t.split(',').map(str::trim).filter(|x| !x.is_empty()).collect()))
            .collect();
        GroupRules {
            empty: policy.is_empty(),
            now,
            tz,
            present,
            floor,
            within_bound,
            counters,
            tag_rules,
        }
    }

    /// Why snapshot `nr` of the group is kept (empty: deleted).
    fn reasons(&mut self, nr: usize, s: &SnapshotMeta) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.empty {
            reasons.push("no policy".to_string());
        } else if s.time > self.now {
            reasons.push("future".to_string());
        } else {
            self.rule_reasons(nr, s, &mut reasons);
        }
        if s.pinned {
            reasons.push("pinned".to_string());
        }
        if self.floor == Some(nr) && !self.empty {
            // Said differently when newer snapshots failed their check.
            if self.present.first() == Some(&nr) || !s.verified_good {
                reasons.push("newest".to_string());
            } else {
                reasons.push("newest verified".to_string());
            }
        }
        reasons
    }

    /// The count, `keep-within` and tag rules that keep snapshot `nr`.
    fn rule_reasons(&mut self, nr: usize, s: &SnapshotMeta, reasons: &mut Vec<String>) {
        let local = s.time.to_zoned(self.tz.clone());
        for c in self.counters.iter_mut().filter(|c| c.used < c.limit) {
            let (key, label) = c.period.bucket(nr, &local);
            if c.last != Some(key) {
                c.last = Some(key);
                c.used += 1;
                reasons.push(format!("{} {}/{}{label}", c.period.name(), c.used, c.limit));
            }
        }
        if let Some((w, bound)) = &self.within_bound
            && bound.is_none_or(|b| s.time > b)
        {
            reasons.push(format!("within {w}"));
        }
        for (text, all) in &self.tag_rules {
            if all.iter().all(|t| s.tags.iter().any(|have| have == t)) {
                reasons.push(format!("tag {text}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn snap_in(job: &str, n: usize, time: &str) -> SnapshotMeta {
        let t = ts(time);
        SnapshotMeta {
            id: format!("{}-{n:08x}", t.strftime("%Y%m%dT%H%M%SZ"))
                .parse()
                .unwrap(),
            time: t,
            job: job.into(),
            tags: vec![],
            pinned: false,
            verified_good: true,
        }
    }

    fn history(times: &[&str]) -> Vec<SnapshotMeta> {
        times
            .iter()
            .enumerate()
            .map(|(n, t)| snap_in("j", n, t))
            .collect()
    }

    fn policy(toml_text: &str) -> RetentionPolicy {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
    }

    /// Times (as given) of the kept snapshots, newest first.
    fn kept(snaps: &[SnapshotMeta], p: &RetentionPolicy, now: &str) -> Vec<String> {
        apply(snaps, p, ts(now))
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.time.to_string())
            .collect()
    }

    fn reasons_of(snaps: &[SnapshotMeta], p: &RetentionPolicy, now: &str) -> Vec<(String, Vec<String>)> {
        apply(snaps, p, ts(now))
            .into_iter()
            .map(|d| (d.time.to_string(), d.reasons))
            .collect()
    }

    const NOW: &str = "2030-01-01T00:00:00Z";

    #[test]
    fn time_horizon_is_the_longest_time_rule() {
        let t = ts("2026-01-31T10:00:00Z");
        let end = |toml_text: &str| policy(toml_text).time_horizon_end(t).map(|e| e.to_string());
        assert_eq!(end("keep-last = 5\nkeep-tag = [\"prod\"]"), None);
        assert_eq!(end("keep-daily = 7").as_deref(), Some("2026-02-07T10:00:00Z"));
        // A monthly keeps longer than a daily; months are calendar months.
        assert_eq!(
            end("keep-daily = 30\nkeep-monthly = 1").as_deref(),
            Some("2026-03-02T10:00:00Z")
        );
        assert_eq!(
            end("keep-daily = 30\nkeep-monthly = 12").as_deref(),
            Some("2027-01-31T10:00:00Z")
        );
        assert_eq!(
            end("keep-hourly = 48\nkeep-within = \"1y2m\"").as_deref(),
            Some("2027-03-31T10:00:00Z")
        );
        assert_eq!(
            end("keep-yearly = 20000").as_deref(),
            Some(Timestamp::MAX.to_string().as_str())
        );
    }

    #[test]
    fn keep_daily_takes_the_newest_of_each_day_with_snapshots() {
        // Several a day, and a gap of days (not calendar days).
        let h = history(&[
            "2026-11-20T08:00:00Z",
            "2026-11-20T20:00:00Z",
            "2026-11-23T01:00:00Z",
            "2026-11-27T09:00:00Z",
            "2026-11-27T22:15:00Z",
            "2026-11-27T12:00:00Z",
        ]);
        let p = policy("keep-daily = 3");
        assert_eq!(
            kept(&h, &p, NOW),
            [
                "2026-11-27T22:15:00Z",
                "2026-11-23T01:00:00Z",
                "2026-11-20T20:00:00Z"
            ]
        );
        let r = reasons_of(&h, &p, NOW);
        assert_eq!(r[0].1, ["daily 1/3 (2026-11-27)", "newest"]);
        assert_eq!(r[1].1, Vec::<String>::new());
        assert_eq!(r[3].1, ["daily 2/3 (2026-11-23)"]);
        assert_eq!(r[4].1, ["daily 3/3 (2026-11-20)"]);
    }

    #[test]
    fn keep_last_and_rules_are_ored_with_own_counters() {
        let h = history(&[
            "2026-01-01T10:00:00Z",
            "2026-01-02T10:00:00Z",
            "2026-02-01T10:00:00Z",
            "2026-02-01T11:00:00Z",
            "2026-02-01T12:00:00Z",
        ]);
        let p = policy("keep-last = 2\nkeep-monthly = 2");
        let r = reasons_of(&h, &p, NOW);
        assert_eq!(
            r,
            [
                (
                    "2026-02-01T12:00:00Z".into(),
                    vec![
                        "last 1/2".to_string(),
                        "monthly 1/2 (2026-02)".into(),
                        "newest".into()
                    ]
                ),
                ("2026-02-01T11:00:00Z".into(), vec!["last 2/2".to_string()]),
                ("2026-02-01T10:00:00Z".into(), vec![]),
                (
                    "2026-01-02T10:00:00Z".into(),
                    vec!["monthly 2/2 (2026-01)".to_string()]
                ),
                ("2026-01-01T10:00:00Z".into(), vec![]),
            ]
        );
    }

    #[test]
    fn month_ends() {
        let h = history(&[
            "2026-01-31T23:59:59Z",
            "2026-02-01T00:00:00Z",
            "2026-02-28T23:59:59Z",
            "2026-03-01T00:00:00Z",
            "2026-04-30T23:00:00Z",
        ]);
        assert_eq!(
            kept(&h, &policy("keep-monthly = 4"), NOW),
            [
                "2026-04-30T23:00:00Z",
                "2026-03-01T00:00:00Z",
                "2026-02-28T23:59:59Z",
                "2026-01-31T23:59:59Z"
            ]
        );
        // The same instants in UTC+1 move across month ends.
        assert_eq!(
            kept(&h, &policy("keep-monthly = 4\ntimezone = \"Europe/Berlin\""), NOW),
            [
                "2026-04-30T23:00:00Z",
                "2026-03-01T00:00:00Z",
                "2026-02-01T00:00:00Z",
            ]
        );
    }

    #[test]
    fn leap_day() {
        let h = history(&[
            "2028-02-28T12:00:00Z",
            "2028-02-29T00:00:00Z",
            "2028-02-29T23:59:00Z",
            "2028-03-01T00:00:00Z",
        ]);
        let r = reasons_of(&h, &policy("keep-daily = 3"), NOW);
        assert_eq!(r[1].1, ["daily 2/3 (2028-02-29)"]);
        assert!(r[2].1.is_empty());
        assert_eq!(r[3].1, ["daily 3/3 (2028-02-28)"]);
        // A year back from a leap day is 2027-02-28 (clamped), strictly after.
        let h = history(&[
            "2027-02-28T12:00:00Z",
            "2027-02-28T12:00:01Z",
            "2028-02-29T12:00:00Z",
        ]);
        assert_eq!(
            kept(&h, &policy("keep-within = \"1y\""), NOW),
            ["2028-02-29T12:00:00Z", "2027-02-28T12:00:01Z"]
        );
    }

    #[test]
    fn iso_week_53() {
        // 2026 has 53 ISO weeks: W53 is Mon 2026-12-28 .. Sun 2027-01-03.
        let h = history(&[
            "2026-12-27T12:00:00Z",
            "2026-12-28T12:00:00Z",
            "2026-12-31T12:00:00Z",
            "2027-01-03T12:00:00Z",
            "2027-01-04T12:00:00Z",
        ]);
        let r = reasons_of(&h, &policy("keep-weekly = 3"), NOW);
        assert_eq!(r[0].1, ["weekly 1/3 (2027-W01)", "newest"]);
        assert_eq!(r[1].1, ["weekly 2/3 (2026-W53)"]);
        assert!(r[2].1.is_empty() && r[3].1.is_empty());
        assert_eq!(r[4].1, ["weekly 3/3 (2026-W52)"]);
        // Yearly uses the calendar year, not the ISO year.
        let r = reasons_of(&h, &policy("keep-yearly = 2"), NOW);
        assert_eq!(r[0].1, ["yearly 1/2 (2027)", "newest"]);
        assert_eq!(r[2].1, ["yearly 2/2 (2026)"]);
    }

    #[test]
    fn gaps_of_weeks_are_skipped() {
        let h = history(&[
            "2026-01-05T12:00:00Z",
            "2026-01-12T12:00:00Z",
            "2026-02-16T12:00:00Z",
            "2026-03-16T12:00:00Z",
            "2026-03-17T12:00:00Z",
        ]);
        assert_eq!(
            kept(&h, &policy("keep-weekly = 3"), NOW),
            [
                "2026-03-17T12:00:00Z",
                "2026-02-16T12:00:00Z",
                "2026-01-12T12:00:00Z"
            ]
        );
        // 30 daily over a sparse history keeps all 5 days.
        assert_eq!(kept(&h, &policy("keep-daily = 30"), NOW).len(), 5);
    }

    #[test]
    fn hourly_with_several_snapshots_an_hour() {
        let h = history(&[
            "2026-05-01T10:05:00Z",
            "2026-05-01T10:55:00Z",
            "2026-05-01T11:00:00Z",
            "2026-05-01T11:59:59Z",
            "2026-05-01T13:30:00Z",
        ]);
        let r = reasons_of(&h, &policy("keep-hourly = 24"), NOW);
        assert_eq!(r[0].1, ["hourly 1/24 (2026-05-01T13)", "newest"]);
        assert_eq!(r[1].1, ["hourly 2/24 (2026-05-01T11)"]);
        assert!(r[2].1.is_empty());
        assert_eq!(r[3].1, ["hourly 3/24 (2026-05-01T10)"]);
        assert!(r[4].1.is_empty());
    }

    #[test]
    fn dst_days_are_local_calendar_days() {
        let berlin = policy("keep-daily = 10\ntimezone = \"Europe/Berlin\"");
        let utc = policy("keep-daily = 10");
        // Fall back, 2026-10-25 has 25 hours in Berlin: 00:30 CEST and
        // 23:30 CET are the same local day, two UTC days.
        let h = history(&["2026-10-24T22:30:00Z", "2026-10-25T22:30:00Z"]);
        assert_eq!(kept(&h, &berlin, NOW), ["2026-10-25T22:30:00Z"]);
        assert_eq!(reasons_of(&h, &berlin, NOW)[0].1[0], "daily 1/10 (2026-10-25)");
        assert_eq!(kept(&h, &utc, NOW).len(), 2);
        // Spring forward, 2026-03-29 has 23 hours: 00:30 CET .. 23:30 CEST.
        let h = history(&["2026-03-28T23:30:00Z", "2026-03-29T21:30:00Z"]);
        assert_eq!(kept(&h, &berlin, NOW), ["2026-03-29T21:30:00Z"]);
        assert_eq!(kept(&h, &utc, NOW).len(), 2);
        // Summer: 23:30 and 00:30 CEST are two local days, one UTC day.
        let h = history(&["2026-07-01T21:30:00Z", "2026-07-01T22:30:00Z"]);
        assert_eq!(kept(&h, &berlin, NOW).len(), 2);
        assert_eq!(kept(&h, &utc, NOW), ["2026-07-01T22:30:00Z"]);
        // keep-within 1d across fall back is 25 hours in Berlin, 24 in UTC.
        let h = history(&["2026-10-24T22:30:00Z", "2026-10-25T23:00:00Z"]);
        let within = |tz: &str| policy(&format!("keep-within = \"1d\"\ntimezone = \"{tz}\""));
        assert_eq!(kept(&h, &within("Europe/Berlin"), NOW).len(), 2);
        assert_eq!(kept(&h, &within("UTC"), NOW), ["2026-10-25T23:00:00Z"]);
    }

    #[test]
    fn keep_within_is_measured_from_the_newest_snapshot() {
        let h = history(&[
            "2025-01-01T00:00:00Z",
            "2025-05-01T00:00:00Z",
            "2025-05-20T00:00:00Z",
            "2025-06-01T00:00:00Z",
        ]);
        // Backups stopped a year before `now`: the recent history stays.
        let r = reasons_of(&h, &policy("keep-within = \"30d\""), "2026-06-01T00:00:00Z");
        assert_eq!(r[0].1, ["within 30d", "newest"]);
        assert_eq!(r[1].1, ["within 30d"]);
        assert!(r[2].1.is_empty() && r[3].1.is_empty());
        assert_eq!(
            kept(&h, &policy("keep-within = \"2m\""), NOW),
            [
                "2025-06-01T00:00:00Z",
                "2025-05-20T00:00:00Z",
                "2025-05-01T00:00:00Z"
            ]
        );
        // Exactly at the bound is outside (strictly newer is within).
        assert_eq!(kept(&h, &policy("keep-within = \"31d\""), NOW).len(), 2);
    }

    #[test]
    fn future_snapshots_are_kept_and_take_no_bucket() {
        let h = history(&[
            "2026-05-30T10:00:00Z",
            "2026-05-31T10:00:00Z",
            "2026-07-01T10:00:00Z",
            "2027-01-01T10:00:00Z",
        ]);
        let now = "2026-06-01T00:00:00Z";
        let r = reasons_of(&h, &policy("keep-daily = 1\nkeep-within = \"1d\""), now);
        assert_eq!(r[0].1, ["future"]);
        assert_eq!(r[1].1, ["future"]);
        // The newest present snapshot is the reference and takes the bucket.
        assert_eq!(r[2].1, ["daily 1/1 (2026-05-31)", "within 1d", "newest"]);
        assert!(r[3].1.is_empty());
    }

    #[test]
    fn safety_floor_newest_verified_good() {
        let mut h = history(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-03T00:00:00Z",
        ]);
        let p = policy("keep-tag = [\"nothing-has-it\"]");
        assert_eq!(kept(&h, &p, NOW), ["2026-01-03T00:00:00Z"]);
        // The newest is broken: the newest good one is kept instead.
        h[2].verified_good = false;
        assert_eq!(kept(&h, &p, NOW), ["2026-01-02T00:00:00Z"]);
        let d = apply(&h, &p, ts(NOW));
        assert_eq!(d[1].reasons, ["newest verified"]);
        // None verified: the newest is kept.
        for s in &mut h {
            s.verified_good = false;
        }
        assert_eq!(kept(&h, &p, NOW), ["2026-01-03T00:00:00Z"]);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let h = history(&["2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"]);
        for p in [
            policy(""),
            policy("keep-daily = 0\nkeep-tag = []\ntimezone = \"UTC\""),
        ] {
            assert!(p.is_empty());
            let d = apply(&h, &p, ts(NOW));
            assert!(d.iter().all(|d| d.keep && d.reasons == ["no policy"]), "{d:?}");
        }
    }

    #[test]
    fn pinned_and_tagged_are_kept() {
        let mut h = history(&[
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-03T00:00:00Z",
            "2026-01-04T00:00:00Z",
        ]);
        h[0].pinned = true;
        h[1].tags = vec!["prod".into(), "eu".into()];
        h[2].tags = vec!["prod".into()];
        let r = reasons_of(&h, &policy("keep-last = 1\nkeep-tag = [\"prod,eu\"]"), NOW);
        assert_eq!(r[0].1, ["last 1/1", "newest"]);
        assert!(r[1].1.is_empty());
        assert_eq!(r[2].1, ["tag prod,eu"]);
        assert_eq!(r[3].1, ["pinned"]);
    }

    #[test]
    fn grouped_by_job() {
        let h = vec![
            snap_in("a", 1, "2026-01-01T00:00:00Z"),
            snap_in("b", 2, "2026-01-02T00:00:00Z"),
            snap_in("a", 3, "2026-01-03T00:00:00Z"),
            snap_in("b", 4, "2026-01-04T00:00:00Z"),
        ];
        let d = apply(&h, &policy("keep-last = 1"), ts(NOW));
        let kept: Vec<_> = d
            .iter()
            .filter(|d| d.keep)
            .map(|d| (d.job.as_str(), d.time.to_string()))
            .collect();
        assert_eq!(
            kept,
            [
                ("a", "2026-01-03T00:00:00Z".to_string()),
                ("b", "2026-01-04T00:00:00Z".to_string())
            ]
        );
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn keep_within_parses_and_rejects() {
        for (text, canon) in [
            ("30d", "30d"),
            ("1y2m", "1y2m"),
            ("12h", "12h"),
            ("2w", "2w"),
            ("1y2m3w4d5h", "1y2m3w4d5h"),
            ("0y30d", "30d"),
        ] {
            assert_eq!(text.parse::<KeepWithin>().unwrap().to_string(), canon);
        }
        for (bad, why) in [
            ("3x", "unknown unit `x`"),
            ("30", "no unit"),
            ("d", "expected a number"),
            ("", "empty"),
            ("1d1d", "twice"),
            ("-3d", "expected a number"),
            ("0d", "zero"),
            ("99999999999999999999d", "too large"),
            ("1000y", "too large"),
        ] {
            let e = bad.parse::<KeepWithin>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.hint().is_some(), "{bad}");
        }
    }

    #[test]
    fn policy_toml_is_strict() {
        let p = policy(
            "keep-last = 3\nkeep-daily = 30\nkeep-monthly = 12\nkeep-within = \"1y2m\"\nkeep-tag = [\"prod\"]\ntimezone = \"Europe/Berlin\"",
        );
        assert_eq!(p.keep_within.unwrap().to_string(), "1y2m");
        assert_eq!(p.timezone.as_ref().unwrap().name(), "Europe/Berlin");
        assert_eq!(
            p.to_string(),
            "keep-last 3, keep-daily 30, keep-monthly 12, keep-within 1y2m, keep-tag prod, timezone Europe/Berlin"
        );
        let back: RetentionPolicy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        for (bad, says) in [
            ("keep_daily = 3", "unknown field"),
            ("keep-dayly = 3", "unknown field"),
            ("keep-daily = -1", "keep-daily"),
            ("keep-within = \"3x\"", "unknown unit"),
            ("timezone = \"Mars/Olympus\"", "unknown time zone"),
        ] {
            let e = toml::from_str::<RetentionPolicy>(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    // ---- properties over random histories ----

    fn arb_history() -> impl Strategy<Value = (Vec<SnapshotMeta>, Timestamp)> {
        let snap = (
            0i64..(3 * 365 * 24 * 60), // minutes after the base
            0usize..2,                 // job
            proptest::collection::vec(prop::sample::select(vec!["prod", "weekly", "eu"]), 0..2),
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.9),
        );
        (
            proptest::collection::vec(snap, 0..40),
            0i64..(3 * 365 * 24 * 60 + 60 * 24 * 30),
        )
            .prop_map(|(snaps, now_min)| {
                let base = ts("2026-01-01T00:00:00Z");
                let h = snaps
                    .into_iter()
                    .enumerate()
                    .map(|(n, (min, job, tags, pinned, good))| {
                        let mut s = snap_in(
                            ["a", "b"][job],
                            n,
                            &base.checked_add(Span::new().minutes(min)).unwrap().to_string(),
                        );
                        s.tags = tags.into_iter().map(String::from).collect();
                        s.pinned = pinned;
                        s.verified_good = good;
                        s
                    })
                    .collect();
                (h, base.checked_add(Span::new().minutes(now_min)).unwrap())
            })
    }

    fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
        let count = || proptest::option::of(0u32..6);
        (
            (count(), count(), count(), count(), count(), count()),
            proptest::option::of(prop::sample::select(vec!["12h", "3d", "2w", "1m", "1y2m"])),
            proptest::collection::vec(prop::sample::select(vec!["prod", "eu", "prod,eu"]), 0..2),
            prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
        )
            .prop_map(|((l, h, d, w, m, y), within, tags, tz)| RetentionPolicy {
                keep_last: l,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
                keep_yearly: y,
                keep_within: within.map(|w| w.parse().unwrap()),
                keep_tag: tags.into_iter().map(String::from).collect(),
                timezone: Some(tz.parse().unwrap()),
            })
    }

    /// Each rule of `p` alone (same zone).
    fn single_rules(p: &RetentionPolicy) -> Vec<RetentionPolicy> {
        let only = RetentionPolicy {
            timezone: p.timezone.clone(),
            ..Default::default()
        };
        let mut out = vec![
            RetentionPolicy {
                keep_last: p.keep_last,
                ..only.clone()
            },
            RetentionPolicy {
                keep_hourly: p.keep_hourly,
                ..only.clone()
            },
            RetentionPolicy {
                keep_daily: p.keep_daily,
                ..only.clone()
            },
            RetentionPolicy {
                keep_weekly: p.keep_weekly,
                ..only.clone()
            },
            RetentionPolicy {
                keep_monthly: p.keep_monthly,
                ..only.clone()
            },
            RetentionPolicy {
                keep_yearly: p.keep_yearly,
                ..only.clone()
            },
            RetentionPolicy {
                keep_within: p.keep_within,
                ..only.clone()
            },
        ];
        for t in &p.keep_tag {
            out.push(RetentionPolicy {
                keep_tag: vec![t.clone()],
                ..only.clone()
            });
        }
        out.retain(|r| !r.is_empty());
        out
    }

    fn kept_ids(d: &[Decision]) -> std::collections::BTreeSet<SnapshotId> {
        d.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn kept_set_is_a_superset_of_each_rule_alone((h, now) in arb_history(), p in arb_policy()) {
            let all = kept_ids(&apply(&h, &p, now));
            for rule in single_rules(&p) {
                let alone = kept_ids(&apply(&h, &rule, now));
                prop_assert!(alone.is_subset(&all), "rule {rule} keeps {:?} that {p} deletes", alone.difference(&all).collect::<Vec<_>>());
            }
        }

        #[test]
        fn safety_floor_holds((h, now) in arb_history(), p in arb_policy()) {
            let d = apply(&h, &p, now);
            prop_assert_eq!(d.len(), h.len());
            let kept = kept_ids(&d);
            for s in &h {
                if s.pinned || s.time > now || p.is_empty() {
                    prop_assert!(kept.contains(&s.id), "{:?} deleted", s);
                }
                let deleted = d.iter().find(|x| x.id == s.id).unwrap();
                prop_assert_eq!(deleted.keep, !deleted.reasons.is_empty());
            }
            for job in ["a", "b"] {
                let mut group: Vec<_> = h.iter().filter(|s| s.job == job && s.time <= now).collect();
                group.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
                let floor = group.iter().find(|s| s.verified_good).or(group.first());
                if let Some(f) = floor {
                    prop_assert!(kept.contains(&f.id), "newest good {:?} deleted", f);
                }
                // With every snapshot good, the newest is always kept.
                if group.iter().all(|s| s.verified_good) && let Some(newest) = group.first() {
                    prop_assert!(kept.contains(&newest.id));
                }
            }
        }

        #[test]
        fn applying_to_the_kept_set_deletes_nothing_more((h, now) in arb_history(), p in arb_policy()) {
            let kept = kept_ids(&apply(&h, &p, now));
            let rest: Vec<SnapshotMeta> = h.iter().filter(|s| kept.contains(&s.id)).cloned().collect();
            let again = apply(&rest, &p, now);
            let deleted: Vec<_> = again.iter().filter(|d| !d.keep).collect();
            prop_assert!(deleted.is_empty(), "second run deletes {:?}", deleted);
        }
    }
}
