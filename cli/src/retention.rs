//! Retention in the CLI: how a prune report is printed (the policies are
//! [`coffer_app::retention`]'s).

use coffer_app::retention::AfterBackup;
use coffer_core::ops::PruneReport;

pub(crate) use coffer_app::retention::Policies;

/// Prints what prune did (or would do) on one sink.
pub(crate) fn print_prune(r: &PruneReport, several: bool) {
    if several {
        println!("sink {} ({}):", r.sink, r.location);
    }
    if r.snapshots.is_empty() {
        println!("  no snapshots");
    }
    let mut job = None;
    for row in &r.snapshots {
        if job != Some(&row.job) {
            job = Some(&row.job);
            print_job_header(r, &row.job);
        }
        let verdict = match (row.keep, row.deleted, &row.skipped) {
            (true, _, _) => "keep",
            (false, _, Some(_)) => "skipped",
            (false, true, _) => "deleted",
            (false, false, _) => "delete",
        };
        let why = match (&row.skipped, row.keep) {
            (Some(s), _) => s.clone(),
            (None, true) => row.reasons.join(", "),
            (None, false) => "no rule keeps it".to_string(),
        };
        let state = match &row.corrupt {
            Some(e) => format!(" [corrupt: {e}]"),
            None if row.state == "complete" => String::new(),
            None => format!(" [{}]", row.state),
        };
        println!(
            "  {verdict:<7} {}  {}{state}  {why}",
            row.id,
            row.time.strftime("%Y-%m-%d %H:%M:%S")
        );
    }
    for u in &r.unreadable {
        println!("  unreadable index {} (left alone): {}", u.key, u.error);
    }
    for sl in &r.slices {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        match (sl.removed_range, sl.kept_from) {
            (Some((from, to)), _) => println!(
                "  oplog {}/{}: {verb} {} slice(s), {} ({} … {}: before the oldest kept snapshot), {} left",
                sl.job,
                sl.source,
                sl.removed,
                crate::output::size(sl.removed_bytes),
                from.time(),
                to.time(),
                sl.left
            ),
            (None, None) => println!(
                "  oplog {}/{}: {} slice(s) kept (no kept snapshot has a point in time)",
                sl.job, sl.source, sl.left
            ),
            (None, Some(_)) => println!(
                "  oplog {}/{}: {} slice(s), none before the oldest kept snapshot",
                sl.job, sl.source, sl.left
            ),
        }
    }
    let kept = r.snapshots.iter().filter(|row| row.keep).count();
    if r.dry_run {
        let to_delete = r.snapshots.len() - kept;
        println!("{kept} kept, {to_delete} would be deleted (dry run: nothing was deleted)");
    } else {
        println!("{kept} kept, {} deleted", r.deleted());
    }
}

fn print_job_header(r: &PruneReport, job: &str) {
    let what = match r.policy_of(job) {
        Some(p) if !p.empty => format!("{} (from {})", p.policy, p.from),
        _ => "no retention policy: nothing is deleted".to_string(),
    };
    println!("job {job}: {what}");
    if let Some(f) = r.floor_of(job) {
        match &f.verified {
            Some(id) => {
                println!("  floor: {id} verified (SHA-256 of its object matches its index): never deleted")
            }
            None => println!(
                "  floor: no snapshot verified (SHA-256 of each object against its index): nothing is deleted"
            ),
        }
    }
}

/// Prints what `--keep-forever` and `--prune` did after a backup.
pub(crate) fn print_after(after: &AfterBackup) {
    if !after.pinned.is_empty() {
        println!("  pinned on {}: kept forever", after.pinned.join(", "));
    }
    for r in &after.pruned {
        println!("prune on sink {} ({}):", r.sink, r.location);
        print_prune(r, false);
    }
}
