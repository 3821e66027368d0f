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
                .find(|l| l.contains(&trace_id))
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
