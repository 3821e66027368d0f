use super::*;

fn wait(f: impl FnOnce(Done)) {
    let (tx, rx) = std::sync::mpsc::channel();
    f(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.recv().unwrap().unwrap();
}

fn append(wal: &Wal, from: u64, to: u64) {
    let entries = (from..=to).map(|i| (i, format!("entry-{i}").into_bytes())).collect();
    wait(|d| wal.append(entries, d));
}

fn indexes(wal: &Wal) -> Vec<u64> {
    wal.read(0, u64::MAX).unwrap().into_iter().map(|(i, _)| i).collect()
}

/// The data end of the last segment: the offset of its first zero length.
fn data_end(path: &Path) -> usize {
    let buf = std::fs::read(path).unwrap();
    let mut at = 0;
    while let Parsed::Record { next, .. } = parse(&buf, at) {
        at = next;
    }
    at
}

/// Offsets of every record in a segment.
fn record_offsets(path: &Path) -> Vec<usize> {
    let buf = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while let Parsed::Record { next, .. } = parse(&buf, at) {
        out.push(at);
        at = next;
    }
    out
}

fn flip(path: &Path, offset: usize) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset as u64).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], offset as u64).unwrap();
}

#[test]
fn entries_vote_commit_truncation_and_purge_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open_with(dir.path(), 1024).unwrap();
        append(&wal, 1, 10);
        wait(|d| wal.save_vote(b"vote-1".to_vec(), d));
        append(&wal, 11, 200); // several segments
        wal.save_committed(b"c-150".to_vec());
        wait(|d| wal.truncate(190, d));
        append(&wal, 190, 195);
        wait(|d| wal.save_vote(b"vote-2".to_vec(), d));
        assert!(wal.segment_paths().len() > 2);
        wait(|d| wal.purge(120, b"p-120".to_vec(), d));
        assert_eq!(indexes(&wal), (121..=195).collect::<Vec<_>>());
    }
    let wal = Wal::open_with(dir.path(), 1024).unwrap();
    assert_eq!(indexes(&wal), (121..=195).collect::<Vec<_>>());
    assert_eq!(wal.vote().as_deref(), Some(&b"vote-2"[..]));
    assert_eq!(wal.committed().as_deref(), Some(&b"c-150"[..]));
    assert_eq!(wal.purged(), Some((120, b"p-120".to_vec())));
    assert_eq!(wal.bounds(), Some((121, 195)));
    assert_eq!(wal.read(150, 152).unwrap()[1], (151, b"entry-151".to_vec()));
    // Segments whose entries were all purged are gone from the directory.
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, wal.segment_paths().len());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| {
            let p = e.unwrap().path();
            seq_of(&p).unwrap() >= seq_of(&wal.segment_paths()[0]).unwrap()
        }),
        "older segments removed"
    );
}

#[test]
fn segments_are_preallocated_and_entries_read_back_while_queued() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open_with(dir.path(), 1 << 20).unwrap();
    let seg = wal.segment_paths()[0].clone();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 1 << 20);
    append(&wal, 1, 3);
    assert_eq!(wal.read(2, 3).unwrap(), vec![(2, b"entry-2".to_vec())]);
}

#[test]
fn a_torn_last_record_is_dropped_and_the_log_goes_on() {
    for damage in ["cut", "flip", "zero"] {
        let dir = tempfile::tempdir().unwrap();
        let seg = {
            let wal = Wal::open_with(dir.path(), 1 << 20).unwrap();
            append(&wal, 1, 20);
            wal.segment_paths()[0].clone()
        };
        let last = *record_offsets(&seg).last().unwrap();
        let end = data_end(&seg);
        match damage {
            // A write cut short: the file ends inside the last record.
            "cut" => std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(end as u64 - 3)
                .unwrap(),
            // Bytes of the last record changed.
            "flip" => flip(&seg, end - 2),
            // The last record's payload never reached the disk.
            _ => {
                let f = OpenOptions::new().write(true).open(&seg).unwrap();
                f.write_all_at(&vec![0u8; end - last - HEADER], (last + HEADER) as u64)
                    .unwrap();
            }
        }
        let wal = Wal::open_with(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&wal), (1..=19).collect::<Vec<_>>(), "{damage}");
        // The log goes on from there, and opens clean again.
        append(&wal, 20, 25);
        drop(wal);
        let wal = Wal::open_with(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&wal), (1..=25).collect::<Vec<_>>(), "{damage}");
    }
}

#[test]
fn corruption_in_the_middle_of_the_log_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let seg = {
        let wal = Wal::open_with(dir.path(), 1 << 20).unwrap();
        append(&wal, 1, 20);
        wal.segment_paths()[0].clone()
    };
    let fifth = record_offsets(&seg)[4];
    flip(&seg, fifth + HEADER + 3);
    let err = Wal::open_with(dir.path(), 1 << 20)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains(&seg.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {fifth}")), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn damage_in_an_earlier_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let wal = Wal::open_with(dir.path(), 1024).unwrap();
        append(&wal, 1, 200);
        assert!(wal.segment_paths().len() > 1);
        wal.segment_paths()[0].clone()
    };
    // Even the last record of a segment that is not the last one.
    let end = data_end(&first);
    flip(&first, end - 1);
    let err = Wal::open_with(dir.path(), 1024).err().expect("must refuse").to_string();
    assert!(err.contains(&first.display().to_string()), "{err}");
    assert!(err.contains("not in the last segment"), "{err}");
}
