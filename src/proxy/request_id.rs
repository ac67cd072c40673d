//! X-Request-Id (CONTRACT §5): keep a well-formed client id, otherwise mint a UUID v4.

use rand::Rng;

/// Whether a client-sent id may be reused: 1-128 chars of `[A-Za-z0-9._-]`.
pub fn acceptable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id for a request: the client's when acceptable (and there is exactly one), else new.
pub fn for_request<'a>(mut sent: impl Iterator<Item = &'a [u8]>) -> String {
    match (sent.next(), sent.next()) {
        (Some(id), None) if acceptable(id) => String::from_utf8_lossy(id).into_owned(),
        _ => new_id(),
    }
}

/// A random UUID v4, formatted 8-4-4-4-12.
pub fn new_id() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance() {
        assert!(acceptable(b"abc-123_X.y"));
        assert!(acceptable(&[b'a'; 128]));
        assert!(!acceptable(&[b'a'; 129]));
        assert!(!acceptable(b""));
        assert!(!acceptable(b"a b"));
        assert!(!acceptable(b"a\"b"));
    }

    #[test]
    fn new_ids_are_uuid_v4_and_distinct() {
        let a = new_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(acceptable(a.as_bytes()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn client_ids() {
        assert_eq!(for_request([&b"req-1"[..]].into_iter()), "req-1");
        assert_ne!(for_request([&b"bad id"[..]].into_iter()), "bad id");
        assert_ne!(for_request([&b"a"[..], &b"b"[..]].into_iter()), "a");
    }
}
