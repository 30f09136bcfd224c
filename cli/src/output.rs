//! Human and JSON output, progress bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer_core::{Error, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints an error with its hint (human) or as JSON
/// ([`coffer_core::ops::ErrorOutput`]) on stderr.
pub fn print_error(e: &Error, json: bool) {
    if json {
        let v = coffer_core::ops::ErrorOutput { error: e.into() };
        eprintln!("{}", serde_json::to_string(&v).expect("json"));
    } else {
        eprintln!("error: {}", printable(&e.to_string()));
        if let Some(h) = e.hint() {
            eprintln!("  hint: {}", printable(h));
        }
    }
}

pub use coffer_core::printable;

/// Prints `value` as pretty JSON on stdout: a command's outcome type, the
/// schema of which is in `docs/json-schema/`.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("json"));
}

/// Human size, e.g. `12.3 MiB`.
pub fn size(bytes: u64) -> String {
    coffer_core::human_size(bytes)
}

/// The rate of a phase, once it ran long enough to mean something (the
/// first blocks of a phase would show TiB/s).
fn rate(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    if state.elapsed() < Duration::from_millis(500) {
        let _ = w.write_str("…/s");
    } else {
        let _ = write!(w, "{}/s", indicatif::BinaryBytes(state.per_sec() as u64));
    }
}

/// A progress display fed by [`Progress`]: per phase, a bar with bytes
/// done of the total, rate and ETA where the total is known, else bytes
/// and rate; updated several times a second, within a file. Only on a
/// terminal, never with `-q` or `--json`.
pub struct Spinner {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Spinner {
    /// Starts showing `progress` unless quiet, JSON, or stderr is not a TTY.
    pub fn start(what: &str, progress: Arc<Progress>, quiet: bool) -> Spinner {
        if quiet || !std::io::stderr().is_terminal() {
            return Spinner {
                bar: None,
                task: None,
            };
        }
        progress.set_watched();
        // Up to 50 draws a second: a phase of a few tens of milliseconds
        // (verifying a small object) is still shown.
        let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr_with_hz(50));
        let b = bar.clone();
        let what = what.to_string();
        let task = tokio::spawn(async move {
            let bar_style = ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {rate} ETA {eta} {msg}",
            )
            .expect("template")
            .with_key("rate", rate)
            .progress_chars("=> ");
            let spin_style =
                ProgressStyle::with_template("{spinner} {prefix:>12} {bytes} {rate} {msg} [{elapsed}]")
                    .expect("template")
                    .with_key("rate", rate);
            let mut shown: Option<(&'static str, bool)> = None;
            loop {
                let (phase, done, total) = progress.now();
                let mode = (phase, total.is_some());
                if shown != Some(mode) {
                    // A new phase (or its total became known): a fresh bar,
                    // so rate and ETA are of this phase alone.
                    b.reset();
                    b.set_style(if total.is_some() {
                        bar_style.clone()
                    } else {
                        spin_style.clone()
                    });
                    b.set_prefix(if phase.is_empty() || phase == what {
                        what.clone()
                    } else {
                        format!("{what}: {phase}")
                    });
                    shown = Some(mode);
                }
                if let Some(t) = total {
                    b.set_length(t);
                    b.set_position(done.min(t));
                } else {
                    b.set_position(done);
                }
                let entries = progress.entries.load(Ordering::Relaxed);
                let cipher = progress.cipher_bytes.load(Ordering::Relaxed);
                if entries > 0 || cipher > 0 {
                    b.set_message(format!("{entries} entries, {} written", size(cipher)));
                }
                b.tick();
                progress.changed_or(Duration::from_millis(120)).await;
            }
        });
        Spinner {
            bar: Some(bar),
            task: Some(task),
        }
    }

    /// Prints a line on stdout without tearing the display.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Removes the display.
    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain ü name"), "plain ü name");
        assert_eq!(printable("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(printable("x\x1b[31mred\u{9b}2J"), "x\\u{1b}[31mred\\u{9b}2J");
        assert_eq!(printable("del\x7f"), "del\\u{7f}");
    }
}
