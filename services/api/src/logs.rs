//! `GET /services/{id}/logs` and `GET /tasks/{id}/logs`
//! (`docker service logs`): the lines are pulled from the agents of the
//! nodes that run or ran the tasks ([`shoal_shared::logs`]) and streamed in
//! Docker's multiplexed framing (`stdcopy`: one 8-byte header per line,
//! stream 1 stdout, 2 stderr), each line as dockerd writes it:
//! `[<RFC3339Nano fixed> ][<details> ]<line>`, where the details carry the
//! task's context (`com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,
//! com.docker.swarm.task.id=…`) that the CLI turns into
//! `name.slot.taskid@node | `.
//!
//! Each task has one reader that owns its cursor and moves it only when an
//! answer arrives, so a lost request or answer is asked again and no line is
//! lost or repeated. Following, the service's tasks are listed again every
//! [`RELIST`], and every new task (a restart, a scale-up) gets its reader;
//! the stream lasts until the client goes away.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;
use shoal_shared::logs::{LogCursor, LogEntry, LogsChunk, LogsRead, WorkState};
use shoal_shared::model::{Service, Task};
use shoal_shared::store::{ListFilter, StoreClient};
use shoal_shared::{envelope, subjects};

use crate::error::{ApiError, ApiResult};
use crate::objects::find;
use crate::request::{flag, IdPath, Query};
use crate::state::AppState;

/// How often a followed service's tasks are listed again.
pub const RELIST: Duration = Duration::from_secs(1);
/// How long an agent may hold a follow read waiting for new lines.
const WAIT: Duration = Duration::from_secs(2);
/// Deadline of one read (the wait, plus the engine's time to answer).
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of lines asked for per read (base64 in JSON stays well below NATS' 1 MiB).
const MAX_BYTES: usize = 256 * 1024;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub timestamps: bool,
    pub details: bool,
    pub tail: Option<u64>,
    pub since_nanos: Option<i64>,
}

impl LogOptions {
    /// Docker's parameters, checked in Docker's words.
    pub fn parse(q: &HashMap<String, String>) -> ApiResult<LogOptions> {
        let o = LogOptions {
            follow: flag(q, "follow"),
            stdout: flag(q, "stdout"),
            stderr: flag(q, "stderr"),
            timestamps: flag(q, "timestamps"),
            details: flag(q, "details"),
            // "all", a negative or an unreadable number: everything.
            tail: q
                .get("tail")
                .and_then(|t| t.trim().parse::<i64>().ok())
                .and_then(|n| u64::try_from(n).ok()),
            since_nanos: match q.get("since").map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(parse_since(s)?),
            },
        };
        if !o.stdout && !o.stderr {
            return Err(ApiError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        Ok(o)
    }
}

/// `since` as the CLI sends it (`<seconds>[.<nanoseconds>]`, what Docker's
/// `timetypes.GetTimestamp` makes of a date or a duration), or RFC 3339.
pub fn parse_since(s: &str) -> ApiResult<i64> {
    let bad = || ApiError::bad_request(format!("invalid value for since: {}", crate::error::clip(s)));
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt().ok_or_else(bad);
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(bad)
}

/// A time as Docker's `jsonmessage.RFC3339NanoFixed` prints it (always nine digits).
pub fn rfc3339_nano_fixed(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// The details dockerd gives a swarm task's line: its context, sorted by key.
pub fn context_details(task: &Task) -> String {
    format!(
        "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={}",
        task.node_id, task.service_id, task.meta.id
    )
}

/// One line in Docker's multiplexed framing.
pub fn frame(entry: &LogEntry, details: &str, o: &LogOptions) -> Bytes {
    let mut payload = Vec::with_capacity(entry.line.len() + details.len() + 40);
    if o.timestamps {
        let at = entry
            .time_nanos
            .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
        payload.extend_from_slice(rfc3339_nano_fixed(at).as_bytes());
        payload.push(b' ');
    }
    if o.details {
        payload.extend_from_slice(details.as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(&entry.line);
    if !payload.ends_with(b"\n") {
        payload.push(b'\n');
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(entry.stream.stdcopy());
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// The response: the frames as the readers send them.
fn stream_response(req: &HttpRequest, rx: mpsc::Receiver<Bytes>) -> HttpResponse {
    use futures::StreamExt;
    // Before API 1.42 Docker named the same framing raw-stream.
    let old = req
        .match_info()
        .get("api_version")
        .is_some_and(|v| crate::compare_versions(v, "1.42") == std::cmp::Ordering::Less);
    let content_type = if old {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .streaming(rx.map(Ok::<_, actix_web::Error>))
}

/// `GET /services/{id}/logs`.
pub async fn service_logs(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let o = LogOptions::parse(&q)?;
    state.manager().await?;
    let svc: Service = find(&state, &path.id, "service").await?;
    let (tx, rx) = mpsc::channel(64);
    let store = state.store()?;
    let nats = store.nats().clone();
    actix_web::rt::spawn(follow_service(store, nats, svc.meta.id, o, tx));
    Ok(stream_response(&req, rx))
}

/// `GET /tasks/{id}/logs`.
pub async fn task_logs(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let o = LogOptions::parse(&q)?;
    state.manager().await?;
    let task: Task = find(&state, &path.id, "task").await?;
    let (tx, rx) = mpsc::channel(64);
    let store = state.store()?;
    let nats = store.nats().clone();
    actix_web::rt::spawn(async move {
        if !task.node_id.is_empty() {
            read_task(store, nats, task, o, tx).await;
        }
    });
    Ok(stream_response(&req, rx))
}

/// Starts a reader for every task of the service that has a node; while
/// following, again for every new one, until the client goes away.
async fn follow_service(
    store: StoreClient,
    nats: async_nats::Client,
    service_id: String,
    o: LogOptions,
    tx: mpsc::Sender<Bytes>,
) {
    let mut started: HashSet<String> = HashSet::new();
    let mut readers = tokio::task::JoinSet::new();
    loop {
        match store
            .list::<Task>(ListFilter::default().field("service", service_id.clone()))
            .await
        {
            Ok(mut tasks) => {
                tasks.sort_by_key(|t| (t.slot, t.meta.created_at));
                for t in tasks {
                    if !t.node_id.is_empty() && started.insert(t.meta.id.clone()) {
                        readers.spawn(read_task(store.clone(), nats.clone(), t, o.clone(), tx.clone()));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "service logs: listing tasks failed"),
        }
        if !o.follow {
            break;
        }
        tokio::time::sleep(RELIST).await;
        if tx.is_closed() {
            break;
        }
    }
    drop(tx);
    while readers.join_next().await.is_some() {}
}

/// Whether a task will not start any more (gone, or ended in the store).
async fn task_done(store: &StoreClient, id: &str) -> bool {
    match store.get::<Task>(id).await {
        Ok(None) => true,
        Ok(Some(t)) => t.status.state.is_terminal() || t.desired_state.is_terminal(),
        Err(_) => false,
    }
}

/// Pulls one task's lines from its node's agent and sends them on.
async fn read_task(
    store: StoreClient,
    nats: async_nats::Client,
    task: Task,
    o: LogOptions,
    mut tx: mpsc::Sender<Bytes>,
) {
    let subject = subjects::agent_logs(&task.node_id);
    let details = context_details(&task);
    let mut cursor: Option<LogCursor> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        let req = LogsRead {
            task_id: task.meta.id.clone(),
            cursor,
            tail: o.tail,
            since_nanos: o.since_nanos,
            stdout: o.stdout,
            stderr: o.stderr,
            wait_ms: if o.follow { WAIT.as_millis() as u64 } else { 0 },
            max_bytes: MAX_BYTES,
        };
        match envelope::request::<_, LogsChunk>(&nats, subject.clone(), &req, READ_TIMEOUT).await {
            Ok(chunk) => {
                for e in &chunk.entries {
                    if tx.send(frame(e, &details, &o)).await.is_err() {
                        return;
                    }
                }
                cursor = chunk.cursor.or(cursor);
                if chunk.more {
                    continue;
                }
                match chunk.state {
                    WorkState::Ended => return,
                    _ if !o.follow => return,
                    WorkState::NotStarted if task_done(&store, &task.meta.id).await => return,
                    WorkState::NotStarted => tokio::time::sleep(Duration::from_millis(500)).await,
                    WorkState::Running => {}
                }
            }
            Err(e) => {
                tracing::debug!(task = %task.meta.id, error = %e, "service logs: read failed");
                if !o.follow || task_done(&store, &task.meta.id).await {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::logs::LogStream;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_parse_as_docker_reads_them() {
        let o = LogOptions::parse(&q(&[
            ("stdout", "1"),
            ("follow", "true"),
            ("tail", "5"),
            ("since", "1700000000.5"),
        ]))
        .unwrap();
        assert!(o.follow && o.stdout && !o.stderr);
        assert_eq!(o.tail, Some(5));
        assert_eq!(o.since_nanos, Some(1_700_000_000_500_000_000));
        let all = LogOptions::parse(&q(&[("stderr", "1"), ("tail", "all")])).unwrap();
        assert_eq!(all.tail, None);
        assert_eq!(
            LogOptions::parse(&q(&[("stderr", "1"), ("tail", "-3")])).unwrap().tail,
            None
        );
        let e = LogOptions::parse(&q(&[])).unwrap_err();
        assert_eq!(e.message, "Bad parameters: you must choose at least one stream");
        assert!(LogOptions::parse(&q(&[("stdout", "1"), ("since", "yesterday")])).is_err());
        assert_eq!(parse_since("2024-01-02T03:04:05Z").unwrap(), 1_704_164_645_000_000_000);
        assert_eq!(parse_since("12.000000001").unwrap(), 12_000_000_001);
    }

    #[test]
    fn frames_carry_stream_length_time_details_and_a_newline() {
        let mut t = Task::new("task1", "svc1", Default::default());
        t.node_id = "node1".into();
        let e = LogEntry {
            stream: LogStream::Stderr,
            time_nanos: Some(1_704_164_645_000_000_100),
            line: b"hello".to_vec(),
        };
        let o = LogOptions {
            follow: false,
            stdout: true,
            stderr: true,
            timestamps: true,
            details: true,
            tail: None,
            since_nanos: None,
        };
        let f = frame(&e, &context_details(&t), &o);
        let body = "2024-01-02T03:04:05.000000100Z com.docker.swarm.node.id=node1,\
                    com.docker.swarm.service.id=svc1,com.docker.swarm.task.id=task1 hello\n";
        assert_eq!(&f[..4], &[2, 0, 0, 0]);
        assert_eq!(u32::from_be_bytes(f[4..8].try_into().unwrap()) as usize, body.len());
        assert_eq!(&f[8..], body.as_bytes());
        let plain = LogOptions {
            timestamps: false,
            details: false,
            ..o
        };
        let e = LogEntry {
            stream: LogStream::Stdout,
            line: b"x\n".to_vec(),
            ..e
        };
        assert_eq!(&frame(&e, "", &plain)[..], &[1, 0, 0, 0, 0, 0, 0, 2, b'x', b'\n']);
    }
}
