use super::*;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("authgate-state-file-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn appends_then_a_replace_then_appends_to_the_new_file() {
    let path = tmp("replace");
    assert_eq!(read_all(&path).unwrap(), b"", "missing = empty");
    let f = AppendFile::new(&path);
    f.append(b"a\n").unwrap();
    f.append(b"b\n").unwrap();
    assert_eq!(read_all(&path).unwrap(), b"a\nb\n");
    f.replace(b"b\n").unwrap();
    // the old handle pointed at the renamed-over file; the next append must not be lost
    f.append(b"c\n").unwrap();
    assert_eq!(read_all(&path).unwrap(), b"b\nc\n");
    assert!(!Path::new(&format!("{}.tmp", path.display())).exists());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_state_file_that_cannot_be_read_is_an_error_not_empty() {
    let dir = tmp("is-a-dir");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(read_all(&dir).is_err());
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_torn_tail_is_cut_before_the_next_append_so_it_swallows_nothing() {
    let path = tmp("torn");
    std::fs::write(&path, b"a\nhalf a li").unwrap();
    let f = AppendFile::new(&path);
    f.append(b"b\n").unwrap();
    assert_eq!(read_all(&path).unwrap(), b"a\nb\n");
    // a tail longer than one read block, and a file that is all tail
    let mut long = b"a\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 10_000));
    std::fs::write(&path, &long).unwrap();
    let f = AppendFile::new(&path);
    f.append(b"b\n").unwrap();
    assert_eq!(read_all(&path).unwrap(), b"a\nb\n");
    std::fs::write(&path, b"no newline at all").unwrap();
    let f = AppendFile::new(&path);
    f.append(b"b\n").unwrap();
    assert_eq!(read_all(&path).unwrap(), b"b\n");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_deleted_or_replaced_file_is_reported_as_moved_and_a_replace_heals_it() {
    let path = tmp("moved");
    let f = AppendFile::new(&path);
    f.append(b"a\n").unwrap();
    assert!(!f.moved());
    std::fs::remove_file(&path).unwrap();
    assert!(f.moved());
    assert!(matches!(f.append(b"b\n"), Err(AppendError::Moved)));
    f.replace(b"a\nb\n").unwrap();
    f.append(b"c\n").unwrap();
    assert_eq!(read_all(&path).unwrap(), b"a\nb\nc\n");
    // replaced by another file (an operator's copy, a restore)
    std::fs::write(format!("{}.other", path.display()), b"x\n").unwrap();
    std::fs::rename(format!("{}.other", path.display()), &path).unwrap();
    assert!(f.moved());
    assert!(matches!(f.append(b"d\n"), Err(AppendError::Moved)));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_checked_file_starts_with_its_header_and_every_line_carries_its_checksum() {
    let path = tmp("checked");
    let f = AppendFile::with_header(&path, "test-header 1");
    f.append(&checked_line(b"{\"a\":1}")).unwrap();
    f.append(&checked_line(b"{\"b\":2}")).unwrap();
    let data = read_all(&path).unwrap();
    assert!(data.starts_with(b"test-header 1\n"));
    assert_eq!(
        checked_lines(&data, "test-header 1").unwrap(),
        vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]
    );
    f.replace(&checked_line(b"{\"b\":2}")).unwrap();
    let data = read_all(&path).unwrap();
    assert_eq!(checked_lines(&data, "test-header 1").unwrap(), vec![&b"{\"b\":2}"[..]]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn every_single_flipped_byte_of_a_checked_file_is_found() {
    let mut data = b"h 1\n".to_vec();
    for payload in [&b"{\"kind\":\"partner\",\"key_id\":\"k1\"}"[..], b"{\"x\":2}"] {
        data.extend_from_slice(&checked_line(payload));
    }
    assert!(checked_lines(&data, "h 1").is_ok());
    for i in 0..data.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut bad = data.clone();
            bad[i] ^= flip;
            assert!(
                checked_lines(&bad, "h 1").is_err(),
                "byte {i} xor {flip:#x} went unnoticed: {:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}

#[test]
fn damage_names_its_line() {
    let line = checked_line(b"{}");
    let mut data = b"h 1\n".to_vec();
    data.extend_from_slice(&line);
    data.extend_from_slice(b"deadbeef {}\n");
    assert_eq!(checked_lines(&data, "h 1").unwrap_err().line, 3);
    assert_eq!(checked_lines(b"", "h 1").unwrap_err().line, 1, "empty");
    assert_eq!(checked_lines(b"h 2\n", "h 1").unwrap_err().line, 1, "another header");
    let mut torn = b"h 1\n".to_vec();
    torn.extend_from_slice(&line[..line.len() - 1]);
    assert_eq!(checked_lines(&torn, "h 1").unwrap_err().line, 2, "no newline");
    assert_eq!(checked_lines(b"h 1\n", "h 1").unwrap(), Vec::<&[u8]>::new());
}

#[test]
fn damaged_files_are_set_aside_and_listed() {
    let dir = tmp("aside-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.jsonl");
    std::fs::write(&path, b"garbage").unwrap();
    let kept = keep_copy(&path).unwrap();
    assert!(path.exists(), "a copy leaves the file");
    let moved = set_aside(&path).unwrap();
    assert!(!path.exists());
    assert_ne!(kept, moved, "two damages in one second keep both");
    assert_eq!(std::fs::read(&moved).unwrap(), b"garbage");
    let listed = damaged_copies(&path);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|p| p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("state.jsonl.damaged-")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_throttle_lets_one_line_through_per_interval() {
    let t = Throttle::new(Duration::from_secs(3600));
    assert!(t.due(), "the first line");
    assert!(!t.due(), "then quiet for the interval");
    let t = Throttle::new(Duration::ZERO);
    assert!(t.due() && t.due(), "no interval, no quiet");
}
