//! The raft-store as real processes on a real nats-server: acknowledged writes
//! survive leader kills and whole-cluster kills, a stopped replica catches up
//! (through a snapshot), no quorum fails fast and heals, the store refuses
//! stale versions, duplicate names and stale fencing terms, and the watcher
//! sees every change once in order across a leader change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_shared::store::*;
use shoal_shared::ErrorCode;
use shoal_tests::{eventually, StoreCluster};

const LONG: Duration = Duration::from_secs(60);

fn blob(id: String) -> Op {
    Op::Create {
        record: Record::blob(id.clone(), json!({ "payload": id })),
    }
}

/// Writes `per_writer` blobs from each of `writers` concurrent clients; returns the
/// acknowledged (id, commit index) pairs. Each write is retried (same request id)
/// for up to 30 s, so unavailability during failover only delays it.
fn spawn_writers(
    client: &StoreClient,
    writers: usize,
    per_writer: usize,
    prefix: &str,
    acked: Arc<Mutex<Vec<(String, u64)>>>,
    count: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..writers)
        .map(|w| {
            let client = client.with_deadline(Duration::from_secs(30));
            let acked = acked.clone();
            let count = count.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut failures = 0;
                for i in 0..per_writer {
                    let tx = TxRequest::new(vec![blob(format!("{prefix}-{w}-{i}"))]);
                    match client.tx(tx).await {
                        Ok(out) => {
                            acked.lock().unwrap().push((format!("{prefix}-{w}-{i}"), out.index));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("write {prefix}-{w}-{i} not acknowledged: {e}");
                            failures += 1;
                        }
                    }
                }
                failures
            })
        })
        .collect()
}

/// Checks that every replica holds exactly the acknowledged blobs, each at its commit index.
async fn assert_every_replica_holds(c: &StoreCluster, client: &StoreClient, acked: &[(String, u64)]) {
    let want: BTreeMap<&str, u64> = acked.iter().map(|(id, idx)| (id.as_str(), *idx)).collect();
    assert_eq!(want.len(), acked.len(), "an id was acknowledged twice");
    for &id in &c.ids {
        let records = eventually(LONG, &format!("replica {id} to hold every acknowledged write"), || {
            let client = client.clone();
            let n = want.len();
            async move {
                let res = client
                    .local_list(id, &[Kind::Blob], ListFilter::default())
                    .await
                    .map_err(|e| e.to_string())?;
                if res.records.len() >= n {
                    Ok(res.records)
                } else {
                    Err(format!("{} of {n} records", res.records.len()))
                }
            }
        })
        .await;
        let mut seen = BTreeSet::new();
        for r in &records {
            assert!(seen.insert(r.id.clone()), "replica {id} holds {} twice", r.id);
            if let Some(idx) = want.get(r.id.as_str()) {
                assert_eq!(
                    r.version, *idx,
                    "replica {id}: {} at version {} but acknowledged at {idx}",
                    r.id, r.version
                );
            }
        }
        for wid in want.keys() {
            assert!(seen.contains(*wid), "replica {id} lost acknowledged write {wid}");
        }
    }
}

/// Collects a watcher's output until it has seen `expect` creates of blobs.
async fn collect_feed(mut w: Watcher, expect: usize) -> Vec<(String, u64)> {
    let mut creates = Vec::new();
    let mut last_index = 0;
    let mut resets = 0;
    while creates.len() < expect {
        match tokio::time::timeout(LONG, w.next()).await {
            Err(_) => panic!("watcher stalled after {} of {expect} creates", creates.len()),
            Ok(Err(e)) => panic!("watcher failed: {e}"),
            Ok(Ok(WatchEvent::Reset { index, records })) => {
                resets += 1;
                assert_eq!(
                    resets, 1,
                    "watcher had to relist at {index}: history must cover a leader change"
                );
                // Writes that committed before the first list arrive as its records.
                let mut early: Vec<_> = records.into_iter().map(|r| (r.id, r.version)).collect();
                early.sort_by_key(|(_, v)| *v);
                creates.extend(early);
                last_index = index;
            }
            Ok(Ok(WatchEvent::Batch(b))) => {
                assert!(b.index > last_index, "feed went from {last_index} back to {}", b.index);
                assert_eq!(
                    b.prev_index, last_index,
                    "feed skipped from {last_index} to {}",
                    b.prev_index
                );
                last_index = b.index;
                for ch in b.changes {
                    assert_eq!(ch.action, Action::Create);
                    creates.push((ch.record.id, b.index));
                }
            }
        }
    }
    creates
}

fn assert_feed_matches(feed: &[(String, u64)], acked: &[(String, u64)]) {
    let mut seen = BTreeSet::new();
    for (id, _) in feed {
        assert!(seen.insert(id), "feed carried {id} twice");
    }
    let feed_idx: BTreeMap<&str, u64> = feed.iter().map(|(id, i)| (id.as_str(), *i)).collect();
    for (id, idx) in acked {
        assert_eq!(
            feed_idx.get(id.as_str()),
            Some(idx),
            "feed index of {id} differs from its commit index"
        );
    }
    assert!(feed.windows(2).all(|w| w[0].1 <= w[1].1), "feed is not in commit order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_three_leader_kills() {
    let mut c = StoreCluster::start(3, &[]);
    let client = c.client().await;
    c.leader(&client, &[], LONG).await;
    let watcher = c
        .client()
        .await
        .with_deadline(Duration::from_secs(10))
        .watch(&[Kind::Blob]);
    let (writers, per_writer) = (20, 500);
    let total = writers * per_writer;
    let feed = tokio::spawn(collect_feed(watcher, total));

    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = spawn_writers(&client, writers, per_writer, "k", acked.clone(), count.clone());

    for round in 1..=3 {
        let at = round * total / 4;
        eventually(LONG, &format!("{at} acknowledged writes"), || {
            let n = count.load(Ordering::SeqCst);
            async move {
                if n >= at {
                    Ok(())
                } else {
                    Err(format!("{n} acknowledged"))
                }
            }
        })
        .await;
        let old = c.leader(&client, &[], LONG).await;
        let t0 = Instant::now();
        c.kill(old);
        let new = c.leader(&client, &[old], LONG).await;
        println!(
            "kill {round}: leader {old} SIGKILLed; replica {new} leads after {:?}",
            t0.elapsed()
        );
        c.restart(old);
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(failures, 0, "writes that were never acknowledged");
    assert_eq!(acked.len(), total);
    assert_every_replica_holds(&c, &client, &acked).await;
    let feed = feed.await.unwrap();
    assert_feed_matches(&feed, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_killing_every_replica() {
    let mut c = StoreCluster::start(3, &[]);
    let client = c.client().await;
    c.leader(&client, &[], LONG).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = spawn_writers(&client, 8, 250, "all", acked.clone(), count.clone());
    eventually(LONG, "500 acknowledged writes", || {
        let n = count.load(Ordering::SeqCst);
        async move {
            if n >= 500 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        }
    })
    .await;
    let before = count.load(Ordering::SeqCst);
    for id in c.ids.clone() {
        c.kill(id);
    }
    println!("all replicas SIGKILLed after {before} acknowledged writes");
    for id in c.ids.clone() {
        c.restart(id);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= before);
    assert_every_replica_holds(&c, &client, &acked).await;
    // And the leader's consistent view agrees.
    let listed = client.list_records(&[Kind::Blob], ListFilter::default()).await.unwrap();
    assert_eq!(listed.records.len(), acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_replica_catches_up_through_a_snapshot() {
    let c = StoreCluster::start(3, &["--snapshot-interval", "100", "--keep-logs", "10"]);
    let client = c.client().await;
    let leader = c.leader(&client, &[], LONG).await;
    let stopped = *c.ids.iter().find(|&&i| i != leader).unwrap();
    let before = client.status(stopped).await.unwrap();
    c.pause(stopped);
    // The other two keep accepting writes. (The first request may wait on the
    // frozen replica before the client learns who leads, hence the longer deadline.)
    let writer = client.with_deadline(Duration::from_secs(20));
    let mut acked = Vec::new();
    for i in 0..400 {
        let out = writer
            .tx(TxRequest::new(vec![blob(format!("s-{i}"))]))
            .await
            .unwrap_or_else(|e| panic!("write {i} with one replica stopped: {e}"));
        acked.push((format!("s-{i}"), out.index));
    }
    let leader_status = client.status(leader).await.unwrap();
    let purged = leader_status.purged_index.unwrap_or(0);
    assert!(
        purged > before.last_log_index.unwrap_or(0),
        "the leader should have compacted past the stopped replica's log ({} <= {:?})",
        purged,
        before.last_log_index
    );
    c.resume(stopped);
    assert_every_replica_holds(&c, &client, &acked).await;
    let after = client.status(stopped).await.unwrap();
    assert!(
        after.snapshot_index.unwrap_or(0) >= purged,
        "replica {stopped} must have installed a snapshot covering {purged}: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_writes_fail_fast_and_recover_by_themselves() {
    let mut c = StoreCluster::start(3, &[]);
    let client = c.client().await;
    let leader = c.leader(&client, &[], LONG).await;
    client.tx(TxRequest::new(vec![blob("before".into())])).await.unwrap();
    let follower = *c.ids.iter().find(|&&i| i != leader).unwrap();
    c.pause(leader);
    c.pause(follower);

    let t0 = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(15),
        client.tx(TxRequest::new(vec![blob("during".into())])),
    )
    .await
    .expect("a write without quorum must not hang");
    let err = res.expect_err("a write without quorum must fail");
    println!("write without quorum failed after {:?}: {err}", t0.elapsed());
    assert_eq!(err.code, ErrorCode::NoQuorum, "{err:?}");
    assert_eq!(
        err.message,
        "rpc error: code = Unknown desc = raft: no elected cluster leader"
    );
    let read = client.list_records(&[Kind::Blob], ListFilter::default()).await;
    assert_eq!(
        read.expect_err("a linearizable read without quorum must fail").code,
        ErrorCode::NoQuorum
    );

    // Restarted, the cluster heals without any manual step.
    c.restart(leader);
    c.restart(follower);
    eventually(LONG, "writes to resume", || {
        let client = client.clone();
        async move {
            client
                .tx(TxRequest::new(vec![blob(format!(
                    "after-{}",
                    shoal_shared::id::new_id()
                ))]))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let listed = client.list_records(&[Kind::Blob], ListFilter::default()).await.unwrap();
    assert!(
        listed.records.iter().any(|r| r.id == "before"),
        "acknowledged write lost"
    );
}

/// A cluster started from `--peers` is initialized by its lowest id alone:
/// when every replica initialized, each campaigned in term 1 at once, and a
/// replica that had voted for itself turned the winner's appends away; the
/// winner stepped down and writes stalled until the next election timeout.
/// Several fresh clusters, so the old race would have shown in one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_keeps_the_leader_it_first_elects() {
    for round in 0..3 {
        // Elections after 2-4 s, so a slow machine cannot fake a step-down
        // within the few seconds this takes.
        let c = StoreCluster::start(3, &["--tick-ms", "100", "--election-tick", "20"]);
        let client = c.client().await;
        let leader = c.leader(&client, &[], LONG).await;
        assert_eq!(leader, 1, "round {round}: only the initializing replica campaigns");
        // Its first campaign may find the others not up yet and be retried in
        // a later term; from the term it won on, nothing may change.
        let term = client.status(1).await.unwrap().term;
        let mut last = 0;
        for i in 0..50 {
            last = client
                .tx(TxRequest::new(vec![blob(format!("r{round}-{i}"))]))
                .await
                .unwrap()
                .index;
        }
        let statuses = eventually(LONG, "every replica applied the writes", || {
            let client = client.with_deadline(Duration::from_millis(500));
            async move {
                let mut all = Vec::new();
                for id in 1..=3 {
                    let s = client.status(id).await.map_err(|e| format!("{id}: {e}"))?;
                    if s.last_applied.unwrap_or(0) < last {
                        return Err(format!("{id} applied {:?} of {last}", s.last_applied));
                    }
                    all.push(s);
                }
                Ok(all)
            }
        })
        .await;
        for s in statuses {
            assert_eq!(
                (s.term, s.leader),
                (term, Some(1)),
                "round {round}: replica {} saw another election",
                s.replica
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_versions_duplicate_names_and_stale_terms_are_refused() {
    let c = StoreCluster::start(1, &[]);
    let client = c.client().await;
    c.leader(&client, &[], LONG).await;
    let svc = |id: &str, name: &str| {
        let mut r = Record::blob(id, json!({ "Spec": { "Name": name } }));
        r.kind = Kind::Service;
        r.name = Some(name.to_string());
        r
    };
    let out = client
        .tx(TxRequest::new(vec![Op::Create {
            record: svc("s1", "web"),
        }]))
        .await
        .unwrap();
    let v1 = out.records[0].version;
    assert!(v1 > 0);
    assert_eq!(
        out.records[0].body.to_value()["Spec"]["Name"],
        json!("web"),
        "the body comes back as written"
    );

    let dup = client
        .tx(TxRequest::new(vec![Op::Create {
            record: svc("s2", "web"),
        }]))
        .await;
    assert_eq!(dup.unwrap_err().code, ErrorCode::NameConflict);

    // A good update moves the version; replaying the old version is refused.
    let mut upd = out.records[0].clone();
    let mut body = upd.body.to_value();
    body["Spec"]["Image"] = json!("busybox");
    upd.body = Body::from_value(&body);
    let out2 = client
        .tx(TxRequest::new(vec![Op::Update { record: upd.clone() }]))
        .await
        .unwrap();
    assert!(out2.records[0].version > v1);
    let stale = client
        .tx(TxRequest::new(vec![Op::Update { record: upd }]))
        .await
        .unwrap_err();
    assert_eq!(stale.code, ErrorCode::StaleVersion);
    assert!(stale.message.contains("update out of sequence"), "{}", stale.message);

    // A failing op leaves the whole transaction unapplied.
    let tx = TxRequest::new(vec![
        Op::Create {
            record: svc("s3", "db"),
        },
        Op::Create {
            record: svc("s4", "web"),
        },
    ]);
    assert_eq!(client.tx(tx).await.unwrap_err().code, ErrorCode::NameConflict);
    assert!(
        client.get_record(Kind::Service, "s3").await.unwrap().is_none(),
        "partial transaction applied"
    );

    // Renaming frees the old name.
    let mut renamed = out2.records[0].clone();
    renamed.name = Some("web2".into());
    client
        .tx(TxRequest::new(vec![Op::Update { record: renamed }]))
        .await
        .unwrap();
    client
        .tx(TxRequest::new(vec![Op::Create {
            record: svc("s5", "web"),
        }]))
        .await
        .unwrap();

    // Fencing: a term older than the leader's is refused; the current one passes.
    let term = client.status(1).await.unwrap().term;
    assert!(term >= 1);
    let fenced = client
        .tx(TxRequest::new(vec![blob("f1".into())]).fenced(term - 1))
        .await
        .unwrap_err();
    assert_eq!(fenced.code, ErrorCode::Fenced, "{fenced:?}");
    client
        .tx(TxRequest::new(vec![blob("f2".into())]).fenced(term))
        .await
        .unwrap();

    // Deleting at a stale version is refused; at the current one it works.
    let cur = client.get_record(Kind::Service, "s5").await.unwrap().unwrap();
    let del = client
        .delete(Kind::Service, "s5", Some(cur.version - 1))
        .await
        .unwrap_err();
    assert_eq!(del.code, ErrorCode::StaleVersion);
    client.delete(Kind::Service, "s5", Some(cur.version)).await.unwrap();
    assert_eq!(
        client.delete(Kind::Service, "s5", None).await.unwrap_err().code,
        ErrorCode::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_sees_every_change_once_in_order_across_a_leader_change() {
    let mut c = StoreCluster::start(3, &[]);
    let client = c.client().await;
    c.leader(&client, &[], LONG).await;
    let watcher = c
        .client()
        .await
        .with_deadline(Duration::from_secs(10))
        .watch(&[Kind::Blob]);
    let total = 300;
    let feed = tokio::spawn(collect_feed(watcher, total));
    let writer = client.with_deadline(Duration::from_secs(30));
    let mut acked = Vec::new();
    for i in 0..total {
        if i == total / 2 {
            let old = c.leader(&client, &[], LONG).await;
            c.kill(old);
            c.leader(&client, &[old], LONG).await;
            c.restart(old);
        }
        let out = writer.tx(TxRequest::new(vec![blob(format!("w-{i}"))])).await.unwrap();
        acked.push((format!("w-{i}"), out.index));
    }
    let feed = feed.await.unwrap();
    assert_feed_matches(&feed, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_joins_as_learner_then_voter_and_can_be_removed() {
    let mut c = StoreCluster::start(1, &[]);
    let client = c.client().await;
    c.leader(&client, &[], LONG).await;
    for i in 0..50 {
        client.tx(TxRequest::new(vec![blob(format!("m-{i}"))])).await.unwrap();
    }
    c.start_joiner(2);
    let s = client.status(2).await.unwrap();
    assert!(s.voters.is_empty(), "a fresh replica is no member yet: {s:?}");

    // As a learner it receives the log but does not vote.
    client.add_replica(2, false).await.unwrap();
    let s = client.status(1).await.unwrap();
    assert_eq!((s.voters.clone(), s.learners.clone()), (vec![1], vec![2]), "{s:?}");
    eventually(LONG, "the learner to hold the data", || {
        let client = client.clone();
        async move {
            let n = client
                .local_list(2, &[Kind::Blob], ListFilter::default())
                .await
                .map_err(|e| e.to_string())?
                .records
                .len();
            if n == 50 {
                Ok(())
            } else {
                Err(format!("{n} records"))
            }
        }
    })
    .await;

    // Promoted, it counts for quorum: with it stopped, the old single voter can no longer commit.
    client.add_replica(2, true).await.unwrap();
    let s = client.status(1).await.unwrap();
    assert_eq!((s.voters.clone(), s.learners.clone()), (vec![1, 2], vec![]), "{s:?}");
    c.pause(2);
    let err = client
        .tx(TxRequest::new(vec![blob("needs-2".into())]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NoQuorum, "{err:?}");
    c.resume(2);
    client
        .with_deadline(Duration::from_secs(30))
        .tx(TxRequest::new(vec![blob("with-2".into())]))
        .await
        .unwrap();

    // Removed, the cluster is a single voter again and commits without it.
    client.remove_replica(2).await.unwrap();
    let s = client.status(1).await.unwrap();
    assert_eq!((s.voters.clone(), s.learners.clone()), (vec![1], vec![]), "{s:?}");
    c.kill(2);
    client.tx(TxRequest::new(vec![blob("without-2".into())])).await.unwrap();
}
