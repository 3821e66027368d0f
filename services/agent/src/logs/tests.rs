use std::io::Write;

use super::*;

fn read(cursor: Option<LogCursor>, tail: Option<u64>, max_bytes: usize) -> LogsRead {
    LogsRead {
        task_id: "t1".into(),
        cursor,
        tail,
        since_nanos: None,
        stdout: true,
        stderr: true,
        wait_ms: 0,
        max_bytes,
    }
}

fn line(t: i64, text: &str) -> EngineLine {
    EngineLine {
        stream: LogStream::Stdout,
        time_nanos: t,
        line: format!("{text}\n").into_bytes(),
    }
}

/// What the engine returns for a cursor: the log's lines from the cursor's second on.
fn engine_view(log: &[EngineLine], cursor: Option<LogCursor>) -> Vec<EngineLine> {
    let since = match cursor {
        Some(LogCursor::Engine { since_nanos, .. }) => since_nanos,
        _ => 0,
    };
    let second = since.div_euclid(SECOND) * SECOND;
    log.iter().filter(|l| l.time_nanos >= second).cloned().collect()
}

fn texts(c: &LogsChunk) -> Vec<String> {
    c.entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).trim_end().to_string())
        .collect()
}

#[test]
fn engine_lines_parse_their_time_stamp() {
    let l = parse_engine_line(LogStream::Stderr, b"2024-01-02T03:04:05.123456789Z hello world\n").unwrap();
    assert_eq!(l.line, b"hello world\n");
    assert_eq!(l.time_nanos, 1_704_164_645_123_456_789);
    assert_eq!(l.stream, LogStream::Stderr);
    assert!(parse_engine_line(LogStream::Stdout, b"no-stamp here\n").is_none());
}

/// A log that grows between reads, with many lines in one second and time
/// stamps out of order (stdout and stderr interleaved), read in small chunks:
/// every line arrives exactly once, in the engine's order.
#[test]
fn engine_reads_deliver_every_line_once_while_the_log_grows() {
    let mut log = Vec::new();
    let mut got = Vec::new();
    let mut cursor = None;
    let mut n = 0;
    for round in 0..40i64 {
        // 7 lines per round, several per second, one stamped a little earlier
        // than the line before it.
        for i in 0..7i64 {
            let t = 5 * SECOND + round * SECOND / 3 + i * 1000 - if i == 3 { 5000 } else { 0 };
            log.push(line(t, &n.to_string()));
            n += 1;
        }
        // Two reads of at most ~3 lines each per round.
        for _ in 0..2 {
            let c = engine_chunk(engine_view(&log, cursor), &read(cursor, None, 6), WorkState::Running);
            got.extend(texts(&c));
            cursor = c.cursor;
        }
    }
    loop {
        let c = engine_chunk(engine_view(&log, cursor), &read(cursor, None, 6), WorkState::Ended);
        got.extend(texts(&c));
        cursor = c.cursor;
        if !c.more {
            break;
        }
    }
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    // The window moved along: the last read asked for about a second, not the whole log.
    let Some(LogCursor::Engine { since_nanos, .. }) = cursor else {
        panic!("an engine cursor")
    };
    assert!(since_nanos > 10 * SECOND, "{since_nanos}");
}

#[test]
fn engine_tail_and_since_choose_the_start_and_a_repeated_read_repeats_its_answer() {
    let log: Vec<EngineLine> = (0..10).map(|i| line(SECOND * (i + 1), &i.to_string())).collect();
    let c = engine_chunk(log.clone(), &read(None, Some(3), 1 << 20), WorkState::Running);
    assert_eq!(texts(&c), ["7", "8", "9"]);
    assert!(!c.more);
    // Asking again with the same cursor (a lost answer) gives the same lines.
    let again = engine_chunk(
        engine_view(&log, c.cursor),
        &read(c.cursor, None, 1 << 20),
        WorkState::Running,
    );
    assert!(again.entries.is_empty());
    let c2 = engine_chunk(engine_view(&log, None), &read(None, None, 1 << 20), WorkState::Running);
    assert_eq!(c2.entries.len(), 10);
    let mut since = read(None, None, 1 << 20);
    since.since_nanos = Some(SECOND * 8 + 1);
    assert_eq!(
        texts(&engine_chunk(log.clone(), &since, WorkState::Running)),
        ["8", "9"]
    );
    // Tail 0: nothing now, everything after.
    let c0 = engine_chunk(log.clone(), &read(None, Some(0), 1 << 20), WorkState::Running);
    assert!(c0.entries.is_empty());
    let mut grown = log.clone();
    grown.push(line(SECOND * 11, "10"));
    let next = engine_chunk(
        engine_view(&grown, c0.cursor),
        &read(c0.cursor, None, 1 << 20),
        WorkState::Running,
    );
    assert_eq!(texts(&next), ["10"]);
}

#[test]
fn file_reads_deliver_whole_lines_once_and_the_last_partial_line_once_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = std::fs::File::create(dir.path().join("stdout")).unwrap();
    let mut err = std::fs::File::create(dir.path().join("stderr")).unwrap();
    out.write_all(b"a\nb\npart").unwrap();
    err.write_all(b"oops\n").unwrap();
    let c = files_chunk(dir.path(), &read(None, None, 1 << 20), WorkState::Running);
    assert_eq!(texts(&c), ["a", "b", "oops"]);
    assert_eq!(c.entries[2].stream, LogStream::Stderr);
    assert!(!c.more);
    let again = files_chunk(dir.path(), &read(c.cursor, None, 1 << 20), WorkState::Running);
    assert!(again.entries.is_empty(), "the partial line waits for its end");
    out.write_all(b"ial\nc\n").unwrap();
    let c2 = files_chunk(dir.path(), &read(c.cursor, None, 3), WorkState::Running);
    assert_eq!(texts(&c2), ["partial"]);
    assert!(c2.more);
    out.write_all(b"tail without newline").unwrap();
    let c3 = files_chunk(dir.path(), &read(c2.cursor, None, 1 << 20), WorkState::Ended);
    assert_eq!(texts(&c3), ["c", "tail without newline"]);
    assert!(!c3.more);
    // Tail counts lines from the end of each stream.
    let t = files_chunk(dir.path(), &read(None, Some(2), 1 << 20), WorkState::Ended);
    assert_eq!(texts(&t), ["c", "tail without newline", "oops"]);
}

/// A stream file past the limit loses its head but keeps its offsets: a
/// reader behind resumes at the first whole line left, one that kept up
/// misses nothing, and the process keeps appending where it was.
#[test]
fn trimmed_files_stay_bounded_and_cursors_stay_valid() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdout");
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    std::fs::File::create(dir.path().join("stderr")).unwrap();
    let limit = 64 * 1024;
    let mut n = 0;
    let mut next = |w: &mut std::fs::File, count: usize| {
        for _ in 0..count {
            writeln!(w, "line {n:08}").unwrap();
            n += 1;
        }
    };
    next(&mut w, 10_000); // 140 KB
    let early = files_chunk(dir.path(), &read(None, None, 1024), WorkState::Running);
    assert_eq!(texts(&early)[0], "line 00000000");
    let caught_up = files_chunk(dir.path(), &read(None, Some(1), 1 << 20), WorkState::Running);
    trim(&path, limit).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.len(), 140_000, "offsets are kept");
    assert!(m.blocks() * 512 <= limit, "{} bytes on disk", m.blocks() * 512);
    // The writer appends after the hole.
    next(&mut w, 2);
    let behind = files_chunk(dir.path(), &read(early.cursor, None, 1 << 20), WorkState::Running);
    let lines = texts(&behind);
    let first: u64 = lines[0].strip_prefix("line ").unwrap().parse().unwrap();
    assert!(
        first > 5000,
        "resumes after the freed head, at a whole line: {:?}",
        &lines[0]
    );
    assert_eq!(lines.last().unwrap(), "line 00010001");
    let kept_up = files_chunk(dir.path(), &read(caught_up.cursor, None, 1 << 20), WorkState::Running);
    assert_eq!(texts(&kept_up), ["line 00010000", "line 00010001"]);
}
