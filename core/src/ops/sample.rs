//! `coffer verify --sample N%|N`: a rotating subset of the snapshots per
//! run, as restic's `--read-data-subset`, so a large archive is fully
//! covered over several runs. What the current cycle has covered is kept in
//! a small state object on the sink ([`STATE_KEY`]), which holds snapshot
//! ids only.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::{PutOptions, Result, Sink, SinkExt};
use serde::{Deserialize, Serialize};

/// The state object on the sink.
pub const STATE_KEY: &str = "coffer-verify-state.json";

/// How many snapshots a sampled run checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// This share of the snapshots (rounded up, at least one).
    Percent(u32),
    /// This many.
    Count(usize),
}

impl FromStr for Sample {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}`: give a share like 10% or a count like 3");
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(Sample::Percent(n)),
                _ => Err(bad()),
            },
            None => match s.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(Sample::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl Sample {
    /// How many of `total` snapshots one run checks.
    fn quota(self, total: usize) -> usize {
        match self {
            Sample::Percent(p) => (total * p as usize).div_ceil(100).max(1),
            Sample::Count(n) => n,
        }
    }
}

/// What the current cycle has covered.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Cycles begun (a cycle ends when every snapshot was checked once).
    pub cycle: u64,
    /// Snapshot ids checked in this cycle (bundles; with chunked
    /// snapshots, those of a deep check).
    pub covered: BTreeSet<String>,
    /// The rotation over the packs of the chunked snapshots: a sampled
    /// check without a key reads a share of the packs, since every
    /// snapshot references most of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packs: Option<Box<State>>,
}

/// The ids to check now, oldest first, and the state after checking them:
/// the snapshots this cycle has not covered yet (a new cycle when none is
/// left), at most `sample`'s quota. Snapshots pruned since drop out.
pub fn pick(all: &[String], state: &State, sample: Sample) -> (Vec<String>, State) {
    let mut next = State {
        packs: state.packs.clone(),
        cycle: state.cycle.max(1),
        covered: state
            .covered
            .iter()
            .filter(|id| all.contains(id))
            .cloned()
            .collect(),
    };
    if all.iter().all(|id| next.covered.contains(id)) {
        next.cycle += u64::from(!next.covered.is_empty());
        next.covered.clear();
    }
    let chosen: Vec<String> = all
        .iter()
        .filter(|id| !next.covered.contains(*id))
        .take(sample.quota(all.len()))
        .cloned()
        .collect();
    next.covered.extend(chosen.iter().cloned());
    (chosen, next)
}

/// The sink's state, or a fresh one.
pub async fn load(sink: &dyn Sink) -> Result<State> {
    match sink.get_bytes(STATE_KEY).await {
        Ok(bytes) => serde_json::from_slice(&bytes).or_else(|e| {
            tracing::warn!("ignoring an unreadable {STATE_KEY}: {e}; starting a new cycle");
            Ok(State::default())
        }),
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e),
    }
}

/// Stores the state (a failure only warns: the checks themselves stand).
pub async fn save(sink: &dyn Sink, state: &State) {
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    if let Err(e) = sink
        .put_bytes(STATE_KEY, bytes.into(), PutOptions::default())
        .await
    {
        tracing::warn!("could not store {STATE_KEY}: {e}; the next run may check these snapshots again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn parses_shares_and_counts() {
        assert_eq!("10%".parse::<Sample>(), Ok(Sample::Percent(10)));
        assert_eq!("3".parse::<Sample>(), Ok(Sample::Count(3)));
        for bad in ["0%", "101%", "0", "x", "-1", "%"] {
            assert!(bad.parse::<Sample>().is_err(), "{bad}");
        }
        assert_eq!(Sample::Percent(10).quota(5), 1);
        assert_eq!(Sample::Percent(40).quota(5), 2);
        assert_eq!(Sample::Percent(100).quota(7), 7);
    }

    #[test]
    fn every_snapshot_is_covered_once_per_cycle() {
        let all = ids(5);
        let sample = Sample::Percent(40);
        let (a, s1) = pick(&all, &State::default(), sample);
        let (b, s2) = pick(&all, &s1, sample);
        let (c, s3) = pick(&all, &s2, sample);
        assert_eq!(
            (a, b, c.clone()),
            (ids(2), vec!["s2".into(), "s3".into()], vec!["s4".to_string()])
        );
        assert_eq!((s1.cycle, s3.cycle, s3.covered.len()), (1, 1, 5));
        // A new cycle starts over, oldest first.
        let (d, s4) = pick(&all, &s3, sample);
        assert_eq!((d, s4.cycle), (ids(2), 2));
        // Pruned snapshots drop out; new ones are picked up.
        let mut grown = all[1..].to_vec();
        grown.push("s9".into());
        let (e, s5) = pick(&grown, &s4, Sample::Count(10));
        assert_eq!(e, vec!["s2", "s3", "s4", "s9"]);
        assert!(!s5.covered.contains("s0"));
    }
}
