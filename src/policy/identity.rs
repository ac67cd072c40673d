//! Identity values (docs/reference.md#pipeline, step 2): what a partner id, an org id or a
//! key id may contain.
//!
//! These values go upstream as header values (`X-Partner-Id`, `X-Org-Id`, `X-Api-Key-Id`),
//! into logs and into rate-limit and Redis keys. A signed claim can hold any JSON string:
//! a CR/LF in it once made the upstream header unbuildable, a 500 after the rate-limit
//! bucket had been charged. So a value with a control character (Unicode `Cc`: C0, DEL, C1;
//! tab included) or longer than [`MAX_ID_BYTES`] is refused where it enters: a token is
//! `invalid_token` before any bucket is charged; a policy file or `authgate token` naming
//! one is refused.

/// Longest accepted identity value, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 256;

/// Whether `id` may serve as a partner, org or key id: at most [`MAX_ID_BYTES`] bytes and
/// no control character. Empty ids are left to the callers (a token's empty claim is a
/// principal nobody lists; a policy file refuses it with its own message).
pub fn valid_id(id: &str) -> bool {
    id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
}

/// Why [`valid_id`] refused a value, in words for config problems and the CLI.
pub(crate) fn id_problem(id: &str) -> Option<&'static str> {
    if id.len() > MAX_ID_BYTES {
        Some("is longer than 256 bytes")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_long_values_are_refused() {
        for ok in ["acme", "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "key 2025", "café", ""] {
            assert!(valid_id(ok), "{ok:?}");
            assert_eq!(id_problem(ok), None);
        }
        for bad in [
            "org\r\nX-Partner-Id: evil",
            "a\nb",
            "a\tb",
            "\0",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{9b}",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
            assert_eq!(id_problem(bad), Some("contains a control character"));
        }
        let longest = "x".repeat(MAX_ID_BYTES);
        assert!(valid_id(&longest));
        let long = "x".repeat(MAX_ID_BYTES + 1);
        assert!(!valid_id(&long));
        assert_eq!(id_problem(&long), Some("is longer than 256 bytes"));
        // bytes, not characters: 129 two-byte characters are 258 bytes
        assert!(!valid_id(&"é".repeat(129)));
    }
}
