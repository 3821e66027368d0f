//! The command line: what each command sends to shoal-api and what it prints
//! (the docker CLI's words and layout).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::{urlencode, ApiError, Client, Host};
use crate::format::{ago, bytes_size, go_duration, parse_bytes, parse_duration, render, table};

/// Default socket of a manager's shoal-api.
pub const DEFAULT_HOST: &str = "unix:///var/lib/shoal/shoal.sock";

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Drive a shoal swarm: swarm, node, service and network commands"
)]
pub struct Cli {
    /// shoal-api to talk to: unix:///path or tcp://HOST:PORT.
    #[arg(short = 'H', long, env = "SHOAL_HOST", default_value = DEFAULT_HOST, global = true)]
    pub host: String,
    /// Trust certs signed only by this CA (TLS to a tcp:// host).
    #[arg(long, env = "SHOAL_TLSCACERT", global = true)]
    pub tlscacert: Option<std::path::PathBuf>,
    /// Path to this client's TLS certificate (for an API started with --tls-ca).
    #[arg(long, env = "SHOAL_TLSCERT", global = true)]
    pub tlscert: Option<std::path::PathBuf>,
    /// Path to this client's TLS key.
    #[arg(long, env = "SHOAL_TLSKEY", global = true)]
    pub tlskey: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage the swarm.
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// Manage swarm nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manage swarm services.
    #[command(subcommand)]
    Service(Box<ServiceCmd>),
    /// Manage swarm networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Display swarm-wide information.
    Info,
    /// Run a swarm node on this machine: nats-server and every shoal process, supervised.
    Up(Box<crate::up::UpArgs>),
}

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

#[derive(Debug, Args)]
pub struct ListOpts {
    /// Only display IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter output based on conditions provided (key=value).
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a Go template.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectOpts {
    /// Print the information in a human friendly format.
    #[arg(long)]
    pretty: bool,
    /// Format output using a Go template.
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    refs: Vec<String>,
}

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

#[derive(Debug, Args)]
pub struct SpecOpts {
    #[arg(long)]
    replicas: Option<u64>,
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    #[arg(long)]
    constraint: Vec<String>,
    #[arg(long)]
    limit_memory: Option<String>,
    #[arg(long)]
    limit_cpu: Option<f64>,
    #[arg(long)]
    reserve_memory: Option<String>,
    #[arg(long)]
    reserve_cpu: Option<f64>,
    #[arg(long)]
    restart_condition: Option<String>,
    #[arg(long)]
    restart_delay: Option<String>,
    #[arg(long)]
    update_delay: Option<String>,
    #[arg(long)]
    update_parallelism: Option<u64>,
    #[arg(long)]
    network: Vec<String>,
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,src=...,dst=...[,readonly][,volume-driver=..][,volume-opt=k=v]
    #[arg(long)]
    mount: Vec<String>,
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long)]
    container_label: Vec<String>,
    #[arg(long)]
    stop_grace_period: Option<String>,
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    #[arg(long)]
    restart_window: Option<String>,
    #[arg(long)]
    update_failure_action: Option<String>,
    #[arg(long)]
    update_order: Option<String>,
    #[arg(long)]
    update_monitor: Option<String>,
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    #[arg(long)]
    rollback_order: Option<String>,
    #[arg(long)]
    endpoint_mode: Option<String>,
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    #[arg(long)]
    dns: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a new service.
    Create {
        /// Exit immediately instead of waiting for the service to converge.
        #[arg(short, long)]
        detach: bool,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "replicated")]
        mode: String,
        #[command(flatten)]
        spec: SpecOpts,
        image: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List services.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// List the tasks of one or more services.
    Ps {
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Display detailed information on one or more services.
    Inspect(InspectOpts),
    /// Remove one or more services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Scale one or multiple replicated services.
    Scale {
        #[arg(short, long)]
        detach: bool,
        /// SERVICE=REPLICAS
        #[arg(required = true)]
        scales: Vec<String>,
    },
    /// Update a service.
    Update {
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        env_add: Vec<String>,
        #[arg(long)]
        env_rm: Vec<String>,
        #[arg(long)]
        constraint_add: Vec<String>,
        #[arg(long)]
        constraint_rm: Vec<String>,
        #[arg(long)]
        label_add: Vec<String>,
        #[arg(long)]
        label_rm: Vec<String>,
        #[arg(long)]
        rollback: bool,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        spec: SpecOpts,
        service: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        #[arg(short, long, default_value = "overlay")]
        driver: String,
        #[arg(long)]
        attachable: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        label: Vec<String>,
        #[arg(long)]
        subnet: Vec<String>,
        #[arg(long)]
        gateway: Vec<String>,
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        refs: Vec<String>,
    },
}

/// What a command ends with: printed output, or an error for stderr.
type Out = Result<String, String>;

fn daemon(e: ApiError) -> String {
    e.to_string()
}

/// Runs the command line; returns the exit status.
pub fn run(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    if let Cmd::Up(args) = cli.cmd {
        return crate::up::run(*args);
    }
    let host = match Host::parse(&cli.host) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return 125;
        }
    };
    let tls = crate::client::tls_config(&crate::client::TlsFiles {
        ca: cli.tlscacert.clone(),
        cert: cli.tlscert.clone(),
        key: cli.tlskey.clone(),
    });
    let c = match tls {
        Ok(tls) => Client::with_tls(host, tls),
        Err(e) => {
            eprintln!("{e}");
            return 125;
        }
    };
    let (out, err) = dispatch(&c, cli.cmd);
    print!("{out}");
    match err {
        None => 0,
        Some(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Runs one command: (stdout, error). Multi-object commands print what succeeded.
fn dispatch(c: &Client, cmd: Cmd) -> (String, Option<String>) {
    let single = |r: Out| match r {
        Ok(s) => (s, None),
        Err(e) => (String::new(), Some(e)),
    };
    match cmd {
        Cmd::Info => single(info(c)),
        Cmd::Up(_) => single(Err("shoal up is not an API command".into())),
        Cmd::Swarm(s) => single(swarm(c, s)),
        Cmd::Node(NodeCmd::Rm { force, nodes }) => each(&nodes, |n| {
            c.delete(&format!("/nodes/{}?force={force}", urlencode(n))).map(|_| ())
        }),
        Cmd::Node(NodeCmd::Promote { nodes }) => each_msg(&nodes, |n| {
            set_role(c, n, "manager").map(|changed| match changed {
                true => format!("Node {n} promoted to a manager in the swarm."),
                false => format!("Node {n} is already a manager."),
            })
        }),
        Cmd::Node(NodeCmd::Demote { nodes }) => each_msg(&nodes, |n| {
            set_role(c, n, "worker").map(|changed| match changed {
                true => format!("Manager {n} demoted in the swarm."),
                false => format!("Node {n} is already a worker."),
            })
        }),
        Cmd::Node(n) => single(node(c, n)),
        Cmd::Service(svc) => match *svc {
            ServiceCmd::Rm { services } => each(&services, |s| {
                c.delete(&format!("/services/{}", urlencode(s))).map(|_| ())
            }),
            ServiceCmd::Scale { scales, .. } => scale(c, &scales),
            other => single(service(c, other)),
        },
        Cmd::Network(NetworkCmd::Rm { refs }) => {
            each(&refs, |n| c.delete(&format!("/networks/{}", urlencode(n))).map(|_| ()))
        }
        Cmd::Network(n) => single(network(c, n)),
    }
}

/// Applies `f` to each name, printing the names that succeeded (as `docker ... rm` does).
fn each(names: &[String], f: impl Fn(&str) -> Result<(), ApiError>) -> (String, Option<String>) {
    each_msg(names, |n| f(n).map(|_| n.to_string()))
}

fn each_msg(names: &[String], f: impl Fn(&str) -> Result<String, ApiError>) -> (String, Option<String>) {
    let mut out = String::new();
    let mut errs = Vec::new();
    for n in names {
        match f(n) {
            Ok(msg) => {
                out.push_str(&msg);
                out.push('\n');
            }
            Err(e) => errs.push(e.to_string()),
        }
    }
    (out, (!errs.is_empty()).then(|| errs.join("\n")))
}

fn query_filters(filters: &[String]) -> Result<String, String> {
    if filters.is_empty() {
        return Ok(String::new());
    }
    let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| format!("bad format of filter (expected name=value): {f}"))?;
        m.entry(k.to_string()).or_default().insert(v.to_string(), true);
    }
    Ok(urlencode(&serde_json::to_string(&m).unwrap_or_default()))
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The image without its `@sha256:` pin, as the docker CLI lists it.
fn image_name(img: &str) -> String {
    img.split('@').next().unwrap_or(img).to_string()
}

/// The image with `:latest` when it names no tag or digest (as the docker CLI sends it).
fn tagged(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

fn self_id(c: &Client) -> Result<String, String> {
    let info = c.get("/info").map_err(daemon)?;
    Ok(s(&info["Swarm"]["NodeID"]))
}

// ---------------------------------------------------------------- info

fn info(c: &Client) -> Out {
    let i = c.get("/info").map_err(daemon)?;
    let sw = &i["Swarm"];
    let mut o = String::new();
    let state = s(&sw["LocalNodeState"]);
    let _ = writeln!(o, "Swarm: {state}");
    if state != "active" {
        return Ok(o);
    }
    let _ = writeln!(o, " NodeID: {}", s(&sw["NodeID"]));
    if !s(&sw["Error"]).is_empty() {
        let _ = writeln!(o, " Error: {}", s(&sw["Error"]));
    }
    let manager = sw["ControlAvailable"].as_bool().unwrap_or(false);
    let _ = writeln!(o, " Is Manager: {manager}");
    if manager {
        let cl = &sw["Cluster"];
        let spec = &cl["Spec"];
        let _ = writeln!(o, " ClusterID: {}", s(&cl["ID"]));
        let _ = writeln!(o, " Managers: {}", sw["Managers"]);
        let _ = writeln!(o, " Nodes: {}", sw["Nodes"]);
        let pools: Vec<String> = cl["DefaultAddrPool"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        let _ = writeln!(o, " Default Address Pool: {}  ", pools.join("  "));
        let _ = writeln!(o, " SubnetSize: {}", cl["SubnetSize"]);
        let _ = writeln!(o, " Data Path Port: {}", cl["DataPathPort"]);
        let _ = writeln!(o, " Orchestration:");
        let _ = writeln!(
            o,
            "  Task History Retention Limit: {}",
            spec["Orchestration"]["TaskHistoryRetentionLimit"].as_i64().unwrap_or(0)
        );
        let r = &spec["Raft"];
        let _ = writeln!(o, " Raft:");
        let _ = writeln!(
            o,
            "  Snapshot Interval: {}",
            r["SnapshotInterval"].as_u64().unwrap_or(0)
        );
        if let Some(k) = r["KeepOldSnapshots"].as_u64() {
            let _ = writeln!(o, "  Number of Old Snapshots to Retain: {k}");
        }
        let _ = writeln!(o, "  Heartbeat Tick: {}", r["HeartbeatTick"].as_u64().unwrap_or(0));
        let _ = writeln!(o, "  Election Tick: {}", r["ElectionTick"].as_u64().unwrap_or(0));
        let _ = writeln!(o, " Dispatcher:");
        let hb = spec["Dispatcher"]["HeartbeatPeriod"].as_i64().unwrap_or(0);
        let _ = writeln!(
            o,
            "  Heartbeat Period: {}",
            crate::format::human_duration(hb / 1_000_000_000)
        );
        let _ = writeln!(o, " CA Configuration:");
        let exp = spec["CAConfig"]["NodeCertExpiry"].as_i64().unwrap_or(0);
        let _ = writeln!(
            o,
            "  Expiry Duration: {}",
            crate::format::human_duration(exp / 1_000_000_000)
        );
        let _ = writeln!(
            o,
            "  Force Rotate: {}",
            spec["CAConfig"]["ForceRotate"].as_u64().unwrap_or(0)
        );
        let _ = writeln!(
            o,
            " Autolock Managers: {}",
            spec["EncryptionConfig"]["AutoLockManagers"].as_bool().unwrap_or(false)
        );
        let _ = writeln!(
            o,
            " Root Rotation In Progress: {}",
            cl["RootRotationInProgress"].as_bool().unwrap_or(false)
        );
    }
    let _ = writeln!(o, " Node Address: {}", s(&sw["NodeAddr"]));
    if let Some(rm) = sw["RemoteManagers"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(o, " Manager Addresses:");
        let mut addrs: Vec<String> = rm.iter().map(|m| s(&m["Addr"])).collect();
        addrs.sort();
        for a in addrs {
            let _ = writeln!(o, "  {a}");
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------- swarm

fn join_command(c: &Client, role: &str, tokens: &Value) -> Out {
    let id = self_id(c)?;
    let node = c.get(&format!("/nodes/{id}")).map_err(daemon)?;
    let addr = s(&node["ManagerStatus"]["Addr"]);
    let token = s(&tokens[cap(role)]);
    Ok(format!(
        "To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n"
    ))
}

fn swarm(c: &Client, cmd: SwarmCmd) -> Out {
    match cmd {
        SwarmCmd::Init {
            advertise_addr,
            listen_addr,
        } => {
            let id = c
                .post(
                    "/swarm/init",
                    &json!({"ListenAddr": listen_addr, "AdvertiseAddr": advertise_addr, "Spec": {}}),
                )
                .map_err(daemon)?;
            let sw = c.get("/swarm").map_err(daemon)?;
            let mut o = format!("Swarm initialized: current node ({}) is now a manager.\n\n", s(&id));
            o.push_str(&join_command(c, "worker", &sw["JoinTokens"])?);
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
            c.post(
                "/swarm/join",
                &json!({"JoinToken": token, "RemoteAddrs": [remote], "AdvertiseAddr": advertise_addr,
                        "ListenAddr": "0.0.0.0:2377"}),
            )
            .map_err(daemon)?;
            let info = c.get("/info").map_err(daemon)?;
            Ok(if info["Swarm"]["ControlAvailable"].as_bool().unwrap_or(false) {
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
                let sw = c.get("/swarm").map_err(daemon)?;
                let v = sw["Version"]["Index"].as_u64().unwrap_or(0);
                let param = if role == "worker" {
                    "rotateWorkerToken"
                } else {
                    "rotateManagerToken"
                };
                c.post(&format!("/swarm/update?version={v}&{param}=true"), &sw["Spec"])
                    .map_err(daemon)?;
                if !quiet {
                    let _ = writeln!(o, "Successfully rotated {role} join token.\n");
                }
            }
            let sw = c.get("/swarm").map_err(daemon)?;
            if quiet {
                let _ = writeln!(o, "{}", s(&sw["JoinTokens"][cap(&role)]));
                return Ok(o);
            }
            o.push_str(&join_command(c, &role, &sw["JoinTokens"])?);
            Ok(o)
        }
        SwarmCmd::Leave { force } => {
            c.post(&format!("/swarm/leave?force={force}"), &json!({}))
                .map_err(daemon)?;
            Ok("Node left the swarm.\n".into())
        }
        SwarmCmd::Update {
            task_history_limit,
            snapshot_interval,
            dispatcher_heartbeat,
            cert_expiry,
        } => {
            let sw = c.get("/swarm").map_err(daemon)?;
            let v = sw["Version"]["Index"].as_u64().unwrap_or(0);
            let mut spec = sw["Spec"].clone();
            if let Some(n) = task_history_limit {
                spec["Orchestration"]["TaskHistoryRetentionLimit"] = json!(n);
            }
            if let Some(n) = snapshot_interval {
                spec["Raft"]["SnapshotInterval"] = json!(n);
            }
            if let Some(d) = dispatcher_heartbeat {
                spec["Dispatcher"]["HeartbeatPeriod"] = json!(parse_duration(&d)?);
            }
            if let Some(d) = cert_expiry {
                spec["CAConfig"]["NodeCertExpiry"] = json!(parse_duration(&d)?);
            }
            c.post(&format!("/swarm/update?version={v}"), &spec).map_err(daemon)?;
            Ok("Swarm updated.\n".into())
        }
    }
}

// ---------------------------------------------------------------- nodes

fn manager_status(n: &Value) -> String {
    let ms = &n["ManagerStatus"];
    if ms.is_null() {
        return String::new();
    }
    if ms["Leader"].as_bool().unwrap_or(false) {
        return "Leader".into();
    }
    cap(ms["Reachability"].as_str().unwrap_or_default())
}

/// Docker's node fields for `--format` on `node ls`.
fn node_row(n: &Value, me: &str) -> Value {
    json!({
        "ID": s(&n["ID"]),
        "Self": s(&n["ID"]) == me,
        "Hostname": s(&n["Description"]["Hostname"]),
        "Status": cap(n["Status"]["State"].as_str().unwrap_or_default()),
        "Availability": cap(n["Spec"]["Availability"].as_str().unwrap_or_default()),
        "ManagerStatus": manager_status(n),
        "EngineVersion": s(&n["Description"]["Engine"]["EngineVersion"]),
        "TLSStatus": "Ready",
    })
}

/// A list command's output: `-q` IDs, a `--format` template per row (with
/// `table` making aligned columns under docker's header names), or the default table.
/// `columns` maps row fields to header names; the first `shown` are the default table.
fn list_rows(rows: &[Value], opts: &ListOpts, columns: &[(&str, &str)], shown: usize, id_field: &str) -> Out {
    if opts.quiet {
        return Ok(rows.iter().map(|r| s(&r[id_field]) + "\n").collect());
    }
    if let Some(f) = &opts.format {
        if let Some(t) = f.strip_prefix("table") {
            let t = t.trim_start();
            let names: serde_json::Map<String, Value> =
                columns.iter().map(|(k, h)| (k.to_string(), json!(h))).collect();
            let header_line = render(t, &Value::Object(names))?;
            let header: Vec<String> = header_line
                .trim_end_matches('\n')
                .split('\t')
                .map(String::from)
                .collect();
            let mut cells = Vec::new();
            for r in rows {
                let line = render(t, r)?;
                cells.push(
                    line.trim_end_matches('\n')
                        .split('\t')
                        .map(String::from)
                        .collect::<Vec<_>>(),
                );
            }
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            return Ok(table(&header, &cells));
        }
        let mut o = String::new();
        for r in rows {
            o.push_str(&render(f, r)?);
        }
        return Ok(o);
    }
    let cols = &columns[..shown.min(columns.len())];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|(f, _)| match &r[*f] {
                    Value::String(x) => x.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    let header: Vec<&str> = cols.iter().map(|(_, h)| *h).collect();
    Ok(table(&header, &cells))
}

/// `node ls` columns: the default table's six, then the other `--format` fields.
const NODE_COLUMNS: [(&str, &str); 8] = [
    ("ID", "ID"),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("EngineVersion", "ENGINE VERSION"),
    ("Self", ""),
    ("TLSStatus", "TLS STATUS"),
];

fn node(c: &Client, cmd: NodeCmd) -> Out {
    match cmd {
        NodeCmd::Ls(opts) => {
            let q = query_filters(&opts.filter)?;
            let mut nodes = c.get(&format!("/nodes?filters={q}")).map_err(daemon)?;
            let me = self_id(c)?;
            let list = nodes.as_array_mut().map(std::mem::take).unwrap_or_default();
            let mut rows: Vec<Value> = list.iter().map(|n| node_row(n, &me)).collect();
            rows.sort_by(|a, b| s(&a["Hostname"]).cmp(&s(&b["Hostname"])));
            if opts.quiet || opts.format.is_some() {
                return list_rows(&rows, &opts, &NODE_COLUMNS, 6, "ID");
            }
            // Docker's default column is `{{.ID}} {{if .Self}}*{{else}} {{end}}`.
            for r in rows.iter_mut() {
                let mark = if r["Self"].as_bool().unwrap_or(false) { "*" } else { " " };
                r["ID"] = json!(format!("{} {mark}", s(&r["ID"])));
            }
            list_rows(&rows, &opts, &NODE_COLUMNS, 6, "ID")
        }
        NodeCmd::Inspect(opts) => {
            let mut objs = Vec::new();
            for r in &opts.refs {
                objs.push(c.get(&format!("/nodes/{}", urlencode(r))).map_err(daemon)?);
            }
            inspect_out(&objs, &opts, node_pretty)
        }
        NodeCmd::Ps { quiet, filter, nodes } => {
            let nodes = if nodes.is_empty() {
                vec!["self".to_string()]
            } else {
                nodes
            };
            let mut filters = filter;
            for n in &nodes {
                let node = c.get(&format!("/nodes/{}", urlencode(n))).map_err(daemon)?;
                filters.push(format!("node={}", s(&node["ID"])));
            }
            tasks_table(c, &filters, quiet)
        }
        NodeCmd::Update {
            availability,
            role,
            label_add,
            label_rm,
            node,
        } => {
            let n = c.get(&format!("/nodes/{}", urlencode(&node))).map_err(daemon)?;
            let mut spec = n["Spec"].clone();
            if let Some(a) = availability {
                spec["Availability"] = json!(a);
            }
            if let Some(r) = role {
                spec["Role"] = json!(r);
            }
            let mut labels = spec["Labels"].as_object().cloned().unwrap_or_default();
            for l in label_add {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                labels.insert(k.to_string(), json!(v));
            }
            for k in label_rm {
                labels.remove(&k);
            }
            spec["Labels"] = Value::Object(labels);
            let v = n["Version"]["Index"].as_u64().unwrap_or(0);
            c.post(&format!("/nodes/{}/update?version={v}", s(&n["ID"])), &spec)
                .map_err(daemon)?;
            Ok(format!("{node}\n"))
        }
        NodeCmd::Rm { .. } | NodeCmd::Promote { .. } | NodeCmd::Demote { .. } => Ok(String::new()),
    }
}

/// Sets a node's role; whether it changed.
fn set_role(c: &Client, node: &str, role: &str) -> Result<bool, ApiError> {
    let n = c.get(&format!("/nodes/{}", urlencode(node)))?;
    if n["Spec"]["Role"] == json!(role) {
        return Ok(false);
    }
    let mut spec = n["Spec"].clone();
    spec["Role"] = json!(role);
    let v = n["Version"]["Index"].as_u64().unwrap_or(0);
    c.post(&format!("/nodes/{}/update?version={v}", s(&n["ID"])), &spec)?;
    Ok(true)
}

/// Go's `time.Time.String()` for an RFC 3339 timestamp, lowercased as docker's pretty view prints it.
fn go_time(ts: &str) -> String {
    match ts.parse::<chrono::DateTime<chrono::Utc>>() {
        Ok(t) => {
            let nanos = t.timestamp_subsec_nanos();
            let frac = if nanos == 0 {
                String::new()
            } else {
                format!(".{:09}", nanos).trim_end_matches('0').to_string()
            };
            format!("{}{} +0000 utc", t.format("%Y-%m-%d %H:%M:%S"), frac)
        }
        Err(_) => ts.to_string(),
    }
}

fn node_pretty(n: &Value) -> String {
    let mut o = String::new();
    let d = &n["Description"];
    let _ = writeln!(o, "ID:\t\t\t{}", s(&n["ID"]));
    if !s(&n["Spec"]["Name"]).is_empty() {
        let _ = writeln!(o, "Name:\t\t\t{}", s(&n["Spec"]["Name"]));
    }
    if let Some(l) = n["Spec"]["Labels"].as_object().filter(|l| !l.is_empty()) {
        let _ = writeln!(o, "Labels:");
        for (k, v) in l {
            let _ = writeln!(o, " - {k}={}", s(v));
        }
    }
    let _ = writeln!(o, "Hostname:              \t{}", s(&d["Hostname"]));
    let _ = writeln!(o, "Joined at:             \t{}", go_time(&s(&n["CreatedAt"])));
    let _ = writeln!(o, "Status:");
    let _ = writeln!(o, " State:\t\t\t{}", cap(&s(&n["Status"]["State"])));
    if !s(&n["Status"]["Message"]).is_empty() {
        let _ = writeln!(o, " Message:              \t{}", s(&n["Status"]["Message"]));
    }
    let _ = writeln!(o, " Availability:         \t{}", cap(&s(&n["Spec"]["Availability"])));
    if !s(&n["Status"]["Addr"]).is_empty() {
        let _ = writeln!(o, " Address:\t\t{}", s(&n["Status"]["Addr"]));
    }
    let ms = &n["ManagerStatus"];
    if !ms.is_null() {
        let _ = writeln!(o, "Manager Status:");
        let _ = writeln!(o, " Address:\t\t{}", s(&ms["Addr"]));
        let _ = writeln!(o, " Raft Status:\t\t{}", cap(&s(&ms["Reachability"])));
        let leader = if ms["Leader"].as_bool().unwrap_or(false) {
            "Yes"
        } else {
            "No"
        };
        let _ = writeln!(o, " Leader:\t\t{leader}");
    }
    let _ = writeln!(o, "Platform:");
    let _ = writeln!(o, " Operating System:\t{}", s(&d["Platform"]["OS"]));
    let _ = writeln!(o, " Architecture:\t\t{}", s(&d["Platform"]["Architecture"]));
    let _ = writeln!(o, "Resources:");
    let cpus = d["Resources"]["NanoCPUs"].as_i64().unwrap_or(0) / 1_000_000_000;
    let _ = writeln!(o, " CPUs:\t\t\t{cpus}");
    let _ = writeln!(
        o,
        " Memory:\t\t{}",
        bytes_size(d["Resources"]["MemoryBytes"].as_i64().unwrap_or(0))
    );
    if let Some(plugins) = d["Engine"]["Plugins"].as_array().filter(|p| !p.is_empty()) {
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in plugins {
            by_type.entry(s(&p["Type"])).or_default().push(s(&p["Name"]));
        }
        let _ = writeln!(o, "Plugins:");
        for (t, names) in by_type {
            let _ = writeln!(o, " {t}:\t\t{}", names.join(", "));
        }
    }
    let _ = writeln!(o, "Engine Version:\t\t{}", s(&d["Engine"]["EngineVersion"]));
    let tls = &d["TLSInfo"];
    if !tls.is_null() {
        let _ = writeln!(o, "TLS Info:");
        let _ = writeln!(o, " TrustRoot:\n{}", s(&tls["TrustRoot"]));
        let _ = writeln!(o, " Issuer Subject:\t{}", s(&tls["CertIssuerSubject"]));
        let _ = writeln!(o, " Issuer Public Key:\t{}", s(&tls["CertIssuerPublicKey"]));
    }
    o
}

/// JSON (docker's 4-space indented array), `--format` per object, or `--pretty`.
fn inspect_out(objs: &[Value], opts: &InspectOpts, pretty: fn(&Value) -> String) -> Out {
    if let Some(f) = &opts.format {
        let mut o = String::new();
        for obj in objs {
            o.push_str(&render(f, obj)?);
        }
        return Ok(o);
    }
    if opts.pretty {
        return Ok(objs.iter().map(pretty).collect::<Vec<_>>().join("\n\n"));
    }
    Ok(indent_json(&Value::Array(objs.to_vec())))
}

fn indent_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8_lossy(&buf).into_owned() + "\n"
}

// ---------------------------------------------------------------- services

fn ports_of(svc: &Value) -> String {
    svc["Endpoint"]["Ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["PublishMode"] != json!("host"))
                .map(|p| {
                    format!(
                        "*:{}->{}/{}",
                        p["PublishedPort"],
                        p["TargetPort"],
                        p["Protocol"].as_str().unwrap_or("tcp")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn service_row(svc: &Value) -> Value {
    let spec = &svc["Spec"];
    let global = !spec["Mode"]["Global"].is_null();
    let st = &svc["ServiceStatus"];
    json!({
        "ID": short(&s(&svc["ID"])),
        "Name": s(&spec["Name"]),
        "Mode": if global { "global" } else { "replicated" },
        "Replicas": format!("{}/{}", st["RunningTasks"].as_u64().unwrap_or(0), st["DesiredTasks"].as_u64().unwrap_or(0)),
        "Image": image_name(&s(&spec["TaskTemplate"]["ContainerSpec"]["Image"])),
        "Ports": ports_of(svc),
    })
}

fn parse_kv_list(list: &[String]) -> serde_json::Map<String, Value> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            (k.to_string(), json!(v))
        })
        .collect()
}

/// Applies the shared create/update flags to a spec.
fn apply_spec_opts(c: &Client, spec: &mut Value, o: &SpecOpts, create: bool) -> Result<(), String> {
    if let Some(r) = o.replicas {
        if spec["Mode"]["Global"].is_object() {
            return Err("replicas can only be used with replicated or replicated-job mode".into());
        }
        spec["Mode"] = json!({"Replicated": {"Replicas": r}});
    }
    let cs = &mut spec["TaskTemplate"]["ContainerSpec"];
    if create && !o.env.is_empty() {
        cs["Env"] = json!(o.env);
    }
    if !o.mount.is_empty() {
        let mut mounts = Vec::new();
        for m in &o.mount {
            mounts.push(parse_mount(m)?);
        }
        cs["Mounts"] = json!(mounts);
    }
    if let Some(h) = &o.hostname {
        cs["Hostname"] = json!(h);
    }
    if create && !o.container_label.is_empty() {
        cs["Labels"] = Value::Object(parse_kv_list(&o.container_label));
    }
    if let Some(d) = &o.stop_grace_period {
        cs["StopGracePeriod"] = json!(parse_duration(d)?);
    }
    if !o.dns.is_empty() {
        cs["DNSConfig"]["Nameservers"] = json!(o.dns);
    }
    if let Some(w) = &o.workdir {
        cs["Dir"] = json!(w);
    }
    if let Some(u) = &o.user {
        cs["User"] = json!(u);
    }
    if create && !o.label.is_empty() {
        spec["Labels"] = Value::Object(parse_kv_list(&o.label));
    }
    if create && !o.constraint.is_empty() {
        spec["TaskTemplate"]["Placement"]["Constraints"] = json!(o.constraint);
    }
    if let Some(m) = &o.limit_memory {
        spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] = json!(parse_bytes(m)?);
    }
    if let Some(cpu) = o.limit_cpu {
        spec["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"] = json!((cpu * 1e9) as i64);
    }
    if let Some(m) = &o.reserve_memory {
        spec["TaskTemplate"]["Resources"]["Reservations"]["MemoryBytes"] = json!(parse_bytes(m)?);
    }
    if let Some(cpu) = o.reserve_cpu {
        spec["TaskTemplate"]["Resources"]["Reservations"]["NanoCPUs"] = json!((cpu * 1e9) as i64);
    }
    if let Some(rc) = &o.restart_condition {
        spec["TaskTemplate"]["RestartPolicy"]["Condition"] = json!(rc);
    }
    if let Some(d) = &o.restart_delay {
        spec["TaskTemplate"]["RestartPolicy"]["Delay"] = json!(parse_duration(d)?);
    }
    if let Some(n) = o.restart_max_attempts {
        spec["TaskTemplate"]["RestartPolicy"]["MaxAttempts"] = json!(n);
    }
    if let Some(d) = &o.restart_window {
        spec["TaskTemplate"]["RestartPolicy"]["Window"] = json!(parse_duration(d)?);
    }
    if let Some(a) = &o.update_failure_action {
        spec["UpdateConfig"]["FailureAction"] = json!(a);
    }
    if let Some(a) = &o.update_order {
        spec["UpdateConfig"]["Order"] = json!(a);
    }
    if let Some(d) = &o.update_monitor {
        spec["UpdateConfig"]["Monitor"] = json!(parse_duration(d)?);
    }
    if let Some(p) = o.rollback_parallelism {
        spec["RollbackConfig"]["Parallelism"] = json!(p);
    }
    if let Some(a) = &o.rollback_order {
        spec["RollbackConfig"]["Order"] = json!(a);
    }
    if let Some(m) = &o.endpoint_mode {
        spec["EndpointSpec"]["Mode"] = json!(m);
    }
    if let Some(n) = o.replicas_max_per_node {
        spec["TaskTemplate"]["Placement"]["MaxReplicas"] = json!(n);
    }
    if let Some(d) = &o.update_delay {
        spec["UpdateConfig"]["Delay"] = json!(parse_duration(d)?);
    }
    if let Some(p) = o.update_parallelism {
        spec["UpdateConfig"]["Parallelism"] = json!(p);
    }
    if !o.network.is_empty() {
        let mut nets = Vec::new();
        for n in &o.network {
            let net = c.get(&format!("/networks/{}", urlencode(n))).map_err(daemon)?;
            nets.push(json!({"Target": s(&net["Id"])}));
        }
        spec["TaskTemplate"]["Networks"] = json!(nets);
    }
    if !o.publish.is_empty() {
        let mut ports = Vec::new();
        for p in &o.publish {
            let (pp, rest) = p
                .split_once(':')
                .ok_or_else(|| format!("invalid port {p:?}: want PUBLISHED:TARGET"))?;
            let (tp, proto) = rest.split_once('/').unwrap_or((rest, "tcp"));
            let pp: u32 = pp.parse().map_err(|_| format!("invalid published port {pp:?}"))?;
            let tp: u32 = tp.parse().map_err(|_| format!("invalid target port {tp:?}"))?;
            ports.push(json!({"Protocol": proto, "TargetPort": tp, "PublishedPort": pp, "PublishMode": "ingress"}));
        }
        spec["EndpointSpec"]["Ports"] = json!(ports);
    }
    Ok(())
}

/// Parses docker's `--mount` syntax into a `Mount`.
fn parse_mount(spec: &str) -> Result<Value, String> {
    let mut m = json!({"Type": "volume"});
    let mut driver: Option<String> = None;
    let mut opts = serde_json::Map::new();
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => m["Type"] = json!(v),
            "source" | "src" => m["Source"] = json!(v),
            "target" | "dst" | "destination" => m["Target"] = json!(v),
            "readonly" | "ro" => {
                if v.is_empty() || v == "1" || v == "true" {
                    m["ReadOnly"] = json!(true);
                }
            }
            "volume-driver" => driver = Some(v.to_string()),
            "volume-opt" => {
                let (ok, ov) = v.split_once('=').unwrap_or((v, ""));
                opts.insert(ok.to_string(), json!(ov));
            }
            _ => {
                return Err(format!(
                    "invalid argument \"{spec}\" for \"--mount\" flag: unexpected key '{k}'"
                ))
            }
        }
    }
    if m["Target"].is_null() {
        return Err(format!(
            "invalid argument \"{spec}\" for \"--mount\" flag: target is required"
        ));
    }
    if driver.is_some() || !opts.is_empty() {
        let mut dc = json!({"Name": driver.unwrap_or_default()});
        if !opts.is_empty() {
            dc["Options"] = Value::Object(opts);
        }
        m["VolumeOptions"] = json!({"DriverConfig": dc});
    }
    Ok(m)
}

fn service(c: &Client, cmd: ServiceCmd) -> Out {
    match cmd {
        ServiceCmd::Create {
            name,
            mode,
            spec: opts,
            image,
            args,
            ..
        } => {
            let mode = match mode.as_str() {
                "replicated" => json!({"Replicated": {}}),
                "global" => json!({"Global": {}}),
                other => return Err(format!("Unknown mode: {other}, only replicated and global supported")),
            };
            // What the docker CLI sends: the image with its default tag, Init and
            // empty Resources and Placement, so both CLIs store the same spec.
            let mut spec = json!({
                "Name": name,
                "TaskTemplate": {
                    "ContainerSpec": {"Image": tagged(&image), "Init": false},
                    "Resources": {"Limits": {}, "Reservations": {}},
                    "Placement": {},
                },
                "Mode": mode,
            });
            if !args.is_empty() {
                spec["TaskTemplate"]["ContainerSpec"]["Args"] = json!(args);
            }
            apply_spec_opts(c, &mut spec, &opts, true)?;
            let r = c.post("/services/create", &spec).map_err(daemon)?;
            Ok(format!("{}\n", s(&r["ID"])))
        }
        ServiceCmd::Ls(opts) => {
            let q = query_filters(&opts.filter)?;
            let list = c.get(&format!("/services?status=true&filters={q}")).map_err(daemon)?;
            let mut rows: Vec<Value> = list.as_array().into_iter().flatten().map(service_row).collect();
            rows.sort_by(|a, b| s(&a["Name"]).cmp(&s(&b["Name"])));
            let columns = [
                ("ID", "ID"),
                ("Name", "NAME"),
                ("Mode", "MODE"),
                ("Replicas", "REPLICAS"),
                ("Image", "IMAGE"),
                ("Ports", "PORTS"),
            ];
            list_rows(&rows, &opts, &columns, 6, "ID")
        }
        ServiceCmd::Ps {
            quiet,
            filter,
            services,
        } => {
            let mut filters = filter;
            for sv in &services {
                let svc = c.get(&format!("/services/{}", urlencode(sv))).map_err(|e| match e {
                    ApiError::Daemon { status: 404, .. } => format!("no such service: {sv}"),
                    other => other.to_string(),
                })?;
                filters.push(format!("service={}", s(&svc["ID"])));
            }
            tasks_table(c, &filters, quiet)
        }
        ServiceCmd::Inspect(opts) => {
            let mut objs = Vec::new();
            for r in &opts.refs {
                let svc = c.get(&format!("/services/{}", urlencode(r))).map_err(|e| match e {
                    ApiError::Daemon { status: 404, .. } => format!("Error: no such service: {r}"),
                    other => other.to_string(),
                })?;
                objs.push(svc);
            }
            if opts.pretty {
                let mut names = BTreeMap::new();
                if let Ok(Value::Array(nets)) = c.get("/networks") {
                    for n in nets {
                        names.insert(s(&n["Id"]), s(&n["Name"]));
                    }
                }
                return Ok(objs
                    .iter()
                    .map(|o| service_pretty(o, &names))
                    .collect::<Vec<_>>()
                    .join(""));
            }
            inspect_out(&objs, &opts, |_| String::new())
        }
        ServiceCmd::Update {
            image,
            env_add,
            env_rm,
            constraint_add,
            constraint_rm,
            label_add,
            label_rm,
            rollback,
            force,
            spec: opts,
            service,
            ..
        } => {
            let svc = c.get(&format!("/services/{}", urlencode(&service))).map_err(daemon)?;
            let id = s(&svc["ID"]);
            let v = svc["Version"]["Index"].as_u64().unwrap_or(0);
            if rollback {
                c.post(
                    &format!("/services/{id}/update?version={v}&rollback=previous"),
                    &svc["Spec"],
                )
                .map_err(daemon)?;
                return Ok(format!("{service}\n"));
            }
            let mut spec = svc["Spec"].clone();
            if let Some(i) = image {
                spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(i);
            }
            let mut env: Vec<String> = spec["TaskTemplate"]["ContainerSpec"]["Env"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            for k in &env_rm {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
            }
            for kv in &env_add {
                let k = kv.split('=').next().unwrap_or_default();
                env.retain(|e| e.split('=').next() != Some(k));
                env.push(kv.clone());
            }
            if !env.is_empty() || !env_rm.is_empty() {
                spec["TaskTemplate"]["ContainerSpec"]["Env"] = json!(env);
            }
            let mut cons: Vec<String> = spec["TaskTemplate"]["Placement"]["Constraints"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            cons.retain(|x| !constraint_rm.contains(x));
            for x in constraint_add {
                if !cons.contains(&x) {
                    cons.push(x);
                }
            }
            if !cons.is_empty() || !constraint_rm.is_empty() {
                spec["TaskTemplate"]["Placement"]["Constraints"] = json!(cons);
            }
            let mut labels = spec["Labels"].as_object().cloned().unwrap_or_default();
            labels.extend(parse_kv_list(&label_add));
            for k in label_rm {
                labels.remove(&k);
            }
            spec["Labels"] = Value::Object(labels);
            if force {
                let n = spec["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0);
                spec["TaskTemplate"]["ForceUpdate"] = json!(n + 1);
            }
            apply_spec_opts(c, &mut spec, &opts, false)?;
            c.post(&format!("/services/{id}/update?version={v}"), &spec)
                .map_err(daemon)?;
            Ok(format!("{service}\n"))
        }
        ServiceCmd::Rm { .. } | ServiceCmd::Scale { .. } => Ok(String::new()),
    }
}

fn scale(c: &Client, scales: &[String]) -> (String, Option<String>) {
    let mut out = String::new();
    let mut errs = Vec::new();
    for sc in scales {
        let Some((name, n)) = sc.split_once('=') else {
            errs.push(format!(
                "invalid scale specifier '{sc}'.\nSee 'shoal service scale --help'."
            ));
            continue;
        };
        let Ok(n) = n.parse::<u64>() else {
            errs.push(format!("invalid replicas value {n}: must be a non-negative integer"));
            continue;
        };
        let r = (|| -> Result<(), String> {
            let svc = c.get(&format!("/services/{}", urlencode(name))).map_err(daemon)?;
            if svc["Spec"]["Mode"]["Replicated"].is_null() {
                return Err("scale can only be used with replicated or replicated-job mode".to_string());
            }
            let mut spec = svc["Spec"].clone();
            spec["Mode"]["Replicated"]["Replicas"] = json!(n);
            let v = svc["Version"]["Index"].as_u64().unwrap_or(0);
            c.post(&format!("/services/{}/update?version={v}", s(&svc["ID"])), &spec)
                .map_err(daemon)?;
            Ok(())
        })();
        match r {
            Ok(()) => {
                let _ = writeln!(out, "{name} scaled to {n}");
            }
            Err(e) => errs.push(format!("{name}: {e}")),
        }
    }
    (out, (!errs.is_empty()).then(|| errs.join("\n")))
}

fn service_pretty(svc: &Value, net_names: &BTreeMap<String, String>) -> String {
    let spec = &svc["Spec"];
    let tt = &spec["TaskTemplate"];
    let cs = &tt["ContainerSpec"];
    let mut o = String::from("\n");
    let _ = writeln!(o, "ID:\t\t{}", s(&svc["ID"]));
    let _ = writeln!(o, "Name:\t\t{}", s(&spec["Name"]));
    if let Some(l) = spec["Labels"].as_object().filter(|l| !l.is_empty()) {
        let _ = writeln!(o, "Labels:");
        for (k, v) in l {
            let _ = writeln!(o, " {k}={}", s(v));
        }
    }
    if spec["Mode"]["Global"].is_object() {
        let _ = writeln!(o, "Service Mode:\tGlobal");
    } else {
        let _ = writeln!(o, "Service Mode:\tReplicated");
        let _ = writeln!(
            o,
            " Replicas:\t{}",
            spec["Mode"]["Replicated"]["Replicas"].as_u64().unwrap_or(1)
        );
    }
    let _ = writeln!(o, "Placement:");
    if let Some(c) = tt["Placement"]["Constraints"].as_array().filter(|c| !c.is_empty()) {
        let list: Vec<String> = c.iter().map(s).collect();
        let _ = writeln!(o, " Constraints:\t[{}]", list.join(" "));
    }
    if let Some(n) = tt["Placement"]["MaxReplicas"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(o, " Max Replicas Per Node:   {n}");
    }
    for (key, title, order) in [
        ("UpdateConfig", "UpdateConfig", "Update order:      "),
        ("RollbackConfig", "RollbackConfig", "Rollback order:    "),
    ] {
        let u = &spec[key];
        if u.is_null() {
            continue;
        }
        let _ = writeln!(o, "{title}:");
        let _ = writeln!(o, " Parallelism:\t{}", u["Parallelism"].as_u64().unwrap_or(0));
        if let Some(d) = u["Delay"].as_i64().filter(|d| *d > 0) {
            let _ = writeln!(o, " Delay:\t\t{}", go_duration(d));
        }
        let _ = writeln!(o, " On failure:\t{}", s(&u["FailureAction"]));
        if let Some(m) = u["Monitor"].as_i64() {
            let _ = writeln!(o, " Monitoring Period: {}", go_duration(m));
        }
        let _ = writeln!(
            o,
            " Max failure ratio: {}",
            u["MaxFailureRatio"].as_f64().unwrap_or(0.0)
        );
        let _ = writeln!(o, " {order}{}", s(&u["Order"]));
    }
    let _ = writeln!(o, "ContainerSpec:");
    let _ = writeln!(o, " Image:\t\t{}", s(&cs["Image"]));
    for (key, label) in [("Command", "Command"), ("Args", "Args"), ("Env", "Env")] {
        if let Some(a) = cs[key].as_array().filter(|a| !a.is_empty()) {
            let joined: String = a.iter().map(|x| s(x) + " ").collect();
            let _ = writeln!(o, " {label}:\t\t{joined}");
        }
    }
    if !s(&cs["Dir"]).is_empty() {
        let _ = writeln!(o, " Dir:\t\t{}", s(&cs["Dir"]));
    }
    if let Some(init) = cs["Init"].as_bool() {
        let _ = writeln!(o, " Init:\t\t{init}");
    }
    if !s(&cs["User"]).is_empty() {
        let _ = writeln!(o, " User: {}", s(&cs["User"]));
    }
    if let Some(mounts) = cs["Mounts"].as_array().filter(|m| !m.is_empty()) {
        let _ = writeln!(o, "Mounts:");
        for m in mounts {
            let _ = writeln!(o, " Target:\t{}", s(&m["Target"]));
            let _ = writeln!(o, "  Source:\t{}", s(&m["Source"]));
            let _ = writeln!(o, "  ReadOnly:\t{}", m["ReadOnly"].as_bool().unwrap_or(false));
            let _ = writeln!(o, "  Type:\t\t{}", s(&m["Type"]));
        }
    }
    if tt["Resources"].is_object() {
        let _ = writeln!(o, "Resources:");
    }
    for (key, title) in [("Reservations", "Reservations"), ("Limits", "Limits")] {
        let r = &tt["Resources"][key];
        let cpu = r["NanoCPUs"].as_i64().unwrap_or(0);
        let mem = r["MemoryBytes"].as_i64().unwrap_or(0);
        if cpu == 0 && mem == 0 {
            continue;
        }
        let _ = writeln!(o, " {title}:");
        if cpu != 0 {
            let _ = writeln!(o, "  CPU:\t\t{}", cpu as f64 / 1e9);
        }
        if mem != 0 {
            let _ = writeln!(o, "  Memory:\t{}", bytes_size(mem));
        }
    }
    if let Some(nets) = tt["Networks"].as_array().filter(|n| !n.is_empty()) {
        let names: String = nets
            .iter()
            .map(|n| {
                let t = s(&n["Target"]);
                net_names.get(&t).cloned().unwrap_or(t) + " "
            })
            .collect();
        let _ = writeln!(o, "Networks: {names}");
    }
    let _ = writeln!(o, "Endpoint Mode:\t{}", s(&spec["EndpointSpec"]["Mode"]));
    if let Some(ports) = svc["Endpoint"]["Ports"].as_array().filter(|p| !p.is_empty()) {
        let _ = writeln!(o, "Ports:");
        for p in ports {
            let _ = writeln!(o, " PublishedPort = {}", p["PublishedPort"]);
            let _ = writeln!(o, "  Protocol = {}", s(&p["Protocol"]));
            let _ = writeln!(o, "  TargetPort = {}", p["TargetPort"]);
            let _ = writeln!(o, "  PublishMode = {}", s(&p["PublishMode"]));
        }
    }
    o.push('\n');
    o
}

/// `service ps` / `node ps`: the tasks table, newest first within a slot,
/// older tasks of a slot shown as ` \_ name`.
fn tasks_table(c: &Client, filters: &[String], quiet: bool) -> Out {
    let q = query_filters(filters)?;
    let tasks = c.get(&format!("/tasks?filters={q}")).map_err(daemon)?;
    let services = c.get("/services").map_err(daemon)?;
    let nodes = c.get("/nodes").map_err(daemon)?;
    let svc_name: BTreeMap<String, String> = services
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (s(&x["ID"]), s(&x["Spec"]["Name"])))
        .collect();
    let host: BTreeMap<String, String> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (s(&x["ID"]), s(&x["Description"]["Hostname"])))
        .collect();
    let mut list: Vec<&Value> = tasks.as_array().into_iter().flatten().collect();
    let name_of = |t: &Value| {
        let svc = svc_name.get(&s(&t["ServiceID"])).cloned().unwrap_or_default();
        match t["Slot"].as_u64() {
            Some(slot) => format!("{svc}.{slot}"),
            None => format!("{svc}.{}", s(&t["NodeID"])),
        }
    };
    list.sort_by(|a, b| {
        name_of(a)
            .cmp(&name_of(b))
            .then_with(|| s(&b["Status"]["Timestamp"]).cmp(&s(&a["Status"]["Timestamp"])))
    });
    if quiet {
        return Ok(list.iter().map(|t| s(&t["ID"]) + "\n").collect());
    }
    let mut rows = Vec::new();
    let mut prev = String::new();
    for t in list {
        let name = name_of(t);
        let shown = if name == prev {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        prev = name;
        let err = s(&t["Status"]["Err"]);
        rows.push(vec![
            short(&s(&t["ID"])),
            shown,
            image_name(&s(&t["Spec"]["ContainerSpec"]["Image"])),
            host.get(&s(&t["NodeID"])).cloned().unwrap_or_default(),
            cap(&s(&t["DesiredState"])),
            format!(
                "{} {}",
                cap(&s(&t["Status"]["State"])),
                ago(&s(&t["Status"]["Timestamp"]))
            ),
            if err.is_empty() {
                String::new()
            } else {
                format!("\"{err}\"")
            },
            String::new(),
        ]);
    }
    Ok(table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ],
        &rows,
    ))
}

// ---------------------------------------------------------------- networks

fn network(c: &Client, cmd: NetworkCmd) -> Out {
    match cmd {
        NetworkCmd::Create {
            driver,
            attachable,
            internal,
            label,
            subnet,
            gateway,
            opt,
            name,
        } => {
            let configs: Vec<Value> = subnet
                .iter()
                .enumerate()
                .map(|(i, sn)| {
                    let mut m = json!({"Subnet": sn});
                    if let Some(g) = gateway.get(i) {
                        m["Gateway"] = json!(g);
                    }
                    m
                })
                .collect();
            let body = json!({
                "Name": name, "Driver": driver, "Scope": "swarm", "Attachable": attachable, "Internal": internal,
                "Labels": parse_kv_list(&label), "Options": parse_kv_list(&opt),
                "IPAM": {"Driver": "default", "Config": configs},
            });
            let r = c.post("/networks/create", &body).map_err(daemon)?;
            Ok(format!("{}\n", s(&r["Id"])))
        }
        NetworkCmd::Ls(opts) => {
            let q = query_filters(&opts.filter)?;
            let list = c.get(&format!("/networks?filters={q}")).map_err(daemon)?;
            let mut rows: Vec<Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    json!({"ID": short(&s(&n["Id"])), "Name": s(&n["Name"]), "Driver": s(&n["Driver"]),
                           "Scope": s(&n["Scope"])})
                })
                .collect();
            rows.sort_by(|a, b| s(&a["Name"]).cmp(&s(&b["Name"])));
            let columns = [
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
            ];
            list_rows(&rows, &opts, &columns, 4, "ID")
        }
        NetworkCmd::Inspect { format, refs } => {
            let mut objs = Vec::new();
            for r in &refs {
                objs.push(
                    c.get(&format!("/networks/{}?scope=swarm", urlencode(r)))
                        .map_err(daemon)?,
                );
            }
            let opts = InspectOpts {
                pretty: false,
                format,
                refs,
            };
            inspect_out(&objs, &opts, |_| String::new())
        }
        NetworkCmd::Rm { .. } => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_encode_like_docker_and_flags_parse() {
        let q = query_filters(&["name=web".into(), "label=a=b".into()]).unwrap();
        assert_eq!(
            q,
            urlencode(r#"{"label":{"a=b":true},"name":{"web":true}}"#),
            "docker's map encoding"
        );
        assert!(query_filters(&["bogus".into()]).is_err());
        let cli = Cli::try_parse_from([
            "shoal", "service", "create", "-d", "--name", "w", "busybox", "ping", "-c", "1",
        ])
        .unwrap();
        match cli.cmd {
            Cmd::Service(svc) => {
                let ServiceCmd::Create { name, image, args, .. } = *svc else {
                    panic!("not a create")
                };
                assert_eq!((name.as_str(), image.as_str()), ("w", "busybox"));
                assert_eq!(args, ["ping", "-c", "1"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(image_name("busybox:1@sha256:abc"), "busybox:1");
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(tagged("reg:5000/busybox"), "reg:5000/busybox:latest");
        assert_eq!(tagged("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            go_time("2026-11-29T21:16:37.240469900Z"),
            "2026-11-29 21:16:37.2404699 +0000 utc"
        );
    }
}
