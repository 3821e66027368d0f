//! actix adapters: NATS subscriptions in, calls on the [`Replica`] out.
//!
//! [`StoreApi`] serves the store API (the replicas' queue group and this
//! replica's own subject) and answers [`GetState`] with the replica's status,
//! so a test or a supervisor can look at it without going through NATS.

use std::sync::Arc;

use actix::prelude::*;
use shoal_shared::store::StoreStatus;
use shoal_shared::subjects;

use crate::server::Replica;

/// A store API message, tagged with whether it was addressed to this replica.
struct Incoming {
    msg: async_nats::Message,
    direct: bool,
}

impl Message for Incoming {
    type Result = ();
}

/// Asks an actor for a snapshot of its state.
pub struct GetState;

impl Message for GetState {
    type Result = StoreStatus;
}

pub struct StoreApi {
    replica: Arc<Replica>,
}

impl Actor for StoreApi {
    type Context = Context<Self>;
}

impl StreamHandler<Incoming> for StoreApi {
    fn handle(&mut self, item: Incoming, _ctx: &mut Context<Self>) {
        // Requests run concurrently on the runtime; the actor only dispatches.
        tokio::spawn(self.replica.clone().handle(item.msg, item.direct));
    }
}

impl Handler<GetState> for StoreApi {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.replica.status())
    }
}

/// Subscribes to the store subjects and starts the actor that serves them.
pub async fn start(replica: Arc<Replica>, nats: &async_nats::Client) -> anyhow::Result<Addr<StoreApi>> {
    use futures::StreamExt;
    let shared = nats
        .queue_subscribe(subjects::store_requests(), subjects::STORE_QUEUE.to_string())
        .await?
        .map(|msg| Incoming { msg, direct: false });
    let own = nats
        .subscribe(subjects::store_replica(replica.id))
        .await?
        .map(|msg| Incoming { msg, direct: true });
    let stream = futures::stream::select(shared, own);
    Ok(StoreApi::create(move |ctx| {
        ctx.add_stream(stream);
        StoreApi { replica }
    }))
}
