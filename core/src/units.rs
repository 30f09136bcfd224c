//! Formatting of sizes for people.

/// A byte count for messages and tables, e.g. `512 B`, `12.3 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
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

/// Decodes the `%XX` escapes of a URL component; a `%` not followed by two
/// hex digits stays as it is. Plugins parse their sink URLs with it.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::human_size(0), "0 B");
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(1023), "1023 B");
        assert_eq!(super::human_size(4_404_019), "4.2 MiB");
        assert_eq!(super::human_size(1536), "1.5 KiB");
        assert_eq!(super::human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("/a%20b/%C3%BC"), "/a b/ü".as_bytes());
        assert_eq!(super::percent_decode("/100%/x%2"), b"/100%/x%2");
        assert_eq!(super::percent_decode("%41"), b"A");
    }
}
