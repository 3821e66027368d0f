//! Every NATS subject shoal uses, built by functions. No other module writes a
//! subject string; grep here to see the whole map (ARCHITECTURE.md mirrors it).

/// Prefix of every subject, so a NATS account could host other traffic too.
const ROOT: &str = "shoal";

/// Store API requests that any raft-store replica may answer (queue group
/// [`STORE_QUEUE`]); followers forward writes to the leader.
pub fn store_requests() -> String {
    format!("{ROOT}.store.req")
}

/// Queue group of the raft-store replicas on [`store_requests`].
pub const STORE_QUEUE: &str = "raft-store";

/// Store API requests addressed to one replica (forwarding to the leader,
/// membership and status of a given replica).
pub fn store_replica(replica: u64) -> String {
    format!("{ROOT}.store.replica.{replica}")
}

/// The change feed: one [`crate::store::EventBatch`] per applied log entry
/// that changed objects, published by the leader in log order.
pub fn store_events() -> String {
    format!("{ROOT}.store.events")
}

/// Announcements of a new store leader (a watcher catches up when it sees one).
pub fn store_leader() -> String {
    format!("{ROOT}.store.leader")
}

/// The Raft RPCs a replica serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpc {
    Vote,
    AppendEntries,
    InstallSnapshot,
}

impl RaftRpc {
    fn as_str(self) -> &'static str {
        match self {
            RaftRpc::Vote => "vote",
            RaftRpc::AppendEntries => "append",
            RaftRpc::InstallSnapshot => "snapshot",
        }
    }
}

/// Subject on which `replica` serves Raft RPC `rpc` (request/reply).
pub fn raft_rpc(replica: u64, rpc: RaftRpc) -> String {
    format!("{ROOT}.raft.{replica}.{}", rpc.as_str())
}

/// Wildcard of all Raft RPCs served by `replica`.
pub fn raft_rpc_all(replica: u64) -> String {
    format!("{ROOT}.raft.{replica}.*")
}

/// Agent requests to the dispatcher ([`crate::dispatch::AgentRequest`]):
/// every manager's dispatcher subscribes, only the store leader's node's answers.
pub fn dispatcher_requests() -> String {
    format!("{ROOT}.dispatch.req")
}

/// Assignments for one node ([`crate::dispatch::Assignments`]), published by
/// the acting dispatcher, subscribed by that node's agent.
pub fn agent_assignments(node_id: &str) -> String {
    format!("{ROOT}.dispatch.node.{node_id}")
}

/// Image lookups ([`crate::dispatch::ImageQuery`]) sent by the API for
/// `GET /distribution/{name}/json` without credentials: every agent
/// subscribes; one that has the image (or can resolve it at its registry)
/// answers, the others stay silent.
pub fn agent_image_query() -> String {
    format!("{ROOT}.agent.image")
}

/// Image lookups that carry the client's registry credentials go to one
/// node's agent only: the API's own node (as Docker's manager resolves
/// digests itself), so credentials reach no other node.
pub fn agent_image_query_on(node_id: &str) -> String {
    format!("{ROOT}.agent.image.node.{node_id}")
}

/// Log reads for one node's agent ([`crate::logs::LogsRead`], request/reply):
/// the API pulls the lines of the tasks that run or ran there.
pub fn agent_logs(node_id: &str) -> String {
    format!("{ROOT}.agent.logs.node.{node_id}")
}

/// The managers' secrets key for the dispatcher of one manager host
/// (request/reply, answered by that host's API once it holds the key: at
/// once without autolock, after `docker swarm unlock` with it). The answer
/// is a [`crate::secrets::KeyAnswer`].
pub fn manager_key(node_id: &str) -> String {
    format!("{ROOT}.manager.key.{node_id}")
}

/// Requests for one node's whole network view
/// ([`crate::netview::NetViewRequest`] -> [`crate::netview::NetView`]):
/// every manager's dispatcher subscribes, only the acting one answers.
pub fn net_requests() -> String {
    format!("{ROOT}.net.req")
}

/// One node's network view ([`crate::netview::NetView`]), published whole by
/// the acting dispatcher whenever it changes; the node's agent, `shoal-dns`
/// and `shoal-ingress` subscribe.
pub fn net_view(node_id: &str) -> String {
    format!("{ROOT}.net.node.{node_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_distinct_and_tokenised() {
        let all = [
            store_requests(),
            store_replica(1),
            store_replica(2),
            store_events(),
            store_leader(),
            raft_rpc(1, RaftRpc::Vote),
            raft_rpc(1, RaftRpc::AppendEntries),
            raft_rpc(1, RaftRpc::InstallSnapshot),
            raft_rpc(2, RaftRpc::Vote),
            dispatcher_requests(),
            agent_assignments("n1"),
            agent_image_query(),
            agent_image_query_on("n1"),
            agent_assignments("n2"),
            agent_logs("n1"),
        ];
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        for s in &all {
            assert!(s.starts_with("shoal."), "{s}");
            assert!(!s.contains(' ') && !s.contains(".."), "{s}");
        }
        assert_eq!(raft_rpc_all(3), "shoal.raft.3.*");
    }
}
