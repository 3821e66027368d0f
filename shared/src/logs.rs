//! Task logs between the API and the agents (`docker service logs`,
//! `docker logs` of a task).
//!
//! A pull scheme, so that a followed log never loses or repeats a line even
//! though core NATS delivers at most once: the API asks the agent of the
//! task's node for the lines after a [`LogCursor`] ([`LogsRead`] on
//! [`crate::subjects::agent_logs`], request/reply) and only moves its cursor
//! when an answer ([`LogsChunk`]) arrives. A lost request or answer is asked
//! again with the same cursor, and the agent answers the same lines: the
//! cursor names a position in the task's log, never "what was sent".
//! While following, the agent holds a request up to `wait_ms` until new
//! lines arrive (a long poll), so a quiet task costs one request per wait.

use serde::{Deserialize, Serialize};

/// Asks one agent for the lines of one task's log after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRead {
    pub task_id: String,
    /// Where the last answer ended; `None` for the first read, where `tail`
    /// and `since` choose the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<LogCursor>,
    /// Only the last `tail` lines of what is there (first read only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only lines written at or after this time, nanoseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_nanos: Option<i64>,
    pub stdout: bool,
    pub stderr: bool,
    /// Wait up to this long for new lines when there are none (following).
    #[serde(default)]
    pub wait_ms: u64,
    /// Answer at most about this many bytes of lines (NATS' payload limit
    /// is 1 MiB by default, and lines travel base64-encoded).
    pub max_bytes: usize,
}

/// A position in a task's log. Its meaning depends on where the log lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogCursor {
    /// The Docker Engine's log of the container (json-file, local,
    /// journald): of the entries the engine returns for `since = ⌊since_nanos⌋ s`
    /// that carry a time stamp at or after `since_nanos`, in the engine's
    /// order, the first `skip` were delivered. The engine's log only grows
    /// at its end, so that sequence only grows at its end too, even where
    /// time stamps of stdout and stderr interleave out of order.
    Engine { since_nanos: i64, skip: u64 },
    /// The process executor's per-task output files: byte offsets into
    /// `stdout` and `stderr` (offsets stay valid when the agent frees the
    /// files' old heads).
    Files { stdout: u64, stderr: u64 },
}

/// Which stream a line came from (Docker's stdcopy stream numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The stream byte of Docker's multiplexed framing.
    pub fn stdcopy(self) -> u8 {
        match self {
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub stream: LogStream,
    /// When the line was written, nanoseconds since the epoch, when known
    /// (the engine stamps every line; the process executor's files do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_nanos: Option<i64>,
    /// The line's bytes, with its newline when it had one.
    #[serde(with = "b64")]
    pub line: Vec<u8>,
}

/// Whether the task's work can still write lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkState {
    /// Nothing ran yet (no container or process): lines may come later.
    NotStarted,
    Running,
    /// It ended, or is gone: once read to the end, no line will follow.
    Ended,
}

/// An agent's answer to [`LogsRead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsChunk {
    pub entries: Vec<LogEntry>,
    /// Where to read next (the request's cursor when nothing was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<LogCursor>,
    /// There are more lines right now than fitted in this answer.
    pub more: bool,
    /// The work's state, observed before the lines were read: `Ended` with
    /// `more == false` means this answer reached the log's end for good.
    pub state: WorkState,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_with_binary_lines() {
        let chunk = LogsChunk {
            entries: vec![LogEntry {
                stream: LogStream::Stderr,
                time_nanos: Some(1_700_000_000_123_456_789),
                line: vec![0xff, b'a', b'\n'],
            }],
            cursor: Some(LogCursor::Engine {
                since_nanos: 1_700_000_000_000_000_000,
                skip: 3,
            }),
            more: false,
            state: WorkState::Running,
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert_eq!(v["entries"][0]["line"], "/2EK");
        assert_eq!(v["cursor"]["engine"]["skip"], 3);
        let back: LogsChunk = serde_json::from_value(v).unwrap();
        assert_eq!(back, chunk);
        assert_eq!(LogStream::Stdout.stdcopy(), 1);
        assert_eq!(LogStream::Stderr.stdcopy(), 2);
    }
}
