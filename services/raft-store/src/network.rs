//! Raft RPCs over NATS request/reply: each replica serves
//! `shoal.raft.<id>.{vote,append,snapshot}` (see `shoal_shared::subjects::raft_rpc`).

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_shared::subjects::{self, RaftRpc};
use shoal_shared::ShoalError;

use crate::codec;
use crate::membership::Contacts;
use crate::typ::TypeConfig;

/// Creates one NATS client per target replica (they share the connection).
pub struct NatsNetwork {
    pub nats: async_nats::Client,
    /// Every answered RPC is noted here (the membership's reachability).
    pub contacts: Contacts,
}

pub struct NatsPeer {
    nats: async_nats::Client,
    target: u64,
    contacts: Contacts,
}

impl RaftNetworkFactory<TypeConfig> for NatsNetwork {
    type Network = NatsPeer;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> NatsPeer {
        NatsPeer {
            nats: self.nats.clone(),
            target,
            contacts: self.contacts.clone(),
        }
    }
}

impl NatsPeer {
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let subject = subjects::raft_rpc(self.target, rpc);
        let request = async_nats::Request::new()
            .payload(codec::encode(req).into())
            .headers(shoal_shared::envelope::trace_headers())
            .timeout(Some(timeout));
        let msg = match self.nats.send_request(subject, request).await {
            Ok(msg) => msg,
            Err(e) => {
                use async_nats::RequestErrorKind::*;
                let err = ShoalError::unavailable(format!("raft rpc to {}: {e}", self.target));
                return Err(match e.kind() {
                    NoResponders | TimedOut => RPCError::Unreachable(Unreachable::new(&err)),
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
        };
        self.contacts.heard_from(self.target);
        match codec::decode::<Result<Resp, RaftError<u64, E>>>(&msg.payload) {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for NatsPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RaftRpc::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(RaftRpc::InstallSnapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RaftRpc::Vote, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
