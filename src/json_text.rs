//! JSON string escaping without allocating: the access log and the error bodies both write
//! user-influenced text (paths, names) into JSON they format by hand.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Hands `s`, escaped for the inside of a JSON string, to `put` in pieces (one piece when
/// nothing needs escaping). Control characters and DEL become `\u00XX` unless they have a
/// short form.
pub(crate) fn escape(s: &str, mut put: impl FnMut(&str)) {
    // the common case (nothing to escape) in one pass and one piece; otherwise the loop
    // starts at the first byte to escape, so no byte is looked at twice
    let Some(first) = s.bytes().position(needs_escape) else {
        put(s);
        return;
    };
    let mut start = 0;
    let mut unicode = [b'\\', b'u', b'0', b'0', b'0', b'0'];
    for (i, b) in s.bytes().enumerate().skip(first) {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                std::str::from_utf8(&unicode).unwrap_or("")
            }
            _ => continue,
        };
        // every byte escaped is ASCII, so `i` is a char boundary
        put(&s[start..i]);
        put(esc);
        start = i + 1;
    }
    put(&s[start..]);
}

/// The bytes JSON cannot hold as they are inside a string: `"`, `\`, control characters,
/// DEL. A table, as serde_json keeps one: one load a byte instead of four comparisons, on
/// every field of every access-log line.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t
};

/// A byte JSON cannot hold as it is inside a string.
fn needs_escape(b: u8) -> bool {
    NEEDS_ESCAPE[usize::from(b)]
}

/// [`escape`] appended to a byte buffer.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    escape(s, |piece| out.extend_from_slice(piece.as_bytes()));
}

/// `s` as a quoted JSON string, appended to `out`.
pub(crate) fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    escape(s, |piece| out.push_str(piece));
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_rule() {
        for b in 0..=255u8 {
            let rule = b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f;
            assert_eq!(needs_escape(b), rule, "{b:#x}");
        }
    }

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape_into(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"b\\\\c\\nd\\u0001é");
    }

    #[test]
    fn quoted_strings_parse_back_to_the_input() {
        for s in ["", "plain", "a\"b\\c\nd\u{1}é\u{7f}\t\r"] {
            let mut out = String::new();
            push_quoted(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }
}
