use super::*;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("authgate-view-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("partners.toml.revocations.jsonl")
}

fn counter() -> IntCounter {
    IntCounter::new("test_failures", "test").unwrap()
}

fn open(path: &Path) -> RevocationView {
    RevocationView::open(path, Some(Duration::from_secs(5)), None, counter()).unwrap()
}

fn record(key_id: &str, revoked: bool, at: u64) -> Record {
    let mut r = Record::new(&Principal::partner("acme"), key_id, revoked);
    r.at = at;
    r
}

fn published(epoch: &str, seq: u64, r: Record) -> Published {
    Published {
        epoch: epoch.into(),
        seq,
        record: r,
    }
}

fn revoked(view: &RevocationView, key_id: &str) -> bool {
    view.revocations().contains(PrincipalKind::Partner, "acme", key_id)
}

#[test]
fn the_newest_record_wins_and_survives_a_restart() {
    let path = tmp("restart");
    let view = open(&path);
    assert!(view.revocations().is_empty());
    assert!(view.apply_read("e1", 0, vec![]));
    view.apply_published(vec![published("e1", 1, record("k1", true, 10))]);
    assert!(revoked(&view, "k1"));
    view.apply_published(vec![published("e1", 2, record("k1", true, 10))]);
    view.apply_published(vec![published("e1", 3, record("k1", false, 5))]);
    assert!(revoked(&view, "k1"), "an older withdrawal loses");
    drop(view);
    let view = open(&path);
    assert!(view.known(), "a whole state file makes the view known");
    assert!(revoked(&view, "k1"), "applied at start");
    view.apply_read("e1", 3, vec![record("k1", false, 11)]);
    assert!(view.revocations().is_empty());
    drop(view);
    let view = open(&path);
    assert!(view.revocations().is_empty());
    // compacted to one line per key, after the header
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with(HEADER));
}

#[test]
fn fields_are_unambiguous() {
    let a = Record::new(&Principal::partner("a\",\"b"), "c", true).field();
    let b = Record::new(&Principal::partner("a"), "b\",\"c", true).field();
    assert_ne!(a, b);
    assert_ne!(
        Record::new(&Principal::partner("x"), "k", true).field(),
        Record::new(&Principal::org("x"), "k", true).field()
    );
}

#[test]
fn a_view_is_usable_once_known_and_under_deny_only_while_fresh() {
    let path = tmp("fresh");
    let view = open(&path);
    // no state file, never read from Redis: nothing may be decided on it
    assert!(!view.usable(OnError::Local));
    assert!(!view.usable(OnError::Deny));
    assert_eq!(view.age(), None);
    view.retry_writes();
    assert!(
        !path.exists(),
        "no file before the view is known: a restart must not trust it"
    );
    view.apply_read("e1", 0, vec![]);
    view.confirm(Instant::now());
    assert!(view.usable(OnError::Local) && view.usable(OnError::Deny));
    view.retry_writes();
    assert!(path.exists(), "the first read leaves a state file, header only");
    // a confirmation from long ago: stale, which only deny refuses
    let stale = open(&path);
    assert!(stale.usable(OnError::Local), "a state file makes the view known");
    assert!(!stale.usable(OnError::Deny), "but not fresh");
    // without [redis] there is nothing shared to miss
    let embedded = RevocationView::open(&tmp("embedded"), None, None, counter()).unwrap();
    assert!(embedded.usable(OnError::Deny));
}

#[test]
fn the_watermark_advances_only_without_gaps_and_within_one_epoch() {
    let view = open(&tmp("watermark"));
    view.apply_read("e1", 0, vec![]);
    assert!(view.apply_published(vec![
        published("e1", 1, record("a", true, 1)),
        published("e1", 2, record("b", true, 1)),
    ]));
    assert!(
        view.apply_published(vec![published("e1", 2, record("b", true, 1))]),
        "seen before"
    );
    assert!(
        !view.apply_published(vec![published("e1", 4, record("d", true, 1))]),
        "3 is missing"
    );
    assert!(revoked(&view, "d"), "a record after a gap is in force all the same");
    assert_eq!(view.announced(), (Some("e1".into()), 2));
    view.apply_read("e1", 4, vec![]);
    assert_eq!(view.announced(), (Some("e1".into()), 4));
    view.apply_read("e1", 3, vec![]);
    assert_eq!(view.announced().1, 4, "an older full read never lowers it");
    // Redis lost its data: a new epoch, and numbers start again
    assert!(!view.apply_published(vec![published("e2", 1, record("e", true, 1))]));
    view.apply_read("e2", 1, vec![]);
    assert_eq!(view.announced(), (Some("e2".into()), 1));
}

#[test]
fn a_damaged_state_file_is_set_aside_and_the_view_starts_unknown() {
    let path = tmp("damaged");
    let view = open(&path);
    view.apply_read("e1", 1, vec![record("k1", true, 10)]);
    drop(view);
    let whole = std::fs::read(&path).unwrap();
    let flips = [whole.len() - 3, HEADER.len() + 3];
    for (i, damage) in [Some(flips[0]), Some(flips[1]), None].into_iter().enumerate() {
        let bytes = match damage {
            Some(at) => {
                let mut b = whole.clone();
                b[at] ^= 0x01;
                b
            }
            None => Vec::new(), // emptied
        };
        std::fs::write(&path, &bytes).unwrap();
        let view = open(&path);
        assert!(!view.known(), "case {i}: a damaged file is a missing file");
        assert!(!revoked(&view, "k1") && !view.usable(OnError::Local));
        assert!(!path.exists(), "case {i}: set aside");
        let kept = crate::state_file::damaged_copies(&path);
        assert_eq!(kept.len(), i + 1, "case {i}: kept");
        assert_eq!(std::fs::read(kept.last().unwrap()).unwrap(), bytes, "kept as it was");
    }
    assert_eq!(inspect(&path).unwrap(), None, "missing is not damaged");
    std::fs::write(&path, b"").unwrap();
    assert_eq!(inspect(&path).unwrap().map(|d| d.line), Some(1));
}

#[test]
fn a_write_the_file_does_not_take_stays_in_force_unannounced_until_a_retry() {
    let path = tmp("unwritten");
    let failures = counter();
    let view = RevocationView::open(&path, Some(Duration::from_secs(5)), None, failures.clone()).unwrap();
    assert!(view.apply_read("e1", 1, vec![record("k1", true, 10)]));
    view.confirm(Instant::now());
    assert_eq!(view.announced().1, 1);
    // the volume goes away under the replica
    let dir = path.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    view.apply_published(vec![published("e1", 2, record("k2", true, 10))]);
    assert!(revoked(&view, "k2"), "in force: never fail open");
    assert!(!view.durable());
    assert_eq!(view.announced().1, 1, "not announced before it is written down");
    assert!(view.usable(OnError::Local) && !view.usable(OnError::Deny));
    assert!(failures.get() >= 1);
    std::fs::create_dir_all(&dir).unwrap();
    view.retry_writes();
    assert!(view.durable());
    assert_eq!(view.announced().1, 2);
    drop(view);
    let again = open(&path);
    assert!(
        revoked(&again, "k1") && revoked(&again, "k2"),
        "both written back from memory"
    );
}
