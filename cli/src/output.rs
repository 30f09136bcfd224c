//! Human and JSON output, progress bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coffer_core::{Error, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints an error with its hint (human) or as JSON on stderr.
pub fn print_error(e: &Error, json: bool) {
    if json {
        let v = serde_json::json!({ "error": {
            "kind": e.kind().as_str(),
            "message": e.to_string(),
            "hint": e.hint(),
        }});
        eprintln!("{v}");
    } else {
        eprintln!("error: {}", printable(&e.to_string()));
        if let Some(h) = e.hint() {
            eprintln!("  hint: {}", printable(h));
        }
    }
}

/// `text` safe to print on a terminal: control characters (line breaks,
/// escape sequences, C1 codes) of a file name or key are shown escaped, as
/// `\n`, `\r`, `\t` or `\u{1b}`, so a name cannot move the cursor, recolour
/// or rewrite what the user reads.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("json"));
}

/// Human size, e.g. `12.3 MiB`.
pub fn size(bytes: u64) -> String {
    coffer_core::human_size(bytes)
}

/// A progress spinner fed by [`Progress`] counters; only on a terminal.
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
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]").expect("template"),
        );
        bar.set_prefix(what.to_string());
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let plain = progress.plain_bytes.load(Ordering::Relaxed);
                let cipher = progress.cipher_bytes.load(Ordering::Relaxed);
                let entries = progress.entries.load(Ordering::Relaxed);
                b.set_message(format!(
                    "{entries} entries, {} read, {} written",
                    size(plain),
                    size(cipher)
                ));
                b.tick();
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        });
        Spinner {
            bar: Some(bar),
            task: Some(task),
        }
    }

    /// Removes the spinner.
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
