use super::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("authgate-journal-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("partners.toml.orgs.jsonl")
}

fn cleanup(path: &Path) {
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn counter() -> IntCounter {
    IntCounter::new("test_failures", "test").unwrap()
}

fn open(path: &Path, learned: &LearnedOrgs) -> Journal {
    Journal::open(path, learned, counter()).unwrap()
}

#[test]
fn appends_survive_a_restart() {
    let path = tmp("restart");
    let learned = LearnedOrgs::new();
    let j = open(&path, &learned);
    j.append(&learned, "acme", "o-1").unwrap();
    j.append(&learned, "acme", "o-2").unwrap();
    drop(j);
    let again = LearnedOrgs::new();
    open(&path, &again);
    assert!(again.owns("acme", "o-1") && again.owns("acme", "o-2"));
    cleanup(&path);
}

#[test]
fn a_torn_last_line_is_skipped_and_removed() {
    let path = tmp("torn");
    std::fs::write(&path, b"{\"partner\":\"a\",\"org\":\"o-1\"}\n{\"partner\":\"a\",\"or").unwrap();
    let learned = LearnedOrgs::new();
    let j = open(&path, &learned);
    assert!(learned.owns("a", "o-1"));
    assert_eq!(learned.len(), 1);
    j.append(&learned, "a", "o-2").unwrap();
    drop(j);
    let again = LearnedOrgs::new();
    open(&path, &again);
    assert!(again.owns("a", "o-2"));
    assert_eq!(again.len(), 2);
    cleanup(&path);
}

#[test]
fn start_compacts_duplicates_and_junk_but_keeps_every_partner() {
    let path = tmp("compact");
    let mut data = Vec::new();
    for _ in 0..50 {
        data.extend_from_slice(b"{\"partner\":\"a\",\"org\":\"o-1\"}\n");
    }
    data.extend_from_slice(b"garbage\n");
    // a partner that may no longer be in the policy: kept, never deleted
    data.extend_from_slice(b"{\"partner\":\"gone\",\"org\":\"o-9\"}\n");
    data.extend_from_slice(b"{\"partner\":\"a\",\"org\":\"o-2\"}\n{\"partner\"");
    std::fs::write(&path, &data).unwrap();
    let learned = LearnedOrgs::new();
    drop(open(&path, &learned));
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        "{\"partner\":\"a\",\"org\":\"o-1\"}\n{\"partner\":\"gone\",\"org\":\"o-9\"}\n{\"partner\":\"a\",\"org\":\"o-2\"}\n"
    );
    assert!(learned.owns("gone", "o-9"));
    assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
    cleanup(&path);
}

#[test]
fn import_is_idempotent_and_refresh_picks_it_up() {
    let path = tmp("import");
    let learned = LearnedOrgs::new();
    let j = open(&path, &learned);
    learned.learn("acme", "o-1"); // as the proxy does before appending
    j.append(&learned, "acme", "o-1").unwrap();
    let orgs: Vec<String> = ["o-1", "o-2", "o-3", "o-2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(import(&path, "acme", &orgs).unwrap(), 2);
    assert_eq!(import(&path, "acme", &orgs).unwrap(), 0);
    assert!(!learned.owns("acme", "o-2"));
    assert_eq!(j.refresh(&learned).unwrap(), 2);
    assert!(learned.owns("acme", "o-3"));
    assert_eq!(orgs_of(&path, "acme").unwrap(), vec!["o-1", "o-2", "o-3"]);
    assert!(orgs_of(&path, "other").unwrap().is_empty());
    cleanup(&path);
}

#[test]
fn the_writer_lock_excludes_other_writers() {
    let path = tmp("lock");
    let held = WriterLock::take(&path).unwrap();
    let other = OpenOptions::new().write(true).open(lock_path(&path)).unwrap();
    assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    drop(held);
    assert!(other.try_lock().is_ok());
    cleanup(&path);
}

#[test]
fn parse_never_fails() {
    assert_eq!(parse(b""), Replay::default());
    let r = parse(b"{\"partner\":\"\",\"org\":\"o\"}\n[]\n\xff\n{\"partner\":\"p\",\"org\":\"o\"}\n{");
    assert_eq!(r.entries, vec![("p".to_string(), "o".to_string())]);
    assert_eq!(r.unreadable, 3);
    assert!(r.torn_tail);
}

#[test]
fn a_damaged_journal_is_reported_by_line_and_kept_beside_the_compacted_one() {
    let path = tmp("damaged");
    let data = b"{\"partner\":\"a\",\"org\":\"o-1\"}\nnot json\n{\"partner\":\"a\",\"org\":\"o-2\"}\n";
    std::fs::write(&path, data).unwrap();
    assert_eq!(parse(data).first_bad_line, Some(2));
    let learned = LearnedOrgs::new();
    drop(open(&path, &learned));
    assert!(learned.owns("a", "o-1") && learned.owns("a", "o-2"));
    let kept = crate::state_file::damaged_copies(&path);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), data, "kept as it was");
    assert_eq!(parse(&std::fs::read(&path).unwrap()).first_bad_line, None, "compacted");
    cleanup(&path);
}

#[test]
fn a_line_the_file_did_not_take_is_retried_and_never_swallowed() {
    let path = tmp("unwritten");
    let learned = LearnedOrgs::new();
    let failures = counter();
    let j = Journal::open(&path, &learned, failures.clone()).unwrap();
    learned.learn("a", "o-1");
    assert!(j.write(vec![("a".into(), "o-1".into())], &learned));
    // the volume goes away: the line stays queued, the journal is not durable
    let dir = path.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    learned.learn("a", "o-2");
    assert!(!j.write(vec![("a".into(), "o-2".into())], &learned));
    assert!(!j.durable());
    assert!(failures.get() >= 1);
    std::fs::create_dir_all(&dir).unwrap();
    j.retry(&learned);
    assert!(j.durable());
    learned.learn("a", "o-3");
    assert!(j.write(vec![("a".into(), "o-3".into())], &learned));
    drop(j);
    let again = LearnedOrgs::new();
    open(&path, &again);
    for o in ["o-1", "o-2", "o-3"] {
        assert!(again.owns("a", o), "{o} survived");
    }
    cleanup(&path);
}

#[test]
fn a_journal_deleted_or_replaced_under_the_gateway_is_rewritten_from_memory() {
    let path = tmp("deleted");
    let learned = LearnedOrgs::new();
    let j = open(&path, &learned);
    learned.learn("a", "o-1");
    j.append(&learned, "a", "o-1").unwrap();
    std::fs::remove_file(&path).unwrap();
    j.retry(&learned);
    assert!(parse(&std::fs::read(&path).unwrap())
        .entries
        .contains(&("a".into(), "o-1".into())));
    // replaced by another file: its lines are learned, ours are kept
    std::fs::write(
        format!("{}.new", path.display()),
        b"{\"partner\":\"b\",\"org\":\"o-9\"}\n",
    )
    .unwrap();
    std::fs::rename(format!("{}.new", path.display()), &path).unwrap();
    j.retry(&learned);
    let entries = parse(&std::fs::read(&path).unwrap()).entries;
    assert!(entries.contains(&("a".into(), "o-1".into())) && entries.contains(&("b".into(), "o-9".into())));
    assert!(learned.owns("b", "o-9"));
    cleanup(&path);
}
