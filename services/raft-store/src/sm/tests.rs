use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
use serde_json::json;

use super::*;

fn open() -> (
    tempfile::TempDir,
    StateMachine,
    mpsc::UnboundedReceiver<Arc<EventBatch>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let sm = StateMachine::open(dir.path(), tx).unwrap();
    (dir, sm, rx)
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-29T10:00:00.123456789Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn entry(index: u64, txs: Vec<TxRequest>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command { at: at(), txs }),
    }
}

fn create(id: &str, name: Option<&str>) -> Op {
    let mut r = Record::blob(id, json!({ "n": id }));
    if let Some(n) = name {
        r.kind = Kind::Service;
        r.name = Some(n.into());
    }
    Op::Create { record: r }
}

fn tx(id: &str, ops: Vec<Op>) -> TxRequest {
    TxRequest {
        request_id: id.into(),
        fencing_term: None,
        trace: None,
        ops,
    }
}

fn task(id: &str, service: &str, node: &str) -> Record {
    let mut r = Record::blob(id, json!({ "n": id }));
    r.kind = Kind::Task;
    r.fields = [("service", service), ("node", node), ("desired-state", "running")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

fn service(id: &str, name: &str) -> Record {
    let mut r = Record::blob(id, json!({ "n": id }));
    r.kind = Kind::Service;
    r.name = Some(name.into());
    r
}

/// The indexes held equal those built from the records in the tree.
fn assert_indexes_agree(sm: &StateMachine) {
    let records: Vec<Record> = sm
        .view()
        .scan_prefix("o/")
        .map(|(_, v)| codec::decode(v).unwrap())
        .collect();
    let mem = sm.mem.read().unwrap();
    assert_eq!(mem.indexes, Indexes::build(&records));
    assert_eq!(mem.indexes.len(), records.len());
}

fn ids_of(res: ListResult) -> Vec<String> {
    res.records.into_iter().map(|r| r.id).collect()
}

/// Applies creates of `services` services with `tasks` tasks each (on nodes n0, n1).
async fn populate(sm: &mut StateMachine, services: usize, tasks: usize) {
    let mut ops = Vec::new();
    for s in 0..services {
        ops.push(Op::Create {
            record: service(&format!("s{s}"), &format!("web{s}")),
        });
        for t in 0..tasks {
            ops.push(Op::Create {
                record: task(&format!("t{s}-{t}"), &format!("s{s}"), &format!("n{}", t % 2)),
            });
        }
    }
    sm.apply(vec![entry(1, vec![tx("populate", ops)])]).await.unwrap();
}

#[tokio::test]
async fn lists_by_name_and_field_follow_updates_and_deletes() {
    let (_d, mut sm, _e) = open();
    populate(&mut sm, 3, 2).await;
    let r = sm.reader();
    let by_service = |s: &str| ListFilter::default().field("service", s);
    assert_eq!(
        ids_of(r.list(&[Kind::Task], &by_service("s1")).unwrap()),
        ["t1-0", "t1-1"]
    );
    assert_eq!(
        ids_of(r.list(&[Kind::Task], &by_service("s1").field("node", "n1")).unwrap()),
        ["t1-1"]
    );
    assert_eq!(
        ids_of(
            r.list(&[Kind::Service], &ListFilter::default().name("web2").name("web0"))
                .unwrap()
        ),
        ["s0", "s2"]
    );
    assert_indexes_agree(&sm);

    // A task moves to another node and service, a service is renamed, one is deleted.
    let mut moved = task("t1-0", "s2", "n1");
    moved.version = 1;
    let mut renamed = service("s0", "front");
    renamed.version = 1;
    let res = sm
        .apply(vec![entry(
            2,
            vec![tx(
                "2",
                vec![
                    Op::Update { record: moved },
                    Op::Update { record: renamed },
                    Op::Delete {
                        kind: Kind::Task,
                        id: "t2-1".into(),
                        version: None,
                    },
                ],
            )],
        )])
        .await
        .unwrap();
    assert!(res[0].0[0].is_ok(), "{:?}", res[0].0[0]);
    assert_eq!(ids_of(r.list(&[Kind::Task], &by_service("s1")).unwrap()), ["t1-1"]);
    assert_eq!(
        ids_of(r.list(&[Kind::Task], &by_service("s2")).unwrap()),
        ["t1-0", "t2-0"]
    );
    assert_eq!(
        ids_of(
            r.list(&[Kind::Task], &ListFilter::default().field("node", "n1"))
                .unwrap()
        ),
        ["t0-1", "t1-0", "t1-1"]
    );
    let by_name = |n: &str| ids_of(r.list(&[Kind::Service], &ListFilter::default().name(n)).unwrap());
    assert!(by_name("web0").is_empty());
    assert_eq!(by_name("front"), ["s0"]);
    assert_indexes_agree(&sm);
}

#[tokio::test]
async fn lists_by_name_field_or_id_prefixes_read_only_what_they_return() {
    let (_d, mut sm, _e) = open();
    populate(&mut sm, 3, 2).await;
    // Records a whole-kind scan would trip over: lists that read them fail.
    for k in ["o/task/zzz", "o/service/zzz", "o/node/zzz"] {
        sm.mem_mut().kv.insert(k, b"not a record".to_vec());
    }
    let r = sm.reader();
    assert!(
        r.list(&[Kind::Task], &ListFilter::default()).is_err(),
        "a full scan reads it"
    );
    let tasks = r
        .list(&[Kind::Task], &ListFilter::default().field("service", "s0"))
        .unwrap();
    assert_eq!(ids_of(tasks), ["t0-0", "t0-1"]);
    let svc = r.list(&[Kind::Service], &ListFilter::default().name("web1")).unwrap();
    assert_eq!(ids_of(svc), ["s1"]);
    // Several id prefixes: each scanned alone, a prefix covered by another once.
    let f = ListFilter::default().id_prefix("t2").id_prefix("t0-1").id_prefix("t0");
    assert_eq!(
        ids_of(r.list(&[Kind::Task], &f).unwrap()),
        ["t0-0", "t0-1", "t2-0", "t2-1"]
    );
    let f = ListFilter::default().id_prefix("s1").id_prefix("n");
    assert_eq!(ids_of(r.list(&[Kind::Service, Kind::Node], &f).unwrap()), ["s1"]);
    assert_eq!(r.get(Kind::Service, "s2").unwrap().map(|r| r.id), Some("s2".into()));
}

#[tokio::test]
async fn indexes_come_back_on_reopen_and_with_an_installed_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let open_at = || {
        let (tx, rx) = mpsc::unbounded_channel();
        (StateMachine::open(dir.path(), tx).unwrap(), rx)
    };
    let snap = {
        let (mut sm, _e) = open_at();
        populate(&mut sm, 4, 3).await;
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
    };
    // Reopened: the state is the snapshot file's.
    let (sm, _e) = open_at();
    assert_indexes_agree(&sm);
    let f = ListFilter::default().field("service", "s3");
    assert_eq!(
        ids_of(sm.reader().list(&[Kind::Task], &f).unwrap()),
        ["t3-0", "t3-1", "t3-2"]
    );

    // A replica with other objects installs the snapshot: its indexes are the snapshot's.
    let (_d2, mut other, _e2) = open();
    other
        .apply(vec![entry(
            1,
            vec![tx(
                "x",
                vec![
                    Op::Create {
                        record: task("t9", "s3", "n0"),
                    },
                    Op::Create {
                        record: service("s9", "web3"),
                    },
                ],
            )],
        )])
        .await
        .unwrap();
    other.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    assert_indexes_agree(&other);
    assert_eq!(
        ids_of(other.reader().list(&[Kind::Task], &f).unwrap()),
        ["t3-0", "t3-1", "t3-2"]
    );
    let f = ListFilter::default().name("web3");
    assert_eq!(ids_of(other.reader().list(&[Kind::Service], &f).unwrap()), ["s3"]);
}

#[tokio::test]
async fn request_ids_and_history_stay_bounded_under_churn() {
    // Create and delete objects, one small transaction per request, as a
    // busy cluster does: what is held stays within the configured bytes.
    let (_d, sm, _e) = open();
    let dedup_bytes = 64 << 10;
    let history_bytes = 32 << 10;
    let mut sm = sm
        .with_windows(1_000_000, 1_000_000)
        .with_history_bytes(history_bytes)
        .with_dedup_bytes(dedup_bytes);
    let mut index = 0;
    for round in 0..20 {
        let mut entries = Vec::new();
        for i in 0..100 {
            index += 1;
            let txs = (0..4)
                .map(|j| tx(&format!("c{round}-{i}-{j}"), vec![create(&format!("o{i}-{j}"), None)]))
                .collect();
            entries.push(entry(index, txs));
        }
        for i in 0..100 {
            index += 1;
            let txs = (0..4)
                .map(|j| {
                    tx(
                        &format!("d{round}-{i}-{j}"),
                        vec![Op::Delete {
                            kind: Kind::Blob,
                            id: format!("o{i}-{j}"),
                            version: None,
                        }],
                    )
                })
                .collect();
            entries.push(entry(index, txs));
        }
        let res = sm.apply(entries).await.unwrap();
        assert!(res.iter().all(|r| r.0.iter().all(Result::is_ok)));
        let per_entry = 4 * dedup_size(
            "c00-00-0",
            &Remembered {
                index,
                term: 1,
                err: None,
            },
        );
        assert!(sm.dedup.bytes <= dedup_bytes + per_entry, "{} bytes", sm.dedup.bytes);
        assert!(sm.mem.read().unwrap().history_bytes <= history_bytes);
    }
    // 16,000 request ids went through; a few hundred are remembered, and
    // the keys in the tree are exactly those remembered.
    let held = sm.dedup.ids.len();
    assert!((100..=400).contains(&held), "{held} request ids held");
    let keys = sm.view().scan_prefix("d/").count();
    assert_eq!(keys, sm.dedup.at.len());
    assert_eq!(Dedup::load(&sm.view()).unwrap().ids.len(), held);
    // The most recent is still recalled, the oldest not.
    let res = sm
        .apply(vec![entry(
            index + 1,
            vec![
                tx("d19-99-3", vec![create("again", None)]),
                tx("c0-0-0", vec![create("o0-0", None)]),
            ],
        )])
        .await
        .unwrap();
    assert_eq!(res[0].0[0].as_ref().unwrap().index, index, "recalled");
    assert_eq!(res[0].0[1].as_ref().unwrap().index, index + 1, "applied anew");
    assert!(sm.view().scan_prefix("o/").count() <= 2);
}

#[tokio::test]
async fn applies_transactions_and_chains_the_change_feed() {
    let (_d, mut sm, mut events) = open();
    let res = sm
        .apply(vec![
            entry(1, vec![tx("r1", vec![create("a", None), create("b", None)])]),
            entry(2, vec![tx("r2", vec![create("a", None)])]),
            entry(
                3,
                vec![tx(
                    "r3",
                    vec![Op::Delete {
                        kind: Kind::Blob,
                        id: "b".into(),
                        version: Some(1),
                    }],
                )],
            ),
        ])
        .await
        .unwrap();
    let out = res[0].0[0].as_ref().unwrap();
    assert_eq!(out.index, 1);
    assert_eq!(out.records[0].version, 1);
    assert_eq!(out.records[0].created_at, at());
    let mut synced = out.records[0].clone();
    synced.sync_body();
    let body = synced.body.to_value();
    assert_eq!(body["Version"]["Index"], json!(1));
    assert_eq!(body["CreatedAt"], json!("2026-11-29T10:00:00.123456789Z"));
    assert_eq!(body["n"], json!("a"), "the object's own fields are untouched");
    assert_eq!(res[1].0[0].as_ref().unwrap_err().code, ErrorCode::AlreadyExists);
    assert!(res[2].0[0].is_ok());

    // Entry 2 changed nothing, so the feed goes 1 -> 3 with prev_index linking them.
    let b1 = events.recv().await.unwrap();
    let b3 = events.recv().await.unwrap();
    assert_eq!((b1.index, b1.prev_index, b1.changes.len()), (1, 0, 2));
    assert_eq!((b3.index, b3.prev_index), (3, 1));
    assert_eq!(b3.changes[0].action, Action::Delete);

    let r = sm.reader();
    let list = r.list(&[Kind::Blob], &ListFilter::default()).unwrap();
    assert_eq!(list.event_index, 3);
    assert_eq!(
        list.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    let hist = r.events(0, 10).unwrap();
    assert!(!hist.compacted);
    assert_eq!(hist.batches.iter().map(|b| b.index).collect::<Vec<_>>(), vec![1, 3]);
    assert!(r.events(3, 10).unwrap().batches.is_empty());
    assert_eq!(r.events(1, 10).unwrap().batches[0].index, 3);
}

#[tokio::test]
async fn a_retried_request_applies_once_with_the_same_result() {
    let (_d, mut sm, mut events) = open();
    let first = sm
        .apply(vec![entry(1, vec![tx("same", vec![create("x", None)])])])
        .await
        .unwrap();
    let again = sm
        .apply(vec![entry(2, vec![tx("same", vec![create("x", None)])])])
        .await
        .unwrap();
    assert_eq!(first[0].0[0], again[0].0[0], "the retry must get the original outcome");
    assert!(again[0].0[0].is_ok());
    assert_eq!(events.recv().await.unwrap().index, 1);
    assert!(events.try_recv().is_err(), "the retry must not change anything");
}

#[tokio::test]
async fn names_are_unique_per_kind_and_freed_on_delete() {
    let (_d, mut sm, _e) = open();
    let res = sm
        .apply(vec![
            entry(1, vec![tx("1", vec![create("s1", Some("web"))])]),
            entry(2, vec![tx("2", vec![create("s2", Some("web"))])]),
            entry(
                3,
                vec![tx(
                    "3",
                    vec![Op::Delete {
                        kind: Kind::Service,
                        id: "s1".into(),
                        version: None,
                    }],
                )],
            ),
            entry(4, vec![tx("4", vec![create("s2", Some("web"))])]),
        ])
        .await
        .unwrap();
    assert_eq!(res[1].0[0].as_ref().unwrap_err().code, ErrorCode::NameConflict);
    assert!(res[3].0[0].is_ok(), "{:?}", res[3]);
}

#[tokio::test]
async fn fencing_refuses_terms_older_than_the_entrys() {
    let (_d, mut sm, _e) = open();
    let mut e = entry(
        1,
        vec![
            tx("old", vec![create("a", None)]).fenced(1),
            tx("cur", vec![create("b", None)]).fenced(3),
        ],
    );
    e.log_id = LogId::new(CommittedLeaderId::new(3, 1), 1);
    let res = sm.apply(vec![e]).await.unwrap();
    assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::Fenced);
    assert!(res[0].0[1].is_ok());
}

#[tokio::test]
async fn pruned_history_reports_compaction_and_old_request_ids_are_forgotten() {
    let (_d, sm, _e) = open();
    let mut sm = sm.with_windows(5, 5);
    let entries: Vec<_> = (1..=20)
        .map(|i| entry(i, vec![tx(&format!("r{i}"), vec![create(&format!("o{i}"), None)])]))
        .collect();
    sm.apply(entries).await.unwrap();
    let r = sm.reader();
    assert!(r.events(2, 100).unwrap().compacted, "history before index 15 is gone");
    let recent = r.events(17, 100).unwrap();
    assert!(!recent.compacted);
    assert_eq!(
        recent.batches.iter().map(|b| b.index).collect::<Vec<_>>(),
        vec![18, 19, 20]
    );
    // r1 is forgotten, so replaying it is a new transaction (which now conflicts).
    let res = sm
        .apply(vec![entry(21, vec![tx("r1", vec![create("o1", None)])])])
        .await
        .unwrap();
    assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::AlreadyExists);
    // r20 is remembered.
    let res = sm
        .apply(vec![entry(22, vec![tx("r20", vec![create("o20", None)])])])
        .await
        .unwrap();
    assert_eq!(res[0].0[0].as_ref().unwrap().index, 20);
}

#[tokio::test]
async fn request_ids_survive_a_restart_and_the_history_restarts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let open_at = || {
        let (tx, rx) = mpsc::unbounded_channel();
        (StateMachine::open(dir.path(), tx).unwrap(), rx)
    };
    {
        let (mut sm, _e) = open_at();
        sm.apply(vec![
            entry(1, vec![tx("r1", vec![create("a", None)])]),
            entry(2, vec![tx("r2", vec![create("a", None)])]),
        ])
        .await
        .unwrap();
        assert!(!sm.reader().events(0, 10).unwrap().compacted);
        // The state machine is in memory: a restart finds it in the
        // snapshot file (and the log entries after it, replayed by openraft).
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    let (mut sm, _e) = open_at();
    let r = sm.reader();
    assert_eq!(r.event_index(), 1, "the feed position is kept");
    assert!(r.events(0, 10).unwrap().compacted, "the history is not: relist");
    assert!(!r.events(1, 10).unwrap().compacted, "a watcher at the head is fine");
    let res = sm
        .apply(vec![entry(
            3,
            vec![tx("r1", vec![create("a", None)]), tx("r2", vec![create("a", None)])],
        )])
        .await
        .unwrap();
    let again = res[0].0[0].as_ref().expect("r1 is recalled, not applied again");
    assert_eq!((again.index, again.records[0].id.as_str()), (1, "a"));
    assert_eq!(res[0].0[1].as_ref().unwrap_err().code, ErrorCode::AlreadyExists);
}

#[tokio::test]
async fn the_history_is_bounded_by_its_size_too() {
    let (_d, sm, _e) = open();
    let one = history_size(&EventBatch {
        index: 1,
        prev_index: 0,
        term: 1,
        at: at(),
        changes: vec![Change {
            action: Action::Create,
            record: Record::blob("o01", json!({ "n": "o01" })),
            trace: None,
        }],
    });
    // Room for three batches of one change each.
    let mut sm = sm.with_history_bytes(3 * one);
    let entries: Vec<_> = (1..=10)
        .map(|i| entry(i, vec![tx(&format!("r{i}"), vec![create(&format!("o{i:02}"), None)])]))
        .collect();
    sm.apply(entries).await.unwrap();
    let r = sm.reader();
    assert!(r.events(6, 100).unwrap().compacted, "batch 7 is gone");
    let kept = r.events(7, 100).unwrap();
    assert!(!kept.compacted);
    assert_eq!(kept.batches.iter().map(|b| b.index).collect::<Vec<_>>(), vec![8, 9, 10]);
    assert_eq!(sm.mem.read().unwrap().history_bytes, 3 * one);
}

#[tokio::test]
async fn a_request_repeated_within_one_entry_applies_once() {
    let (_d, mut sm, mut events) = open();
    let res = sm
        .apply(vec![entry(
            1,
            vec![tx("same", vec![create("x", None)]), tx("same", vec![create("x", None)])],
        )])
        .await
        .unwrap();
    assert_eq!(res[0].0[0], res[0].0[1]);
    assert!(res[0].0[1].is_ok());
    assert_eq!(events.recv().await.unwrap().changes.len(), 1);
}

#[tokio::test]
async fn replicas_decide_alike_however_their_entries_are_grouped() {
    // Request ids leave the window as a function of the index, not of how
    // many entries one `apply` call got: two replicas, one applying entry
    // by entry and one all at once, must reach the same results and state.
    let entries = || -> Vec<Entry> {
        (1..=12)
            .map(|i| {
                let id = format!("r{}", i % 4);
                entry(i, vec![tx(&id, vec![create(&format!("o{i}"), None)])])
            })
            .collect()
    };
    let (_d1, one, _e1) = open();
    let mut one = one.with_windows(3, 3);
    let (_d2, all, _e2) = open();
    let mut all = all.with_windows(3, 3);
    let mut by_one = Vec::new();
    for e in entries() {
        by_one.extend(one.apply(vec![e]).await.unwrap());
    }
    let by_all = all.apply(entries()).await.unwrap();
    assert_eq!(by_one, by_all);
    let keys = |sm: &StateMachine| -> Vec<(String, Vec<u8>)> {
        sm.dump()
            .unwrap()
            .entries
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect()
    };
    assert_eq!(keys(&one), keys(&all));
    // r0 was applied at 4, 8 and 12: each time more than the window later.
    let indexes: Vec<u64> = [3usize, 7, 11]
        .iter()
        .map(|&i| by_one[i].0[0].as_ref().unwrap().index)
        .collect();
    assert_eq!(indexes, vec![4, 8, 12]);
}

#[tokio::test]
async fn replicas_decide_alike_when_request_ids_are_bounded_by_size() {
    // Room for three entries' request ids: the fourth entry back is
    // forgotten, entry by entry, however the entries are grouped.
    let entries = || -> Vec<Entry> {
        (1..=12)
            .map(|i| {
                let id = format!("r{}", i % 4);
                entry(i, vec![tx(&id, vec![create(&format!("o{i}"), None)])])
            })
            .collect()
    };
    let room = 3 * dedup_size(
        "r0",
        &Remembered {
            index: 1,
            term: 1,
            err: None,
        },
    );
    let (_d1, one, _e1) = open();
    let mut one = one.with_dedup_bytes(room);
    let (_d2, all, _e2) = open();
    let mut all = all.with_dedup_bytes(room);
    let mut by_one = Vec::new();
    for e in entries() {
        by_one.extend(one.apply(vec![e]).await.unwrap());
    }
    let by_all = all.apply(entries()).await.unwrap();
    assert_eq!(by_one, by_all);
    assert_eq!(one.dump().unwrap().entries.len(), all.dump().unwrap().entries.len());
    for (a, b) in one
        .dump()
        .unwrap()
        .entries
        .iter()
        .zip(all.dump().unwrap().entries.iter())
    {
        assert_eq!(a, b);
    }
    let indexes: Vec<u64> = [3usize, 7, 11]
        .iter()
        .map(|&i| by_one[i].0[0].as_ref().unwrap().index)
        .collect();
    assert_eq!(indexes, vec![4, 8, 12], "each time applied anew");
    assert_eq!(one.dedup.ids.len(), 4);
}

#[tokio::test]
async fn keys_of_the_earlier_layout_are_dropped_from_a_snapshot() {
    let keep = codec::encode(&Record::blob("keep", json!({})));
    let entries = [
        ("e/00000000000000000001", b"x".to_vec()),
        ("o/blob/keep", keep.clone()),
        ("q/00000000000000000001/req", b"x".to_vec()),
        ("r/req", b"x".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), serde_bytes::ByteBuf::from(v)))
    .collect();
    let bytes = codec::encode(&SnapshotData { entries });
    let (_d, mut sm, _e) = open();
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 1)),
        last_membership: StoredMembership::default(),
        snapshot_id: "1-1-0".into(),
    };
    sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
    let keys: Vec<String> = sm.view().iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, vec![M_APPLIED, M_MEMBERSHIP, "o/blob/keep"]);
}

#[tokio::test]
async fn a_snapshot_installs_the_same_state_elsewhere() {
    let (_d, mut sm, _e) = open();
    sm.apply(vec![entry(
        1,
        vec![tx("1", vec![create("s1", Some("web")), create("b", None)])],
    )])
    .await
    .unwrap();
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let (_d2, mut other, _e2) = open();
    other.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
    let (applied, _) = other.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(1));
    let a = sm
        .reader()
        .list(&[Kind::Service, Kind::Blob], &ListFilter::default())
        .unwrap();
    let b = other
        .reader()
        .list(&[Kind::Service, Kind::Blob], &ListFilter::default())
        .unwrap();
    assert_eq!(a, b);
    // The name index came along: a second "web" is refused on the new replica too.
    let res = other
        .apply(vec![entry(2, vec![tx("2", vec![create("s2", Some("web"))])])])
        .await
        .unwrap();
    assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::NameConflict);
    assert!(other.get_current_snapshot().await.unwrap().is_some());
}

/// A service record referring to a secret through an indexed field.
fn user_of(id: &str, name: &str, secret: &str) -> Op {
    let mut r = service(id, name);
    r.fields.insert(format!("secret.{secret}"), "1".into());
    Op::Create { record: r }
}

fn delete(kind: Kind, id: &str) -> Op {
    Op::Delete {
        kind,
        id: id.into(),
        version: None,
    }
}

fn unused(secret: &str) -> Op {
    Op::NoneMatch {
        kind: Kind::Service,
        filter: ListFilter::default().field(format!("secret.{secret}"), "1"),
    }
}

#[tokio::test]
async fn guards_check_references_in_the_same_write_as_the_change() {
    let (_d, mut sm, _e) = open();
    let mut secret = Record::blob("sec1", json!({}));
    secret.kind = Kind::Secret;
    let exists = |id: &str| Op::Exists {
        kind: Kind::Secret,
        id: id.into(),
    };
    let res = sm
        .apply(vec![
            // The secret exists: a service referring to it goes in.
            entry(1, vec![tx("1", vec![Op::Create { record: secret.clone() }])]),
            entry(2, vec![tx("2", vec![exists("sec1"), user_of("s1", "web", "sec1")])]),
            // In use: its removal is refused, and nothing of that write happens.
            entry(3, vec![tx("3", vec![unused("sec1"), delete(Kind::Secret, "sec1")])]),
            // A service referring to a secret that is not there is refused.
            entry(4, vec![tx("4", vec![exists("nope"), user_of("s2", "api", "nope")])]),
            // Within one entry (one apply batch): the user goes, then the secret may.
            entry(
                5,
                vec![
                    tx("5a", vec![delete(Kind::Service, "s1")]),
                    tx("5b", vec![unused("sec1"), delete(Kind::Secret, "sec1")]),
                    // ... and a user created after it in the same batch is refused.
                    tx("5c", vec![exists("sec1"), user_of("s3", "late", "sec1")]),
                ],
            ),
            // A guard sees the transaction's own earlier ops.
            entry(6, vec![tx("6", vec![Op::Create { record: secret.clone() }])]),
            entry(7, vec![tx("7", vec![user_of("s4", "w4", "sec1"), unused("sec1")])]),
        ])
        .await
        .unwrap();
    assert!(res[1].0[0].is_ok(), "{:?}", res[1]);
    assert_eq!(res[2].0[0].as_ref().unwrap_err().code, ErrorCode::InUse);
    assert_eq!(res[3].0[0].as_ref().unwrap_err().code, ErrorCode::NotFound);
    assert!(res[4].0[0].is_ok() && res[4].0[1].is_ok(), "{:?}", res[4]);
    assert_eq!(res[4].0[2].as_ref().unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(res[6].0[0].as_ref().unwrap_err().code, ErrorCode::InUse);
    // The outcome lists the written records only.
    assert_eq!(res[1].0[0].as_ref().unwrap().records.len(), 1);
    let view = sm.view();
    let ids: Vec<&str> = view.scan_prefix("o/").map(|(k, _)| k).collect();
    assert_eq!(
        ids,
        ["o/secret/sec1"],
        "s1 and sec1's first life gone, nothing else written"
    );
    assert_indexes_agree(&sm);
    // Across applies the referrer is found through the indexes.
    sm.apply(vec![entry(8, vec![tx("8", vec![user_of("s5", "w5", "sec1")])])])
        .await
        .unwrap();
    let res = sm
        .apply(vec![entry(
            9,
            vec![tx("9", vec![unused("sec1"), delete(Kind::Secret, "sec1")])],
        )])
        .await
        .unwrap();
    assert_eq!(res[0].0[0].as_ref().unwrap_err().code, ErrorCode::InUse);
}
