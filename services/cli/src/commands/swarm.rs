//! `shoal swarm ...` and `shoal info`: the cluster (`GET /swarm`, a
//! [`Cluster`]) and this node's view of it (`GET /info`'s `Swarm`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_shared::model::{Cluster, JoinTokens, Node};

use super::Out;
use crate::client::{ApiError, Client};
use crate::format::{human_duration, parse_duration};

#[derive(Debug, Subcommand)]
pub enum SwarmCmd {
    /// Initialize a swarm.
    Init {
        #[arg(long, default_value = "")]
        advertise_addr: String,
        #[arg(long, default_value = "0.0.0.0:2377")]
        listen_addr: String,
    },
    /// Join a swarm as a node and/or manager.
    Join {
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "")]
        advertise_addr: String,
        /// A manager's address, HOST:PORT.
        remote: String,
    },
    /// Manage join tokens.
    JoinToken {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        rotate: bool,
        /// `worker` or `manager`.
        role: String,
    },
    /// Leave the swarm.
    Leave {
        #[arg(short, long)]
        force: bool,
    },
    /// Update the swarm.
    Update {
        #[arg(long)]
        task_history_limit: Option<i64>,
        #[arg(long)]
        snapshot_interval: Option<u64>,
        #[arg(long)]
        dispatcher_heartbeat: Option<String>,
        #[arg(long)]
        cert_expiry: Option<String>,
    },
}

/// `GET /info`, the part the swarm commands read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Info {
    pub swarm: SwarmInfo,
}

/// `Info.Swarm`: this node's place in the swarm.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SwarmInfo {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    /// `inactive`, `active` or `error`.
    pub local_node_state: String,
    /// Whether this node is a manager.
    pub control_available: bool,
    pub error: String,
    pub remote_managers: Option<Vec<Peer>>,
    /// Manager answers only.
    pub nodes: u64,
    pub managers: u64,
    /// The cluster without its join tokens (manager answers only).
    pub cluster: Option<Cluster>,
}

/// One of `Info.Swarm.RemoteManagers`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Peer {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub addr: String,
}

/// `POST /swarm/init`'s body: defaults for everything but the addresses.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InitRequest<'a> {
    listen_addr: &'a str,
    advertise_addr: &'a str,
    spec: BTreeMap<String, String>,
}

/// `POST /swarm/join`'s body.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JoinRequest<'a> {
    join_token: &'a str,
    remote_addrs: [&'a str; 1],
    advertise_addr: &'a str,
    listen_addr: &'a str,
}

/// Initializes a swarm with Docker's defaults; this node's ID (`shoal swarm init`, `shoal up`).
pub fn init(c: &Client, listen_addr: &str, advertise_addr: &str) -> Result<String, ApiError> {
    let body = InitRequest {
        listen_addr,
        advertise_addr,
        spec: BTreeMap::new(),
    };
    c.post("/swarm/init", &body)
}

/// `GET /info`'s swarm part.
pub fn swarm_info(c: &Client) -> Result<SwarmInfo, ApiError> {
    c.get::<Info>("/info").map(|i| i.swarm)
}

pub(crate) fn run(c: &Client, cmd: SwarmCmd) -> Out {
    match cmd {
        SwarmCmd::Init {
            advertise_addr,
            listen_addr,
        } => {
            let id = init(c, &listen_addr, &advertise_addr)?;
            let sw: Cluster = c.get("/swarm")?;
            let mut o = format!("Swarm initialized: current node ({id}) is now a manager.\n\n");
            o.push_str(&join_command(c, "worker", &sw.join_tokens)?);
            o.push_str(
                "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n",
            );
            Ok(o)
        }
        SwarmCmd::Join {
            token,
            advertise_addr,
            remote,
        } => {
            let body = JoinRequest {
                join_token: &token,
                remote_addrs: [&remote],
                advertise_addr: &advertise_addr,
                listen_addr: "0.0.0.0:2377",
            };
            c.post::<Value, _>("/swarm/join", &body)?;
            Ok(if swarm_info(c)?.control_available {
                "This node joined a swarm as a manager.\n".into()
            } else {
                "This node joined a swarm as a worker.\n".into()
            })
        }
        SwarmCmd::JoinToken { quiet, rotate, role } => {
            if role != "worker" && role != "manager" {
                return Err("unknown role ".to_string() + &role);
            }
            let mut o = String::new();
            if rotate {
                let sw: Cluster = c.get("/swarm")?;
                let v = sw.meta.version.index;
                let param = if role == "worker" {
                    "rotateWorkerToken"
                } else {
                    "rotateManagerToken"
                };
                c.post::<Value, _>(&format!("/swarm/update?version={v}&{param}=true"), &sw.spec)?;
                if !quiet {
                    let _ = writeln!(o, "Successfully rotated {role} join token.\n");
                }
            }
            let sw: Cluster = c.get("/swarm")?;
            if quiet {
                let _ = writeln!(o, "{}", token_of(&sw.join_tokens, &role));
                return Ok(o);
            }
            o.push_str(&join_command(c, &role, &sw.join_tokens)?);
            Ok(o)
        }
        SwarmCmd::Leave { force } => {
            c.post::<Value, _>(
                &format!("/swarm/leave?force={force}"),
                &BTreeMap::<String, String>::new(),
            )?;
            Ok("Node left the swarm.\n".into())
        }
        SwarmCmd::Update {
            task_history_limit,
            snapshot_interval,
            dispatcher_heartbeat,
            cert_expiry,
        } => {
            let sw: Cluster = c.get("/swarm")?;
            let v = sw.meta.version.index;
            let mut spec = sw.spec;
            if let Some(n) = task_history_limit {
                spec.orchestration.task_history_retention_limit = Some(n);
            }
            if let Some(n) = snapshot_interval {
                spec.raft.snapshot_interval = n;
            }
            if let Some(d) = dispatcher_heartbeat {
                spec.dispatcher.heartbeat_period = Some(duration_flag(&d)?);
            }
            if let Some(d) = cert_expiry {
                spec.ca_config.node_cert_expiry = Some(duration_flag(&d)?);
            }
            c.post::<Value, _>(&format!("/swarm/update?version={v}"), &spec)?;
            Ok("Swarm updated.\n".into())
        }
    }
}

/// A duration flag (`5s`, `1m30s`) as a [`std::time::Duration`].
pub(crate) fn duration_flag(s: &str) -> Result<std::time::Duration, String> {
    let n = parse_duration(s)?;
    shoal_shared::model::duration::from_nanos(n).ok_or_else(|| format!("invalid duration {s:?}"))
}

fn token_of<'a>(tokens: &'a JoinTokens, role: &str) -> &'a str {
    if role == "manager" {
        &tokens.manager
    } else {
        &tokens.worker
    }
}

/// The "To add a ... run" paragraph, with this manager's address.
fn join_command(c: &Client, role: &str, tokens: &JoinTokens) -> Out {
    let id = swarm_info(c)?.node_id;
    let node: Node = c.get(&format!("/nodes/{id}"))?;
    let addr = node.manager_status.map(|m| m.addr).unwrap_or_default();
    let token = token_of(tokens, role);
    Ok(format!(
        "To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n"
    ))
}

/// `shoal info`: the `Swarm:` block of `docker info`.
pub(crate) fn info(c: &Client) -> Out {
    let sw = swarm_info(c)?;
    let mut o = String::new();
    let state = &sw.local_node_state;
    let _ = writeln!(o, "Swarm: {state}");
    if state != "active" {
        return Ok(o);
    }
    let _ = writeln!(o, " NodeID: {}", sw.node_id);
    if !sw.error.is_empty() {
        let _ = writeln!(o, " Error: {}", sw.error);
    }
    let manager = sw.control_available;
    let _ = writeln!(o, " Is Manager: {manager}");
    if let (true, Some(cl)) = (manager, &sw.cluster) {
        let spec = &cl.spec;
        let _ = writeln!(o, " ClusterID: {}", cl.meta.id);
        let _ = writeln!(o, " Managers: {}", sw.managers);
        let _ = writeln!(o, " Nodes: {}", sw.nodes);
        let _ = writeln!(o, " Default Address Pool: {}  ", cl.default_addr_pool.join("  "));
        let _ = writeln!(o, " SubnetSize: {}", cl.subnet_size);
        let _ = writeln!(o, " Data Path Port: {}", cl.data_path_port);
        let _ = writeln!(o, " Orchestration:");
        let _ = writeln!(
            o,
            "  Task History Retention Limit: {}",
            spec.orchestration.task_history_retention_limit.unwrap_or(0)
        );
        let r = &spec.raft;
        let _ = writeln!(o, " Raft:");
        let _ = writeln!(o, "  Snapshot Interval: {}", r.snapshot_interval);
        if let Some(k) = r.keep_old_snapshots {
            let _ = writeln!(o, "  Number of Old Snapshots to Retain: {k}");
        }
        let _ = writeln!(o, "  Heartbeat Tick: {}", r.heartbeat_tick);
        let _ = writeln!(o, "  Election Tick: {}", r.election_tick);
        let secs = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_secs() as i64);
        let _ = writeln!(o, " Dispatcher:");
        let hb = secs(spec.dispatcher.heartbeat_period);
        let _ = writeln!(o, "  Heartbeat Period: {}", human_duration(hb));
        let _ = writeln!(o, " CA Configuration:");
        let exp = secs(spec.ca_config.node_cert_expiry);
        let _ = writeln!(o, "  Expiry Duration: {}", human_duration(exp));
        let _ = writeln!(o, "  Force Rotate: {}", spec.ca_config.force_rotate);
        let _ = writeln!(o, " Autolock Managers: {}", spec.encryption_config.auto_lock_managers);
        let _ = writeln!(o, " Root Rotation In Progress: {}", cl.root_rotation_in_progress);
    }
    let _ = writeln!(o, " Node Address: {}", sw.node_addr);
    if let Some(rm) = sw.remote_managers.filter(|a| !a.is_empty()) {
        let _ = writeln!(o, " Manager Addresses:");
        let mut addrs: Vec<String> = rm.into_iter().map(|m| m.addr).collect();
        addrs.sort();
        for a in addrs {
            let _ = writeln!(o, "  {a}");
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_of_a_node_outside_a_swarm_reads() {
        let v = serde_json::json!({"ID": "x", "Containers": 0, "Swarm": {
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
            "Error": "", "RemoteManagers": null}});
        let info: Info = serde_json::from_value(v).unwrap();
        assert_eq!(info.swarm.local_node_state, "inactive");
        assert!(info.swarm.remote_managers.is_none() && info.swarm.cluster.is_none());
    }
}
