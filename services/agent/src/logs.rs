//! Answers the API's log reads ([`LogsRead`] on this node's
//! [`subjects::agent_logs`]) from where each executor keeps a task's output:
//! the Docker Engine's container log, or the process executor's per-task
//! files under `<data-dir>/task-logs/<task-id>/{stdout,stderr}`.
//!
//! Every answer is computed from the cursor alone (no per-reader state
//! here), so a reader that asks again after a lost answer gets the same
//! lines: see [`shoal_shared::logs`]. The work's state is looked at before
//! the lines are read, so `Ended` means the answer holds everything.
//!
//! The process executor's files are bounded: once a stream holds more than
//! [`FILE_LIMIT`] bytes, the agent frees its head by punching a hole
//! (`fallocate(PUNCH_HOLE)`), which keeps offsets (and so cursors) valid
//! while the task keeps appending through its own file descriptor.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_shared::envelope::{self, Reply};
use shoal_shared::logs::{LogCursor, LogEntry, LogStream, LogsChunk, LogsRead, WorkState};
use shoal_shared::{subjects, ShoalError};

use crate::db::TaskDb;
use crate::docker::DockerExecutor;
use crate::exec::Handle;

/// Bytes a process task's stream file may hold before its head is freed
/// (half of it is kept).
pub const FILE_LIMIT: u64 = 4 << 20;
/// Longest a follow read is held open waiting for new lines.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often a held read looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// Where this node's task output is.
#[derive(Clone)]
pub enum LogSource {
    Engine(DockerExecutor),
    Files { dir: PathBuf, db: Arc<TaskDb> },
}

/// The directory of the process executor's task output files.
pub fn files_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("task-logs")
}

/// Subscribes and answers in the background for as long as the connection
/// lives; with files, also keeps them bounded.
pub async fn serve(nats: async_nats::Client, node_id: &str, source: LogSource) -> anyhow::Result<()> {
    let mut sub = nats.subscribe(subjects::agent_logs(node_id)).await?;
    if let LogSource::Files { dir, .. } = &source {
        let dir = dir.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let d = dir.clone();
                let _ = tokio::task::spawn_blocking(move || trim_all(&d, FILE_LIMIT)).await;
            }
        });
    }
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let (nats, source) = (nats.clone(), source.clone());
            tokio::spawn(async move {
                let reply: Reply<LogsChunk> = match envelope::decode::<LogsRead>(&msg.payload) {
                    Ok(req) => answer(&source, &req).await.into(),
                    Err(e) => Reply::Err(e),
                };
                envelope::respond(&nats, &msg, &reply).await;
            });
        }
    });
    Ok(())
}

/// One read, held up to `wait_ms` while there is nothing new.
pub async fn answer(source: &LogSource, req: &LogsRead) -> Result<LogsChunk, ShoalError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    loop {
        let chunk = read_once(source, req).await?;
        if !chunk.entries.is_empty() || chunk.state == WorkState::Ended || tokio::time::Instant::now() >= deadline {
            return Ok(chunk);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn read_once(source: &LogSource, req: &LogsRead) -> Result<LogsChunk, ShoalError> {
    match source {
        LogSource::Engine(d) => {
            let Some((container, state)) = d.task_container(&req.task_id).await.map_err(ShoalError::unavailable)?
            else {
                return Ok(LogsChunk {
                    entries: Vec::new(),
                    cursor: req.cursor,
                    more: false,
                    state: WorkState::NotStarted,
                });
            };
            let start = match req.cursor {
                Some(LogCursor::Engine { since_nanos, .. }) => since_nanos,
                _ => req.since_nanos.unwrap_or(0),
            };
            let lines = d
                .engine_logs(&container, start, req.stdout, req.stderr)
                .await
                .map_err(ShoalError::unavailable)?;
            Ok(engine_chunk(lines, req, state))
        }
        LogSource::Files { dir, db } => {
            let state = process_state(dir, db, &req.task_id);
            let (dir, req) = (dir.join(&req.task_id), req.clone());
            tokio::task::spawn_blocking(move || files_chunk(&dir, &req, state))
                .await
                .map_err(|e| ShoalError::unavailable(format!("reading task logs: {e}")))
        }
    }
}

// ------------------------------------------------------------ the engine's log

/// One line of a container's log as the engine returned it (with `timestamps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLine {
    pub stream: LogStream,
    pub time_nanos: i64,
    pub line: Vec<u8>,
}

/// Splits the engine's `<RFC3339Nano> <line>` into its time and line.
pub fn parse_engine_line(stream: LogStream, raw: &[u8]) -> Option<EngineLine> {
    let sp = raw.iter().position(|b| *b == b' ')?;
    let ts = std::str::from_utf8(&raw[..sp]).ok()?;
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(EngineLine {
        stream,
        time_nanos: t.timestamp_nanos_opt()?,
        line: raw[sp + 1..].to_vec(),
    })
}

const SECOND: i64 = 1_000_000_000;

/// The answer from what the engine returned for `since = ⌊start⌋ s`, where
/// `start` is the cursor's `since_nanos` (first read: the request's
/// `since_nanos`, or 0). See [`LogCursor::Engine`].
pub fn engine_chunk(lines: Vec<EngineLine>, req: &LogsRead, state: WorkState) -> LogsChunk {
    let (start, skip) = match req.cursor {
        Some(LogCursor::Engine { since_nanos, skip }) => (since_nanos, skip as usize),
        _ => (req.since_nanos.unwrap_or(0), 0),
    };
    let seq: Vec<EngineLine> = lines.into_iter().filter(|l| l.time_nanos >= start).collect();
    let first = match (req.cursor, req.tail) {
        (None, Some(n)) => seq.len().saturating_sub(n as usize),
        _ => skip.min(seq.len()),
    };
    let mut end = first;
    let mut bytes = 0;
    while end < seq.len() && (end == first || bytes + seq[end].line.len() <= req.max_bytes) {
        bytes += seq[end].line.len();
        end += 1;
    }
    // Move the window up to a second before the last line delivered, so the
    // next read asks the engine for little, and count what of the delivered
    // prefix lies inside the new window.
    let (since_nanos, skip) = if end > 0 {
        let last = seq[end - 1].time_nanos;
        let next = (last.div_euclid(SECOND) - 1) * SECOND;
        let next = next.max(start);
        (next, seq[..end].iter().filter(|l| l.time_nanos >= next).count() as u64)
    } else {
        (start, 0)
    };
    let more = end < seq.len();
    let entries = seq
        .into_iter()
        .skip(first)
        .take(end - first)
        .map(|l| LogEntry {
            stream: l.stream,
            time_nanos: Some(l.time_nanos),
            line: l.line,
        })
        .collect();
    LogsChunk {
        entries,
        cursor: Some(LogCursor::Engine { since_nanos, skip }),
        more,
        state,
    }
}

// ------------------------------------------------------- the process executor's files

/// Whether a process task's work runs, from the agent's task database.
fn process_state(dir: &Path, db: &TaskDb, task_id: &str) -> WorkState {
    match db.get(task_id) {
        Some(ctl) => match ctl.handle {
            Some(Handle::Process(p)) if crate::process::alive(&p) => WorkState::Running,
            Some(_) => WorkState::Ended,
            None if ctl.status.state.is_terminal() => WorkState::Ended,
            None => WorkState::NotStarted,
        },
        // Forgotten by the agent: whatever is left of it has ended.
        None if dir.join(task_id).exists() => WorkState::Ended,
        None => WorkState::NotStarted,
    }
}

/// The first byte of a file that holds data (after a freed head), 0 if unknown.
fn data_start(f: &File) -> u64 {
    nix::unistd::lseek(f.as_raw_fd(), 0, nix::unistd::Whence::SeekData)
        .map(|o| o as u64)
        .unwrap_or(0)
}

/// Frees the head of `path` when it holds more than `limit` bytes of data,
/// keeping about the last half of `limit`.
pub fn trim(path: &Path, limit: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    let size = f.metadata()?.len();
    let start = data_start(&f);
    if size.saturating_sub(start) <= limit {
        return Ok(());
    }
    let cut = (size - limit / 2) & !4095;
    use nix::fcntl::{fallocate, FallocateFlags};
    fallocate(
        f.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        cut as nix::libc::off_t,
    )
    .map_err(std::io::Error::from)
}

/// Trims every task's files under `dir`.
pub fn trim_all(dir: &Path, limit: u64) {
    let Ok(tasks) = std::fs::read_dir(dir) else { return };
    for t in tasks.flatten() {
        for stream in ["stdout", "stderr"] {
            let p = t.path().join(stream);
            if p.exists() {
                if let Err(e) = trim(&p, limit) {
                    tracing::debug!(path = %p.display(), error = %e, "agent: cannot trim a task's output");
                }
            }
        }
    }
}

/// Reads whole lines of one stream file from `from` (a partial last line
/// only when `ended`), at most about `budget` bytes. Returns the lines and
/// the offset after them.
fn read_lines(path: &Path, from: u64, budget: usize, ended: bool) -> (Vec<Vec<u8>>, u64) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), from);
    };
    let start = data_start(&f);
    let (mut pos, mut skip_partial) = (from, false);
    if pos < start {
        // The head was freed: resume at the first whole line that is left.
        pos = start;
        skip_partial = start > 0;
    }
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return (Vec::new(), from);
    }
    let cap = budget.max(1) + 64 * 1024;
    let mut buf = Vec::new();
    let _ = f.by_ref().take(cap as u64).read_to_end(&mut buf);
    // A line longer than what is read at once goes out in pieces.
    let full = buf.len() >= cap;
    let mut lines = Vec::new();
    let mut at = 0;
    if skip_partial {
        match buf.iter().position(|b| *b == b'\n') {
            Some(nl) => at = nl + 1,
            None => return (Vec::new(), pos),
        }
    }
    let mut used = 0;
    while at < buf.len() {
        let end = match buf[at..].iter().position(|b| *b == b'\n') {
            Some(nl) => at + nl + 1,
            None if ended || (full && lines.is_empty()) => buf.len(),
            None => break,
        };
        if !lines.is_empty() && used + (end - at) > budget {
            break;
        }
        used += end - at;
        lines.push(buf[at..end].to_vec());
        at = end;
    }
    (lines, pos + at as u64)
}

/// The offset where the last `n` lines of a stream file begin.
fn tail_offset(path: &Path, n: u64) -> u64 {
    let Ok(mut f) = File::open(path) else { return 0 };
    let start = data_start(&f);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return start;
    }
    let mut seen = 0;
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    for i in (0..body.len()).rev() {
        if body[i] == b'\n' {
            seen += 1;
            if seen == n {
                return start + i as u64 + 1;
            }
        }
    }
    if n == 0 {
        return start + buf.len() as u64;
    }
    start
}

/// The answer from a process task's files.
pub fn files_chunk(dir: &Path, req: &LogsRead, state: WorkState) -> LogsChunk {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let (mut o, mut e) = match req.cursor {
        Some(LogCursor::Files { stdout, stderr }) => (stdout, stderr),
        _ => {
            // First read: the lines are not time-stamped, so `since` can only
            // skip a file not written since then.
            let quiet = |p: &Path| {
                req.since_nanos.is_some_and(|since| {
                    std::fs::metadata(p)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .is_some_and(|t| (t.as_nanos() as i64) < since)
                })
            };
            let at = |p: &Path| match (quiet(p), req.tail) {
                (true, _) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                (false, Some(n)) => tail_offset(p, n),
                (false, None) => 0,
            };
            (at(&out), at(&err))
        }
    };
    let ended = state == WorkState::Ended;
    let mut entries = Vec::new();
    let mut budget = req.max_bytes;
    let mut more = false;
    for (stream, path, pos, wanted) in [
        (LogStream::Stdout, &out, &mut o, req.stdout),
        (LogStream::Stderr, &err, &mut e, req.stderr),
    ] {
        if !wanted {
            continue;
        }
        let (lines, next) = read_lines(path, *pos, budget, ended);
        let used: usize = lines.iter().map(Vec::len).sum();
        budget = budget.saturating_sub(used);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // More whole lines (or, once ended, bytes) than were read.
        more |= next < size && (ended || unread_line(path, next));
        *pos = next;
        entries.extend(lines.into_iter().map(|line| LogEntry {
            stream,
            time_nanos: None,
            line,
        }));
    }
    LogsChunk {
        entries,
        cursor: Some(LogCursor::Files { stdout: o, stderr: e }),
        more,
        state,
    }
}

/// Whether a whole line follows `from`.
fn unread_line(path: &Path, from: u64) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(from)).is_ok() && f.take(64 * 1024).read_to_end(&mut buf).is_ok() && buf.contains(&b'\n')
}

#[cfg(test)]
mod tests;
