//! X-Request-Id (docs/reference.md#responses): keep a well-formed client id, otherwise mint a UUID v4.

use std::cell::Cell;

use rand::Rng;

/// Whether a client-sent id may be reused: 1-128 chars of `[A-Za-z0-9._-]`.
pub(crate) fn acceptable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id for a request: the client's when acceptable (and there is exactly one), else new.
pub(crate) fn for_request<'a>(mut sent: impl Iterator<Item = &'a [u8]>) -> String {
    match (sent.next(), sent.next()) {
        (Some(id), None) if acceptable(id) => String::from_utf8_lossy(id).into_owned(),
        _ => new_id(),
    }
}

thread_local! {
    /// Per-thread state: two random seeds (from the OS) and a counter. Ids are built from
    /// SplitMix64 of seed + counter: distinct within the thread by construction, across
    /// threads and processes by the random seeds. Ids are not secrets: no CSPRNG per id.
    static STATE: Cell<(u64, u64, u64)> = Cell::new((rand::thread_rng().gen(), rand::thread_rng().gen(), 0));
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new id in UUID v4 form (8-4-4-4-12 lowercase hex), unique per request.
pub(crate) fn new_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (seed_a, seed_b, n) = STATE.with(|c| {
        let v = c.get();
        c.set((v.0, v.1, v.2.wrapping_add(1)));
        v
    });
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&splitmix(seed_a ^ n).to_be_bytes());
    b[8..].copy_from_slice(&seed_b.wrapping_add(n).to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // into a fixed array, then one copy: pushing char by char checked capacity and
    // encoded UTF-8 36 times
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    std::str::from_utf8(&text).map(str::to_owned).unwrap_or_default()
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
        for (i, c) in a.bytes().enumerate() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            assert_eq!(c == b'-', dash, "{a}");
            assert!(dash || c.is_ascii_digit() || (b'a'..=b'f').contains(&c), "{a}");
        }
        assert!(acceptable(a.as_bytes()));
        assert_ne!(a, new_id());
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.as_bytes()[19] == b'8'
            || id.as_bytes()[19] == b'9'
            || id.as_bytes()[19] == b'a'
            || id.as_bytes()[19] == b'b'));
    }

    #[test]
    fn client_ids() {
        assert_eq!(for_request([&b"req-1"[..]].into_iter()), "req-1");
        assert_ne!(for_request([&b"bad id"[..]].into_iter()), "bad id");
        assert_ne!(for_request([&b"a"[..], &b"b"[..]].into_iter()), "a");
    }
}
