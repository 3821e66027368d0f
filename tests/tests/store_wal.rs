//! The raft-store's write-ahead log as real processes see it: a replica
//! killed (SIGKILL) whose last segment then ends in a damaged record drops
//! that tail, starts and catches up from its peers; damage in the middle of
//! the log stops the replica from starting, with a message naming the file
//! and offset.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use shoal_shared::store::*;
use shoal_tests::{eventually, StoreCluster};

const LONG: Duration = Duration::from_secs(60);

fn blob(id: String) -> Op {
    Op::Create {
        record: Record::blob(id.clone(), json!({ "payload": id })),
    }
}

/// The WAL's segments of a replica, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// (offset, kind) of each record of a segment, read by the documented
/// framing: `len: u32 LE | crc32: u32 LE | kind: u8 | payload`, a zero length ending the data.
fn records(seg: &Path) -> Vec<(usize, u8)> {
    let buf = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 < buf.len() {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((at, buf[at + 8]));
        at += 8 + len;
    }
    out
}

const ENTRY: u8 = 1;

async fn write_blobs(client: &StoreClient, prefix: &str, n: usize) -> Vec<(String, u64)> {
    let mut acked = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let out = client
            .tx(TxRequest::new(vec![blob(id.clone())]))
            .await
            .unwrap_or_else(|e| panic!("write {id}: {e}"));
        acked.push((id, out.index));
    }
    acked
}

async fn wait_for_blobs(client: &StoreClient, replica: u64, acked: &[(String, u64)]) {
    eventually(
        LONG,
        &format!("replica {replica} to hold every acknowledged write"),
        || {
            let client = client.clone();
            async move {
                let res = client
                    .local_list(replica, &[Kind::Blob], ListFilter::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let missing: Vec<&str> = acked
                    .iter()
                    .filter(|(id, idx)| !res.records.iter().any(|r| &r.id == id && r.version == *idx))
                    .map(|(id, _)| id.as_str())
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} missing, first {}", missing.len(), missing[0]))
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_torn_tail_is_dropped_and_the_replica_catches_up_from_its_peers() {
    let mut c = StoreCluster::start(3, &[]);
    let client = c.client().await;
    let leader = c.leader(&client, &[], LONG).await;
    let victim = *c.ids.iter().find(|&&i| i != leader).unwrap();
    let mut acked = write_blobs(&client, "before", 50).await;
    wait_for_blobs(&client, victim, &acked).await;
    c.kill(victim);

    // Cut the last entry record in half: its second half (and everything
    // after it) never reached the disk, as after a crash in mid-write.
    let seg = segments(&c.data_dir(victim)).pop().expect("a segment");
    let recs = records(&seg);
    let (last_entry, _) = *recs.iter().rev().find(|(_, k)| *k == ENTRY).expect("an entry record");
    let end = {
        let buf = std::fs::read(&seg).unwrap();
        let len = u32::from_le_bytes(buf[last_entry..last_entry + 4].try_into().unwrap()) as usize;
        let data_end = recs
            .last()
            .map(|&(o, _)| o + 8 + u32::from_le_bytes(buf[o..o + 4].try_into().unwrap()) as usize);
        assert!(data_end.unwrap() >= last_entry + 8 + len);
        data_end.unwrap()
    };
    let cut = last_entry + 8 + 4;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&vec![0u8; end - cut], cut as u64).unwrap();
        f.sync_all().unwrap();
    }

    c.restart(victim);
    // Writes go on while it recovers, and it ends up holding all of them.
    acked.extend(write_blobs(&client, "after", 20).await);
    wait_for_blobs(&client, victim, &acked).await;
    let log = c.log_text(victim);
    assert!(
        log.contains("dropping a torn record at the end of the log"),
        "the replica must have dropped the damaged tail:\n{log}"
    );
    assert!(!c.exited(victim), "the replica must be running:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corruption_in_the_middle_of_the_log_refuses_to_start_naming_file_and_offset() {
    let mut c = StoreCluster::start(3, &[]);
    let client = c.client().await;
    let leader = c.leader(&client, &[], LONG).await;
    let victim = *c.ids.iter().find(|&&i| i != leader).unwrap();
    let acked = write_blobs(&client, "w", 30).await;
    wait_for_blobs(&client, victim, &acked).await;
    c.kill(victim);

    // Flip a byte inside an entry record that has valid records after it.
    let seg = segments(&c.data_dir(victim)).pop().expect("a segment");
    let entries: Vec<usize> = records(&seg)
        .into_iter()
        .filter(|(_, k)| *k == ENTRY)
        .map(|(o, _)| o)
        .collect();
    assert!(entries.len() > 10, "{} entry records", entries.len());
    let damaged = entries[entries.len() / 2];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, damaged as u64 + 12).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], damaged as u64 + 12).unwrap();
        f.sync_all().unwrap();
    }

    c.restart(victim);
    eventually(LONG, "the damaged replica to exit", || {
        let exited = c.exited(victim);
        async move {
            if exited {
                Ok(())
            } else {
                Err("still running".to_string())
            }
        }
    })
    .await;
    let log = c.log_text(victim);
    assert!(
        log.contains(&seg.display().to_string()),
        "the file must be named:\n{log}"
    );
    assert!(
        log.contains(&format!("corrupt record at offset {damaged}")),
        "the offset must be named:\n{log}"
    );
    // The other two still serve.
    write_blobs(&client, "still", 3).await;
}
