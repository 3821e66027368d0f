//! One trace across processes: a span opened here continues in the
//! `shoal-raft-store` process that serves the request (W3C trace context in
//! NATS headers), as both processes' exported spans show.

use std::time::Duration;

use serde_json::json;
use shoal_shared::store::*;
use shoal_tests::{eventually, StoreCluster};
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_request_continues_the_callers_trace_in_the_replica() {
    let mut c = StoreCluster::start(1, &[]);
    let replica_spans = c.dir.path().join("replica-spans.jsonl");
    c.set_env(1, "SHOAL_TRACE_FILE", replica_spans.to_str().unwrap());
    c.restart(1);

    let our_spans = c.dir.path().join("test-spans.jsonl");
    std::env::set_var("SHOAL_TRACE_FILE", &our_spans);
    let telemetry = shoal_shared::telemetry::init("shoal-trace-test");

    let client = c.client().await;
    c.leader(&client, &[], Duration::from_secs(30)).await;
    let span = tracing::info_span!("test.create_blob");
    let trace_id = shoal_shared::envelope::trace_id(&span).expect("the test exports spans, so it has a trace id");
    client
        .tx(TxRequest::new(vec![Op::Create {
            record: Record::blob("traced", json!({})),
        }]))
        .instrument(span)
        .await
        .unwrap();
    drop(telemetry);

    let ours = std::fs::read_to_string(&our_spans).unwrap();
    assert!(ours.contains(&trace_id), "our own span was not exported: {ours}");
    let line = eventually(Duration::from_secs(10), "the replica's span in our trace", || {
        let path = replica_spans.clone();
        let trace_id = trace_id.clone();
        async move {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            text.lines()
                .find(|l| l.contains(&trace_id) && l.contains("\"store.request\""))
                .map(str::to_string)
                .ok_or_else(|| format!("{} lines, none with trace {trace_id}", text.lines().count()))
        }
    })
    .await;
    let span: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(span["service"], "shoal-raft-store");
    assert_eq!(span["name"], "store.request");
    assert_eq!(span["trace_id"], json!(trace_id));
}

/// Issue 13 §1: sampling follows the standard `OTEL_TRACES_SAMPLER`: the
/// same writes to the same replica export no span with `always_off`, and
/// their spans with `always_on`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_otel_traces_sampler() {
    let mut c = StoreCluster::start(1, &[]);
    let spans = c.dir.path().join("replica-spans.jsonl");
    c.set_env(1, "SHOAL_TRACE_FILE", spans.to_str().unwrap());
    let write = |name: &'static str| {
        TxRequest::new(vec![Op::Create {
            record: Record::blob(name, json!({})),
        }])
    };
    let count = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"store.commit\""))
            .count()
    };

    c.set_env(1, "OTEL_TRACES_SAMPLER", "always_off");
    c.restart(1);
    let client = c.client().await;
    c.leader(&client, &[], Duration::from_secs(30)).await;
    for i in 0..5 {
        client
            .tx(write(["off0", "off1", "off2", "off3", "off4"][i]))
            .await
            .unwrap();
    }
    // The replica stops after answering: every span it ended is in the file
    // (the file exporter writes each span as it ends).
    c.kill(1);
    assert_eq!(count(&spans), 0, "always_off exported the writes' spans");

    c.set_env(1, "OTEL_TRACES_SAMPLER", "always_on");
    c.restart(1);
    c.leader(&client, &[], Duration::from_secs(30)).await;
    for i in 0..5 {
        client.tx(write(["on0", "on1", "on2", "on3", "on4"][i])).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "the writes' commit spans with always_on",
        || {
            let n = count(&spans);
            async move {
                match n >= 5 {
                    true => Ok(()),
                    false => Err(format!("{n} store.commit spans")),
                }
            }
        },
    )
    .await;
}

/// Issue 13 §1: `docker service create` is one trace, from the API request
/// through the store (the leader's commit, every replica's apply), the
/// scheduler's pass and its write, the dispatcher's push to each node, the
/// agent's preparing and starting of each task's container (its ID on the
/// start span), to the dispatcher's write of the agents' status reports —
/// every span a child of a span of the same trace, across five processes
/// (read from `SHOAL_TRACE_FILE`; the processes also export over OTLP/gRPC
/// to a receiver this test runs). Then the receiver goes away and the
/// cluster keeps working (export never blocks the request path).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_from_service_create_to_its_running_tasks() {
    use shoal_tests::otlp::{spans_in_file, ReceivedSpan, Receiver};
    use shoal_tests::up::{temp_home, Up, CONVERGE};

    let mut receiver = Receiver::start().await;
    let home = temp_home();
    let data = home.path().join("data");
    let endpoint = receiver.endpoint();
    let spans_file = home.path().join("spans.jsonl");
    let mut up = Up::start_with_env(
        home.path(),
        "up",
        &data,
        shoal_tests::free_port(),
        "docker",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("SHOAL_TRACE_FILE", spans_file.to_str().unwrap()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    up.ready().await;
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "traced",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    // The tasks' containers (the docker executor reports each one's ID).
    let containers: Vec<String> = eventually(CONVERGE, "both tasks running", || {
        let ps = up.lines(&[
            "service",
            "ps",
            "traced",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.ID}} {{.CurrentState}}",
        ]);
        let up = &up;
        async move {
            let ps = ps?;
            let running: Vec<&str> = ps
                .iter()
                .filter(|l| l.contains(" Running"))
                .map(|l| l.split(' ').next().unwrap())
                .collect();
            if running.len() != 2 {
                return Err(format!("{ps:?}"));
            }
            let mut ids = Vec::new();
            for t in running {
                let id = up.lines(&["inspect", "--format", "{{.Status.ContainerStatus.ContainerID}}", t])?;
                ids.push(id.join(""));
            }
            Ok(ids)
        }
    })
    .await;

    // The API's span of the create is the root; everything it caused is in its trace.
    let by_name = |spans: &[ReceivedSpan], name: &str| -> Vec<ReceivedSpan> {
        spans.iter().filter(|s| s.name == name).cloned().collect()
    };
    let trace = eventually(Duration::from_secs(60), "the create's whole trace exported", || {
        let spans = spans_in_file(&spans_file);
        let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for s in &spans {
            *seen.entry(format!("{}:{}", s.service, s.name)).or_default() += 1;
        }
        let containers = containers.clone();
        async move {
            let root = spans
                .iter()
                .find(|s| {
                    s.name == "api.request"
                        && s.attributes.get("http.route").map(String::as_str) == Some("/services/create")
                })
                .ok_or("no api.request span of /services/create yet")?
                .clone();
            let trace: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.trace_id == root.trace_id).collect();
            let started: Vec<String> = by_name(&trace, "agent.start")
                .iter()
                .filter_map(|s| s.attributes.get("container_id").cloned())
                .collect();
            let statuses = by_name(&trace, "dispatcher.status");
            let mut missing: Vec<&str> = [
                "store.request",
                "store.commit",
                "store.apply",
                "scheduler.pass",
                "dispatcher.assign",
                "agent.prepare",
            ]
            .into_iter()
            .filter(|n| !trace.iter().any(|s| s.name == *n))
            .collect();
            if statuses.is_empty() {
                missing.push("dispatcher.status");
            }
            let all_started = containers.iter().all(|c| started.contains(c));
            if missing.is_empty() && all_started {
                Ok((root, trace))
            } else {
                Err(format!(
                    "missing {missing:?}; started containers {started:?} of {containers:?}; have {:?}; received in all {seen:?}",
                    trace
                        .iter()
                        .map(|s| format!("{}:{}", s.service, s.name))
                        .collect::<Vec<_>>()
                ))
            }
        }
    })
    .await;
    let (root, trace) = trace;

    assert_eq!(root.service, "shoal-api");
    assert!(
        root.parent_span_id.is_empty(),
        "the docker CLI sent no trace context: the API's span is the root"
    );
    let ids: std::collections::BTreeSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    for s in &trace {
        if s.span_id != root.span_id {
            assert!(
                ids.contains(s.parent_span_id.as_str()),
                "{}:{}'s parent {} is not a span of the trace",
                s.service,
                s.name,
                s.parent_span_id
            );
        }
    }
    let parent_of = |s: &ReceivedSpan| trace.iter().find(|p| p.span_id == s.parent_span_id).cloned();
    let services: std::collections::BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for want in [
        "shoal-api",
        "shoal-raft-store",
        "shoal-scheduler",
        "shoal-dispatcher",
        "shoal-agent",
    ] {
        assert!(services.contains(want), "no span of {want} in {services:?}");
    }
    // Who is whose child, across processes.
    for pass in by_name(&trace, "scheduler.pass") {
        let p = parent_of(&pass).unwrap();
        assert_eq!(
            (p.service.as_str(), p.name.as_str()),
            ("shoal-raft-store", "store.commit")
        );
    }
    // A push continues the write that changed the task: the scheduler's
    // (through its pass) for the first, later ones the status writes'.
    let assigns = by_name(&trace, "dispatcher.assign");
    let mut placed = std::collections::BTreeSet::new();
    for a in &assigns {
        let commit = parent_of(a).unwrap();
        assert_eq!(commit.name, "store.commit", "a push continues a write: {a:?}");
        let mut up_chain = parent_of(&commit).unwrap();
        while up_chain.service == "shoal-raft-store" {
            up_chain = parent_of(&up_chain).unwrap();
        }
        if up_chain.name == "scheduler.pass" {
            placed.insert(a.attributes["task"].clone());
        }
    }
    assert_eq!(
        placed.len(),
        2,
        "both tasks pushed in the scheduler's trace: {assigns:?}"
    );
    let starts = by_name(&trace, "agent.start");
    for start in &starts {
        let prepare = parent_of(start).unwrap();
        assert_eq!(prepare.name, "agent.prepare");
        let assign = parent_of(&prepare).unwrap();
        assert_eq!(assign.name, "dispatcher.assign");
        assert_eq!(assign.attributes.get("task"), start.attributes.get("task"));
        assert!(
            placed.contains(&start.attributes["task"]),
            "started in the trace it was placed in"
        );
    }
    // A write of reports is the child of its first report's trace and
    // links the others: the `running` reports lead back to the starts.
    let starts: std::collections::BTreeSet<&str> = starts.iter().map(|s| s.span_id.as_str()).collect();
    assert!(
        by_name(&trace, "dispatcher.status").iter().any(|s| {
            starts.contains(s.parent_span_id.as_str()) || s.links.iter().any(|(_, span)| starts.contains(span.as_str()))
        }),
        "the write of a `running` report continues (or links) the agent's start of the task"
    );
    assert!(
        by_name(&trace, "store.apply")
            .iter()
            .all(|s| parent_of(s).unwrap().name == "store.commit"),
        "every apply is a child of its commit"
    );

    // Every process also exports over OTLP/gRPC to the receiver.
    eventually(
        Duration::from_secs(30),
        "spans of every process at the OTLP receiver",
        || {
            let exported: std::collections::BTreeSet<String> =
                receiver.spans().into_iter().map(|s| s.service).collect();
            async move {
                let want = [
                    "shoal-api",
                    "shoal-raft-store",
                    "shoal-scheduler",
                    "shoal-dispatcher",
                    "shoal-agent",
                ];
                match want.iter().all(|w| exported.contains(*w)) {
                    true => Ok(()),
                    false => Err(format!("{exported:?}")),
                }
            }
        },
    )
    .await;

    // No collector: the cluster keeps answering and acting.
    receiver.stop().await;
    up.docker(&["service", "scale", "-d", "traced=3"]).ok();
    eventually(CONVERGE, "a third task running with the receiver gone", || {
        let ls = up.lines(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]);
        async move {
            match ls {
                Ok(l) if l == ["traced 3/3"] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    // `service scale` is one trace too: its request's trace reaches the
    // start of the new task's container (the file exporter still writes).
    let (scaled, scale_trace) = new_container_in_an_update_trace(&up, &spans_file, &containers).await;
    // And `service update`: the first rolled task starts in the update's trace.
    up.docker(&["service", "update", "-d", "--env-add", "V=2", "traced"])
        .ok();
    let mut before = containers.clone();
    before.push(scaled);
    let (_, update_trace) = new_container_in_an_update_trace(&up, &spans_file, &before).await;
    assert_ne!(update_trace, scale_trace, "the update is a trace of its own");
    up.docker(&["service", "rm", "traced"]).ok();
}

/// A container of service `traced` not in `known` whose `agent.start` span
/// is in the trace of a `POST /services/{id}/update` request: its ID and
/// that trace.
async fn new_container_in_an_update_trace(
    up: &shoal_tests::up::Up,
    spans_file: &std::path::Path,
    known: &[String],
) -> (String, String) {
    use shoal_tests::otlp::spans_in_file;
    eventually(
        Duration::from_secs(60),
        "a new container started in an update's trace",
        || {
            let all = up.lines(&[
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "label=com.docker.swarm.service.name=traced",
            ]);
            let spans = spans_in_file(spans_file);
            async move {
                let fresh: Vec<String> = all?.into_iter().filter(|c| !known.contains(c)).collect();
                let updates: std::collections::BTreeSet<&str> = spans
                    .iter()
                    .filter(|s| {
                        s.name == "api.request"
                            && s.attributes.get("http.route").map(String::as_str) == Some("/services/{id}/update")
                    })
                    .map(|s| s.trace_id.as_str())
                    .collect();
                spans
                    .iter()
                    .filter(|s| s.name == "agent.start")
                    .filter_map(|s| Some((s.attributes.get("container_id")?, s.trace_id.as_str())))
                    .find(|(c, trace)| fresh.contains(c) && updates.contains(trace))
                    .map(|(c, trace)| (c.clone(), trace.to_string()))
                    .ok_or_else(|| format!("new containers {fresh:?}; none started in an update's trace"))
            }
        },
    )
    .await
}
