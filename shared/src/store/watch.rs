//! List-then-follow of the change feed, for every consumer of store state.
//!
//! A [`Watcher`] first subscribes to the feed, then lists the kinds it wants
//! (getting the feed position P of that list), then applies batches in order:
//! a batch whose `prev_index` is P moves P forward; a batch that leaves a gap,
//! a new leader, a reconnect or a quiet period makes it fetch the history
//! after P from the store; when the store has compacted that history away it
//! lists again and says so with [`WatchEvent::Reset`]. Consumers therefore see
//! every committed change once, in index order, or a fresh complete list.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;

use super::client::StoreClient;
use super::proto::{EventBatch, ListFilter};
use super::types::{Kind, Record};
use crate::envelope;
use crate::error::ShoalError;
use crate::subjects;

/// What a watcher yields.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// The complete current state of the watched kinds at feed position `index`.
    Reset { index: u64, records: Vec<Record> },
    /// The next batch of changes (only the watched kinds; never empty).
    Batch(EventBatch),
}

/// How long the feed may be quiet before the watcher checks the store's history anyway.
const IDLE_CHECK: Duration = Duration::from_secs(2);
const HISTORY_PAGE: usize = 1000;

pub struct Watcher {
    client: StoreClient,
    kinds: BTreeSet<Kind>,
    position: Option<u64>,
    sub: Option<async_nats::Subscriber>,
    leader_sub: Option<async_nats::Subscriber>,
    pending: std::collections::VecDeque<WatchEvent>,
}

impl Watcher {
    pub fn new(client: StoreClient, kinds: &[Kind]) -> Watcher {
        Watcher {
            client,
            kinds: kinds.iter().copied().collect(),
            position: None,
            sub: None,
            leader_sub: None,
            pending: Default::default(),
        }
    }

    /// The feed position of everything yielded so far.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The next event; retries store outages forever (with logging), so a
    /// consumer's loop is simply `while let Ok(ev) = watcher.next().await`.
    pub async fn next(&mut self) -> Result<WatchEvent, ShoalError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "watcher: store unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn step(&mut self) -> Result<(), ShoalError> {
        if self.sub.is_none() {
            let nats = self.client.nats();
            let sub = nats
                .subscribe(subjects::store_events())
                .await
                .map_err(|e| ShoalError::unavailable(format!("subscribe: {e}")))?;
            let leader = nats
                .subscribe(subjects::store_leader())
                .await
                .map_err(|e| ShoalError::unavailable(format!("subscribe: {e}")))?;
            // Make sure the server has the subscriptions before we list.
            nats.flush()
                .await
                .map_err(|e| ShoalError::unavailable(format!("flush: {e}")))?;
            self.sub = Some(sub);
            self.leader_sub = Some(leader);
            self.position = None;
        }
        let Some(pos) = self.position else {
            return self.relist().await;
        };
        let sub = self.sub.as_mut().expect("subscribed");
        let leader = self.leader_sub.as_mut().expect("subscribed");
        tokio::select! {
            msg = sub.next() => match msg {
                None => { self.sub = None; Ok(()) }
                Some(msg) => {
                    let batch: EventBatch = match envelope::decode(&msg.payload) {
                        Ok(b) => b,
                        Err(e) => { tracing::warn!(error = %e, "watcher: bad event"); return Ok(()); }
                    };
                    if batch.index <= pos {
                        Ok(())
                    } else if batch.prev_index == pos {
                        self.accept(batch);
                        Ok(())
                    } else {
                        tracing::debug!(pos, prev = batch.prev_index, index = batch.index, "watcher: gap");
                        self.catch_up(pos).await
                    }
                }
            },
            _ = leader.next() => self.catch_up(pos).await,
            _ = tokio::time::sleep(IDLE_CHECK) => self.catch_up(pos).await,
        }
    }

    fn accept(&mut self, mut batch: EventBatch) {
        self.position = Some(batch.index);
        batch.changes.retain(|c| self.kinds.contains(&c.record.kind));
        if !batch.changes.is_empty() {
            self.pending.push_back(WatchEvent::Batch(batch));
        }
    }

    async fn catch_up(&mut self, mut pos: u64) -> Result<(), ShoalError> {
        loop {
            let res = self.client.events(pos, HISTORY_PAGE).await?;
            if res.compacted {
                return self.relist().await;
            }
            let n = res.batches.len();
            for b in res.batches {
                if b.index > pos && b.prev_index == pos {
                    pos = b.index;
                    self.accept(b);
                } else if b.index > pos {
                    return self.relist().await;
                }
            }
            if n < HISTORY_PAGE {
                return Ok(());
            }
        }
    }

    async fn relist(&mut self) -> Result<(), ShoalError> {
        let kinds: Vec<Kind> = self.kinds.iter().copied().collect();
        let res = self.client.list_records(&kinds, ListFilter::default()).await?;
        self.position = Some(res.event_index);
        self.pending.clear();
        self.pending.push_back(WatchEvent::Reset {
            index: res.event_index,
            records: res.records,
        });
        Ok(())
    }
}
