//! A byte-preserving `.env` reader: it finds which lines assign which key
//! and keeps every line's exact bytes, so a capture stores the lines as
//! written and a merge leaves every other line untouched. Values are never
//! unescaped or interpreted.
//!
//! Syntax (as docker compose): `KEY=VALUE`, optional `export ` prefix,
//! blank lines, `#` comments, values optionally single- or double-quoted
//! (a quoted value may span lines), LF or CRLF line endings.

use std::fmt;

/// One logical line: a comment, a blank line, an assignment (possibly
/// spanning several physical lines when quoted), or anything else.
pub(crate) struct EnvLine<'a> {
    /// The exact bytes, line ending(s) included.
    pub(crate) raw: &'a [u8],
    /// The key when the line assigns one.
    pub(crate) key: Option<&'a str>,
    /// Offset of the key in `raw` (0 when there is no key): what comes
    /// before it is indentation and `export `.
    key_start: usize,
    /// The value's text as written (after `=`, surrounding blanks and the
    /// final line ending removed); used only to compare two lines.
    value: &'a [u8],
}

impl EnvLine<'_> {
    /// Whether both lines assign the same text.
    pub(crate) fn same_value(&self, other: &EnvLine<'_>) -> bool {
        self.value == other.value
    }

    /// The bytes before the key: indentation and `export `, if any.
    pub(crate) fn before_key(&self) -> &[u8] {
        &self.raw[..self.key_start]
    }

    /// The bytes from the key on: `KEY=value…` and the line ending(s).
    pub(crate) fn key_onward(&self) -> &[u8] {
        &self.raw[self.key_start..]
    }
}

// By hand: the raw line and the value are secrets.
impl fmt::Debug for EnvLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvLine")
            .field("key", &self.key)
            .field("len", &self.raw.len())
            .finish_non_exhaustive()
    }
}

/// Splits `text` into logical lines; concatenating their `raw` gives back
/// `text` exactly.
pub(crate) fn parse(text: &[u8]) -> Vec<EnvLine<'_>> {
    let physical: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut start = 0;
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' {
                v.push((start, i + 1));
                start = i + 1;
            }
        }
        if start < text.len() {
            v.push((start, text.len()));
        }
        v
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < physical.len() {
        let (start, end) = physical[i];
        let line = &text[start..end];
        match assignment(line) {
            None => {
                out.push(EnvLine {
                    raw: line,
                    key: None,
                    key_start: 0,
                    value: &[],
                });
                i += 1;
            }
            Some((key, key_start, value_start)) => {
                let value_abs = start + value_start;
                // A quote left open on this line closes on a later one.
                let mut last = i;
                if let Some(q) = open_quote(&text[value_abs..end]) {
                    for (j, &(s, e)) in physical.iter().enumerate().skip(i + 1) {
                        if find_close(&text[s..e], q).is_some() {
                            last = j;
                            break;
                        }
                    }
                }
                let raw_end = physical[last].1;
                let value = trim(strip_eol(&text[value_abs..raw_end]));
                out.push(EnvLine {
                    raw: &text[start..raw_end],
                    key: Some(key),
                    key_start,
                    value,
                });
                i = last + 1;
            }
        }
    }
    out
}

/// For `[export ]KEY=…`, the key, its offset and the offset of the value's
/// first byte.
fn assignment(line: &[u8]) -> Option<(&str, usize, usize)> {
    let body = strip_eol(line);
    let lead = body.iter().take_while(|b| is_blank(**b)).count();
    let mut rest = &body[lead..];
    let mut offset = lead;
    if rest.first().is_none_or(|b| *b == b'#') {
        return None;
    }
    if let Some(after) = rest.strip_prefix(b"export")
        && after.first().is_some_and(|b| is_blank(*b))
    {
        let blanks = after.iter().take_while(|b| is_blank(**b)).count();
        offset += 6 + blanks;
        rest = &after[blanks..];
    }
    let eq = rest.iter().position(|b| *b == b'=')?;
    let key_start = offset
        + rest[..eq]
            .iter()
            .take_while(|b| is_blank(**b) || **b == b'\r')
            .count();
    let key = trim(&rest[..eq]);
    if key.is_empty()
        || !key
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return None;
    }
    let key = std::str::from_utf8(key).ok()?;
    let value = &rest[eq + 1..];
    let blanks = value.iter().take_while(|b| is_blank(**b)).count();
    Some((key, key_start, offset + eq + 1 + blanks))
}

/// The quote character of a value whose quote does not close on its first
/// line.
fn open_quote(value: &[u8]) -> Option<u8> {
    let q = *value.first()?;
    if q != b'"' && q != b'\'' {
        return None;
    }
    match find_close(&value[1..], q) {
        Some(_) => None,
        None => Some(q),
    }
}

/// Position of the closing quote `q` in `text`; in double quotes a
/// backslash escapes the next byte.
fn find_close(text: &[u8], q: u8) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in text.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if q == b'"' && *b == b'\\' {
            escaped = true;
        } else if *b == q {
            return Some(i);
        }
    }
    None
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|b| is_blank(**b) || **b == b'\r').count();
    let end = s.len()
        - s[start..]
            .iter()
            .rev()
            .take_while(|b| is_blank(**b) || **b == b'\r')
            .count();
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<Option<&str>> {
        parse(text.as_bytes()).iter().map(|l| l.key).collect()
    }

    #[test]
    fn lines_roundtrip_byte_for_byte() {
        let text = "# c\n\nA=1\r\nexport B = two words \n  C='x=y'\nnot a line\nD=\"multi\nline \\\" still\nend\" # tail\nE=last";
        let lines = parse(text.as_bytes());
        let joined: Vec<u8> = lines.iter().flat_map(|l| l.raw.iter().copied()).collect();
        assert_eq!(joined, text.as_bytes());
        assert_eq!(
            keys(text),
            [
                None,
                None,
                Some("A"),
                Some("B"),
                Some("C"),
                None,
                Some("D"),
                Some("E")
            ]
        );
        assert_eq!(lines[2].value, b"1");
        assert_eq!(lines[3].before_key(), b"export ");
        assert_eq!(lines[3].key_onward(), b"B = two words \n");
        assert_eq!(lines[4].before_key(), b"  ");
        assert_eq!(lines[0].key_onward(), b"# c\n");
        assert_eq!(lines[3].value, b"two words");
        assert_eq!(lines[4].value, b"'x=y'");
        assert_eq!(lines[6].raw, b"D=\"multi\nline \\\" still\nend\" # tail\n");
    }

    #[test]
    fn unterminated_quote_stays_one_line() {
        assert_eq!(keys("A=\"open\nB=2\n"), [Some("A"), Some("B")]);
    }

    #[test]
    fn odd_lines_are_not_keys() {
        assert_eq!(
            keys("=x\nexport\nexportX=1\n#A=1\nA B=1\n"),
            [None, None, Some("exportX"), None, None]
        );
    }

    #[test]
    fn debug_hides_values() {
        let text = b"TOKEN=s3cr3t\n";
        let dbg = format!("{:?}", parse(text));
        assert!(dbg.contains("TOKEN") && !dbg.contains("s3cr3t"), "{dbg}");
    }
}
