//! `shoal node ...`: the swarm's [`Node`]s.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use serde_json::Value;
use shoal_shared::model::{Availability, Node, NodeRole, NodeSpec};

use super::{
    cap, each, fetch_each, inspect_out, list_rows, parse_flag, query_filters, remove_each, single, typed, wire,
    InspectOpts, ListOpts, Out, Printed, Row,
};
use crate::client::{urlencode, ApiError, Client};
use crate::format::bytes_size;

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes in the swarm.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Display detailed information on one or more nodes.
    Inspect(InspectOpts),
    /// List tasks running on one or more nodes, defaults to current node.
    Ps {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Update a node.
    Update {
        #[arg(long)]
        availability: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        label_add: Vec<String>,
        #[arg(long)]
        label_rm: Vec<String>,
        node: String,
    },
    /// Promote one or more nodes to manager in the swarm.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote one or more nodes from manager in the swarm.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

pub(crate) fn run(c: &Client, cmd: NodeCmd) -> Printed {
    match cmd {
        NodeCmd::Ls(opts) => single(ls(c, &opts)),
        NodeCmd::Inspect(opts) => single(inspect(c, &opts)),
        NodeCmd::Ps { quiet, filter, nodes } => single(ps(c, filter, nodes, quiet)),
        NodeCmd::Rm { force, nodes } => remove_each(c, &nodes, |n| format!("/nodes/{n}?force={force}")),
        NodeCmd::Update {
            availability,
            role,
            label_add,
            label_rm,
            node,
        } => single(update(c, &node, availability, role, &label_add, &label_rm)),
        NodeCmd::Promote { nodes } => each(&nodes, |n| {
            Ok(match set_role(c, n, NodeRole::Manager)? {
                true => format!("Node {n} promoted to a manager in the swarm."),
                false => format!("Node {n} is already a manager."),
            })
        }),
        NodeCmd::Demote { nodes } => each(&nodes, |n| {
            Ok(match set_role(c, n, NodeRole::Worker)? {
                true => format!("Manager {n} demoted in the swarm."),
                false => format!("Node {n} is already a worker."),
            })
        }),
    }
}

/// Docker's node fields for `--format` on `node ls`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeRow {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Self")]
    is_self: bool,
    hostname: String,
    status: String,
    availability: String,
    manager_status: String,
    engine_version: String,
    #[serde(rename = "TLSStatus")]
    tls_status: &'static str,
}

impl NodeRow {
    fn new(n: &Node, me: &str) -> NodeRow {
        NodeRow {
            id: n.meta.id.clone(),
            is_self: n.meta.id == me,
            hostname: n.description.hostname.clone(),
            status: cap(&wire(&n.status.state)),
            availability: cap(&wire(&n.spec.availability)),
            manager_status: manager_status(n),
            engine_version: n.description.engine.engine_version.clone(),
            tls_status: "Ready",
        }
    }
}

impl Row for NodeRow {
    /// The default table's six, then the other `--format` fields.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("ID", "ID"),
        ("Hostname", "HOSTNAME"),
        ("Status", "STATUS"),
        ("Availability", "AVAILABILITY"),
        ("ManagerStatus", "MANAGER STATUS"),
        ("EngineVersion", "ENGINE VERSION"),
        ("Self", ""),
        ("TLSStatus", "TLS STATUS"),
    ];
    const SHOWN: usize = 6;

    fn id(&self) -> &str {
        &self.id
    }

    fn cells(&self) -> Vec<String> {
        // Docker's default column is `{{.ID}} {{if .Self}}*{{else}} {{end}}`.
        let mark = if self.is_self { "*" } else { " " };
        vec![
            format!("{} {mark}", self.id),
            self.hostname.clone(),
            self.status.clone(),
            self.availability.clone(),
            self.manager_status.clone(),
            self.engine_version.clone(),
        ]
    }
}

/// `MANAGER STATUS`: empty for a worker, `Leader`, else the reachability.
fn manager_status(n: &Node) -> String {
    match &n.manager_status {
        None => String::new(),
        Some(ms) if ms.leader => "Leader".into(),
        Some(ms) => cap(&wire(&ms.reachability)),
    }
}

fn ls(c: &Client, opts: &ListOpts) -> Out {
    let q = query_filters(&opts.filter)?;
    let nodes: Vec<Node> = c.get(&format!("/nodes?filters={q}"))?;
    let me = super::swarm::swarm_info(c)?.node_id;
    let mut rows: Vec<NodeRow> = nodes.iter().map(|n| NodeRow::new(n, &me)).collect();
    rows.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    list_rows(&rows, opts)
}

fn inspect(c: &Client, opts: &InspectOpts) -> Out {
    let objs = fetch_each(c, &opts.refs, |r| format!("/nodes/{r}"))?;
    if opts.format.is_none() && opts.pretty {
        let pretty = objs
            .iter()
            .map(|o| typed::<Node>(o).map(|n| pretty(&n)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(pretty.join("\n\n"));
    }
    inspect_out(&objs, opts.format.as_deref())
}

/// `node ps`: the tasks of these nodes (this one by default).
fn ps(c: &Client, mut filters: Vec<String>, nodes: Vec<String>, quiet: bool) -> Out {
    let nodes = if nodes.is_empty() {
        vec!["self".to_string()]
    } else {
        nodes
    };
    for n in &nodes {
        let node: Node = c.get(&format!("/nodes/{}", urlencode(n)))?;
        filters.push(format!("node={}", node.meta.id));
    }
    super::task::table(c, &filters, quiet)
}

fn update(
    c: &Client,
    node: &str,
    availability: Option<String>,
    role: Option<String>,
    label_add: &[String],
    label_rm: &[String],
) -> Out {
    let availability: Option<Availability> = availability.map(|a| parse_flag("--availability", &a)).transpose()?;
    let role: Option<NodeRole> = role.map(|r| parse_flag("--role", &r)).transpose()?;
    edit_node(c, node, |spec| {
        if let Some(a) = availability {
            spec.availability = a;
        }
        if let Some(r) = role {
            spec.role = r;
        }
        spec.labels.extend(super::parse_kv_list(label_add));
        for k in label_rm {
            spec.labels.remove(k);
        }
        true
    })?;
    Ok(format!("{node}\n"))
}

/// Sets a node's role; whether it changed.
fn set_role(c: &Client, node: &str, role: NodeRole) -> Result<bool, ApiError> {
    edit_node(c, node, |spec| {
        let change = spec.role != role;
        spec.role = role;
        change
    })
}

/// Reads a node and writes its spec back as `edit` leaves it, unless `edit`
/// says there is nothing to write; whether it wrote.
fn edit_node(c: &Client, node: &str, edit: impl FnOnce(&mut NodeSpec) -> bool) -> Result<bool, ApiError> {
    let n: Node = c.get(&format!("/nodes/{}", urlencode(node)))?;
    let mut spec = n.spec.clone();
    if !edit(&mut spec) {
        return Ok(false);
    }
    let v = n.meta.version.index;
    c.post::<Value, _>(&format!("/nodes/{}/update?version={v}", n.meta.id), &spec)?;
    Ok(true)
}

/// Go's `time.Time.String()`, lowercased as docker's pretty view prints it.
fn go_time(t: DateTime<Utc>) -> String {
    let nanos = t.timestamp_subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{:09}", nanos).trim_end_matches('0').to_string()
    };
    format!("{}{} +0000 utc", t.format("%Y-%m-%d %H:%M:%S"), frac)
}

/// `node inspect --pretty`.
fn pretty(n: &Node) -> String {
    let mut o = String::new();
    let d = &n.description;
    let _ = writeln!(o, "ID:\t\t\t{}", n.meta.id);
    if !n.spec.name.is_empty() {
        let _ = writeln!(o, "Name:\t\t\t{}", n.spec.name);
    }
    if !n.spec.labels.is_empty() {
        let _ = writeln!(o, "Labels:");
        for (k, v) in &n.spec.labels {
            let _ = writeln!(o, " - {k}={v}");
        }
    }
    let _ = writeln!(o, "Hostname:              \t{}", d.hostname);
    let _ = writeln!(o, "Joined at:             \t{}", go_time(n.meta.created_at));
    let _ = writeln!(o, "Status:");
    let _ = writeln!(o, " State:\t\t\t{}", cap(&wire(&n.status.state)));
    if !n.status.message.is_empty() {
        let _ = writeln!(o, " Message:              \t{}", n.status.message);
    }
    let _ = writeln!(o, " Availability:         \t{}", cap(&wire(&n.spec.availability)));
    if !n.status.addr.is_empty() {
        let _ = writeln!(o, " Address:\t\t{}", n.status.addr);
    }
    if let Some(ms) = &n.manager_status {
        let _ = writeln!(o, "Manager Status:");
        let _ = writeln!(o, " Address:\t\t{}", ms.addr);
        let _ = writeln!(o, " Raft Status:\t\t{}", cap(&wire(&ms.reachability)));
        let leader = if ms.leader { "Yes" } else { "No" };
        let _ = writeln!(o, " Leader:\t\t{leader}");
    }
    let _ = writeln!(o, "Platform:");
    let _ = writeln!(o, " Operating System:\t{}", d.platform.os);
    let _ = writeln!(o, " Architecture:\t\t{}", d.platform.architecture);
    let _ = writeln!(o, "Resources:");
    let _ = writeln!(o, " CPUs:\t\t\t{}", d.resources.nano_cpus / 1_000_000_000);
    let _ = writeln!(o, " Memory:\t\t{}", bytes_size(d.resources.memory_bytes));
    if !d.engine.plugins.is_empty() {
        let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in &d.engine.plugins {
            by_type.entry(&p.kind).or_default().push(&p.name);
        }
        let _ = writeln!(o, "Plugins:");
        for (t, names) in by_type {
            let _ = writeln!(o, " {t}:\t\t{}", names.join(", "));
        }
    }
    let _ = writeln!(o, "Engine Version:\t\t{}", d.engine.engine_version);
    if let Some(tls) = &d.tls_info {
        let _ = writeln!(o, "TLS Info:");
        let _ = writeln!(o, " TrustRoot:\n{}", tls.trust_root);
        let _ = writeln!(o, " Issuer Subject:\t{}", tls.cert_issuer_subject);
        let _ = writeln!(o, " Issuer Public Key:\t{}", tls.cert_issuer_public_key);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_go_does() {
        let t = "2026-11-29T21:16:37.240469900Z".parse().unwrap();
        assert_eq!(go_time(t), "2026-11-29 21:16:37.2404699 +0000 utc");
    }
}
