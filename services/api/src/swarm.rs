//! `/_ping`, `/version`, `/info` and the `/swarm` endpoints.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use shoal_shared::id::new_id;
use shoal_shared::model::{
    Availability, Cluster, JoinTokens, Network, NetworkSpec, Node, NodeRole, NodeState, NodeStatus, SwarmSpec, TlsInfo,
    DEFAULTS,
};
use shoal_shared::store::{Kind, ListFilter, Op, StoreObject, TxRequest};

use crate::engine::{self, Engine};
use crate::error::{ApiError, ApiResult, ALREADY_IN_SWARM, NOT_IN_SWARM};
use crate::request::{flag, parse_version, Body, Query};
use crate::spec::decode;
use crate::state::{AppState, SwarmView, API_VERSION, MIN_API_VERSION};
use crate::{certs, host};

pub async fn ping(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let swarm = state.ping_swarm_header().await;
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("Api-Version", API_VERSION))
        .insert_header(("Ostype", "linux"))
        .insert_header(("Docker-Experimental", "false"))
        .insert_header(("Swarm", swarm))
        .insert_header(("Cache-Control", "no-cache, no-store, must-revalidate"))
        .insert_header(("Pragma", "no-cache"))
        .content_type("text/plain; charset=utf-8");
    if req.method() == actix_web::http::Method::HEAD {
        resp.finish()
    } else {
        resp.body("OK")
    }
}

/// Go's name for this architecture (`amd64`, `arm64`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `GET /version`: shoal's own, with the host engine's components after
/// it (as dockerd lists containerd and runc after itself).
pub async fn version(engine: web::Data<Engine>) -> HttpResponse {
    let mut v = own_version();
    if let Some(e) = engine::optional_json(&engine, "/version").await {
        let mut extra: Vec<Value> = Vec::new();
        extra.push(
            json!({"Name": "Docker Engine", "Version": e.get("Version").cloned().unwrap_or(Value::Null),
            "Details": {"ApiVersion": e.get("ApiVersion"), "MinAPIVersion": e.get("MinAPIVersion"),
                "GitCommit": e.get("GitCommit"), "GoVersion": e.get("GoVersion"), "Os": e.get("Os"),
                "Arch": e.get("Arch"), "KernelVersion": e.get("KernelVersion")}}),
        );
        if let Some(cs) = e.get("Components").and_then(Value::as_array) {
            extra.extend(
                cs.iter()
                    .filter(|c| c.get("Name").and_then(Value::as_str) != Some("Engine"))
                    .cloned(),
            );
        }
        if let Some(cs) = v.get_mut("Components").and_then(Value::as_array_mut) {
            cs.extend(extra);
        }
    }
    HttpResponse::Ok().json(v)
}

fn own_version() -> Value {
    let v = env!("CARGO_PKG_VERSION");
    json!({
        "Platform": {"Name": "shoal"},
        "Components": [{"Name": "Engine", "Version": v, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": go_arch(),
            "KernelVersion": kernel_version()}}],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": ""
    })
}

/// The cluster as `/info` shows it (no join tokens).
fn cluster_info(c: &Cluster) -> Value {
    let mut v = serde_json::to_value(c.public()).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("JoinTokens");
    }
    v
}

/// `GET /info`: the host engine's answer (containers, images, drivers,
/// runtimes, ...) with shoal's `ID` and `Swarm`, as dockerd answers on a
/// manager; shoal's own description of the host when there is no engine.
pub async fn info(state: web::Data<AppState>, engine: web::Data<Engine>) -> ApiResult<HttpResponse> {
    let own = own_info(&state).await?;
    let Some(Value::Object(mut merged)) = engine::optional_json(&engine, "/info").await else {
        return Ok(HttpResponse::Ok().json(own));
    };
    for key in ["ID", "Swarm"] {
        if let Some(v) = own.get(key) {
            merged.insert(key.to_string(), v.clone());
        }
    }
    if let Some(Value::Array(nets)) = merged.get_mut("Plugins").and_then(|p| p.get_mut("Network")) {
        if !nets.iter().any(|n| n == "overlay") {
            nets.push(json!("overlay"));
        }
    }
    Ok(HttpResponse::Ok().json(Value::Object(merged)))
}

async fn own_info(state: &AppState) -> ApiResult<Value> {
    let mut swarm = json!({
        "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
        "Error": "", "RemoteManagers": null
    });
    match state.view().await {
        Ok(SwarmView::Inactive) => {}
        Ok(SwarmView::Active { manager: true, .. }) if state.keys.locked() => {
            swarm["NodeID"] = json!(state.node_id);
            swarm["LocalNodeState"] = json!("locked");
            swarm["Error"] = json!(crate::autolock::SWARM_LOCKED);
        }
        Ok(SwarmView::Active { cluster, node, manager }) => {
            swarm["NodeID"] = json!(state.node_id);
            swarm["NodeAddr"] = json!(node
                .as_ref()
                .map(|n| n.status.addr.clone())
                .unwrap_or_else(|| state.advertise_addr.clone()));
            swarm["LocalNodeState"] = json!("active");
            swarm["ControlAvailable"] = json!(manager);
            let nodes: Vec<Node> = state.store()?.list(ListFilter::default()).await?;
            let managers: Vec<&Node> = nodes.iter().filter(|n| n.is_manager()).collect();
            swarm["RemoteManagers"] = json!(managers
                .iter()
                .map(|n| json!({
                    "NodeID": n.meta.id,
                    "Addr": n.manager_status.as_ref().map(|m| m.addr.clone()).unwrap_or_default()
                }))
                .collect::<Vec<_>>());
            if manager {
                swarm["Nodes"] = json!(nodes.len());
                swarm["Managers"] = json!(managers.len());
                swarm["Cluster"] = cluster_info(&cluster);
            }
        }
        Err(e) => {
            swarm["LocalNodeState"] = json!("error");
            swarm["Error"] = json!(e.message);
        }
    }
    Ok(json!({
        "ID": state.node_id,
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0, "Images": 0,
        "Driver": "", "DriverStatus": [], "Plugins": {"Volume": [], "Network": ["overlay"], "Authorization": null,
        "Log": []},
        "MemoryLimit": false, "SwapLimit": false, "CpuCfsPeriod": false, "CpuCfsQuota": false, "CPUShares": false,
        "CPUSet": false, "PidsLimit": false, "IPv4Forwarding": true, "Debug": false, "NFd": 0,
        "OomKillDisable": false, "NGoroutines": 0, "SystemTime": chrono::Utc::now().to_rfc3339(),
        "LoggingDriver": "", "CgroupDriver": "", "CgroupVersion": "", "NEventsListener": 0,
        "KernelVersion": kernel_version(), "OperatingSystem": "shoal", "OSVersion": "", "OSType": "linux",
        "Architecture": std::env::consts::ARCH, "IndexServerAddress": "", "RegistryConfig": null,
        "NCPU": host::cpus(), "MemTotal": host::memory_bytes(), "DockerRootDir": state.data_dir,
        "Name": host::hostname(), "Labels": [], "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"), "Runtimes": {}, "DefaultRuntime": "",
        "Swarm": swarm, "LiveRestoreEnabled": false, "Isolation": "", "InitBinary": "",
        "SecurityOptions": [], "Warnings": null
    }))
}

/// `GET /swarm`.
pub async fn inspect(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let ctx = swarm_manager(&state).await?;
    Ok(HttpResponse::Ok().json(ctx.cluster.public()))
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct InitRequest {
    listen_addr: String,
    advertise_addr: String,
    #[serde(rename = "DataPathAddr")]
    _data_path_addr: String,
    data_path_port: u32,
    default_addr_pool: Vec<String>,
    force_new_cluster: bool,
    subnet_size: u32,
    availability: String,
    spec: Option<Value>,
    auto_lock_managers: bool,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct JoinRequest {
    #[serde(rename = "ListenAddr")]
    _listen_addr: String,
    advertise_addr: String,
    remote_addrs: Vec<String>,
    join_token: String,
    availability: String,
}

/// Docker's `Availability` in a request: empty means active.
fn parse_availability(s: &str) -> ApiResult<Availability> {
    match s {
        "" | "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        other => Err(ApiError::bad_request(format!(
            "Availability: invalid availability {:?} (want active, pause or drain)",
            crate::error::clip(other)
        ))),
    }
}

/// Overlays the non-zero values of `over` onto `base` (Docker treats zero as "use the default").
fn overlay(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) if bv.is_object() && v.is_object() => overlay(bv, v),
                    _ if is_zero(v) => {}
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) if !is_zero(o) => *b = o.clone(),
        _ => {}
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// The spec `base` with the request's non-zero settings applied, checked.
fn merged_spec(base: &SwarmSpec, req: Option<&Value>) -> ApiResult<SwarmSpec> {
    let mut v = serde_json::to_value(base).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(r) = req {
        overlay(&mut v, r);
    }
    let spec: SwarmSpec = serde_path_to_error::deserialize(v)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: Spec.{}: {}", e.path(), e.inner())))?;
    if spec.raft.election_tick <= spec.raft.heartbeat_tick {
        return Err(ApiError::bad_request(
            "rpc error: code = InvalidArgument desc = Spec.Raft.ElectionTick: must be greater than HeartbeatTick",
        ));
    }
    Ok(spec)
}

/// An address's IP part (`10.0.0.1:2377` -> `10.0.0.1`); `None` for an interface name or empty.
fn ip_of(addr: &str) -> Option<String> {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_string());
    }
    addr.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

/// Docker's check of `--default-addr-pool` and `--default-addr-pool-mask-length`
/// (the daemon's, behind the CLI's own): IPv4 CIDR pools, each at least as
/// wide as the subnet size, which is at most 29 (eight addresses, the
/// smallest overlay subnet).
fn validate_addr_pool(pools: &[String], size: u32) -> ApiResult<()> {
    if pools.is_empty() {
        return Ok(());
    }
    let size = if size == 0 { DEFAULTS.subnet_size } else { size };
    if size > 29 {
        return Err(ApiError::bad_request(format!("subnet size is out of range: {size}")));
    }
    for p in pools.iter().map(|p| p.trim()) {
        let bits = p
            .split_once('/')
            .filter(|(a, _)| a.parse::<std::net::Ipv4Addr>().is_ok())
            .and_then(|(_, b)| b.parse::<u32>().ok())
            .filter(|b| *b <= 32)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid base pool {}: invalid CIDR address: {}",
                    crate::error::clip(p),
                    crate::error::clip(p)
                ))
            })?;
        if size < bits {
            return Err(ApiError::bad_request(format!(
                "invalid CIDR: {p:?}. Subnet size is too small for pool: {size}"
            )));
        }
    }
    Ok(())
}

/// This host as a new Node object.
fn self_node(state: &AppState, role: NodeRole, addr: &str, availability: Availability, tls: &TlsInfo) -> Node {
    let mut node = Node::new(state.node_id.clone(), host::hostname(), role);
    node.description = host::description();
    node.description.tls_info = Some(tls.clone());
    node.spec.availability = availability;
    node.status = NodeStatus {
        state: NodeState::Ready,
        message: String::new(),
        addr: addr.to_string(),
    };
    if role == NodeRole::Manager {
        node.manager_status = Some(crate::managers::manager_status(state, addr, false));
    }
    node
}

/// `POST /swarm/init`.
pub async fn init(state: web::Data<AppState>, body: Body) -> ApiResult<HttpResponse> {
    if shoal_shared::membership::Membership::read(&state.swarm.dir).is_some() && state.swarm.nats_from_membership {
        return Err(ApiError::unavailable(ALREADY_IN_SWARM));
    }
    let r: InitRequest = decode(&body)?;
    let availability = parse_availability(&r.availability)?;
    if r.force_new_cluster && crate::managers::force_new_cluster(&state).await? {
        tracing::info!(node = %state.node_id, "swarm restored from this manager's store (--force-new-cluster)");
        return Ok(HttpResponse::Ok().json(&state.node_id));
    }
    match state.view().await? {
        SwarmView::Active { .. } => return Err(ApiError::unavailable(ALREADY_IN_SWARM)),
        SwarmView::Inactive => {}
    }
    if state.swarm.nats_from_membership {
        return Err(ApiError::unavailable(
            "this host runs no store replica (--nats-url none): it can join a swarm, not start one",
        ));
    }
    if !state.store()?.list::<Cluster>(ListFilter::default()).await?.is_empty() {
        return Err(ApiError::unavailable(
            "a swarm already exists in this store; use \"docker swarm join\" with one of its tokens",
        ));
    }
    let addr = ip_of(&r.advertise_addr)
        .or_else(|| ip_of(&r.listen_addr).filter(|ip| ip != "0.0.0.0" && ip != "::"))
        .unwrap_or_else(|| state.advertise_addr.clone());
    let mut spec = merged_spec(&SwarmSpec::default_spec(), r.spec.as_ref())?;
    spec.encryption_config.auto_lock_managers |= r.auto_lock_managers;
    let (ca_pem, ca_der, ca_key) = certs::new_root_ca().map_err(|e| ApiError::internal(format!("root CA: {e}")))?;
    let mut cluster = Cluster::new(
        new_id(),
        JoinTokens {
            worker: certs::join_token(&ca_der),
            manager: certs::join_token(&ca_der),
        },
    );
    cluster.spec = spec;
    cluster.tls_info = certs::tls_info(&ca_pem, &ca_der);
    validate_addr_pool(&r.default_addr_pool, r.subnet_size)?;
    cluster.root_ca_key = ca_key;
    if !r.default_addr_pool.is_empty() {
        cluster.default_addr_pool = r.default_addr_pool.iter().map(|p| p.trim().to_string()).collect();
    }
    if r.subnet_size > 0 {
        cluster.subnet_size = r.subnet_size;
    }
    if r.data_path_port > 0 {
        cluster.data_path_port = r.data_path_port;
    }
    if cluster.spec.encryption_config.auto_lock_managers {
        crate::autolock::new_unlock_key(&state, &mut cluster)?;
    }
    let mut node = self_node(&state, NodeRole::Manager, &addr, availability, &cluster.tls_info);
    if let Some(ms) = node.manager_status.as_mut() {
        ms.leader = true;
    }
    // This host's agent may have registered (through the dispatcher) before the
    // swarm existed: then its Node object is promoted, keeping what the agent reported.
    let existing = state.store()?.get::<Node>(&state.node_id).await?;
    let node_op = match existing {
        Some(mut n) => {
            n.spec.role = NodeRole::Manager;
            n.spec.availability = availability;
            n.manager_status = node.manager_status.clone();
            if n.status.addr.is_empty() {
                n.status.addr = addr.clone();
            }
            n.description.tls_info = node.description.tls_info.clone();
            Op::Update { record: n.to_record()? }
        }
        None => Op::Create {
            record: node.to_record()?,
        },
    };
    // `ingress` asks for no subnet: the scheduler's allocator gives it the
    // first one of the default address pool (10.0.0.0/24 by default), as
    // Swarm's allocator does.
    let mut ingress = NetworkSpec::overlay("ingress");
    ingress.ingress = true;
    ingress.labels.clear();
    let ops = vec![
        Op::Create {
            record: cluster.to_record()?,
        },
        node_op,
        Op::Create {
            record: Network::new(new_id(), ingress).to_record()?,
        },
    ];
    state.store()?.tx(TxRequest::new(ops)).await.map_err(|e| match e.code {
        shoal_shared::ErrorCode::AlreadyExists | shoal_shared::ErrorCode::NameConflict => {
            ApiError::unavailable(ALREADY_IN_SWARM)
        }
        _ => e.into(),
    })?;
    crate::join::after_init(&state, &cluster, &addr)?;
    state.keys.follow(&cluster)?;
    tracing::info!(node = %state.node_id, cluster = %cluster.meta.id, "swarm initialized");
    Ok(HttpResponse::Ok().json(&state.node_id))
}

/// `POST /swarm/join`: over TLS to a manager at `RemoteAddrs`, pinned by the
/// token's CA digest (see [`crate::join`]); answers once this node is Ready.
pub async fn join(state: web::Data<AppState>, body: Body) -> ApiResult<HttpResponse> {
    let r: JoinRequest = decode(&body)?;
    let availability = parse_availability(&r.availability)?;
    if matches!(state.view().await?, SwarmView::Active { .. }) {
        return Err(ApiError::unavailable(ALREADY_IN_SWARM));
    }
    if r.remote_addrs.is_empty() {
        return Err(ApiError::bad_request(
            "RemoteAddrs: at least 1 RemoteAddr is required to join",
        ));
    }
    let addr = ip_of(&r.advertise_addr).unwrap_or_else(|| state.advertise_addr.clone());
    crate::join::join(
        &state,
        crate::join::JoinParams {
            remote_addrs: r.remote_addrs.clone(),
            token: r.join_token.clone(),
            addr,
            availability,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().finish())
}

/// `POST /swarm/leave?force=`.
pub async fn leave(state: web::Data<AppState>, q: Query) -> ApiResult<HttpResponse> {
    let force = flag(&q, "force");
    let (cluster, node, manager) = match state.view().await {
        Ok(SwarmView::Active { cluster, node, manager }) => (cluster, node, manager),
        // A joined host whose managers are out of reach still leaves (Docker does).
        Err(_) | Ok(SwarmView::Inactive) if shoal_shared::membership::Membership::read(&state.swarm.dir).is_some() => {
            crate::join::after_leave(&state)?;
            state.forget_cluster();
            return Ok(HttpResponse::Ok().finish());
        }
        Ok(SwarmView::Inactive) => return Err(ApiError::unavailable(NOT_IN_SWARM)),
        Err(e) => return Err(e),
    };
    if manager && !force && state.keys.locked() {
        return Err(ApiError::unavailable(crate::autolock::LOCKED_LEAVE));
    }
    if manager && !force {
        return Err(ApiError::unavailable(
            "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last \
             manager erases all current state of the swarm. Use `--force` to ignore this message.",
        ));
    }
    let nodes: Vec<Node> = state.store()?.list(ListFilter::default()).await?;
    let last_manager = manager && !nodes.iter().any(|n| n.is_manager() && n.meta.id != state.node_id);
    let mut ops = Vec::new();
    // A worker that leaves stays in the node list, Down, until `docker node rm`
    // (as in Docker); a manager leaving with --force takes its Node with it.
    if node.is_some() && manager {
        ops.push(Op::Delete {
            kind: Kind::Node,
            id: state.node_id.clone(),
            version: None,
        });
    }
    if last_manager {
        // The last manager leaving erases the swarm's state.
        let all = state
            .store()?
            .list_records(
                &[
                    Kind::Node,
                    Kind::Service,
                    Kind::Task,
                    Kind::Network,
                    Kind::Secret,
                    Kind::Config,
                ],
                ListFilter::default(),
            )
            .await?;
        for r in all.records {
            if r.kind == Kind::Node && r.id == state.node_id {
                continue;
            }
            ops.push(Op::Delete {
                kind: r.kind,
                id: r.id,
                version: None,
            });
        }
        ops.push(Op::Delete {
            kind: Kind::Cluster,
            id: cluster.meta.id.clone(),
            version: None,
        });
    }
    if !ops.is_empty() {
        state.store()?.tx(TxRequest::new(ops)).await?;
    }
    crate::join::after_leave(&state)?;
    state.keys.discard_if_locked();
    state.forget_cluster();
    Ok(HttpResponse::Ok().finish())
}

/// `Spec.EncryptionConfig.AutoLockManagers` when the request names it (keys
/// in any case): `swarm update --autolock=false` sends `false`, which the
/// merge of non-zero values would otherwise pass over.
fn autolock_asked(req: &Value) -> Option<bool> {
    let field = |v: &Value, name: &str| -> Option<Value> {
        v.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    field(&field(req, "EncryptionConfig")?, "AutoLockManagers")?.as_bool()
}

/// `POST /swarm/update?version=&rotateWorkerToken=&rotateManagerToken=`.
pub async fn update(state: web::Data<AppState>, q: Query, body: Body) -> ApiResult<HttpResponse> {
    let spec_req: Value = decode(&body)?;
    if !spec_req.is_object() {
        return Err(ApiError::bad_request(
            "invalid JSON: the body must be a SwarmSpec object",
        ));
    }
    let mut cluster = swarm_manager(&state).await?.cluster;
    let version = parse_version(&q)?;
    if version != cluster.meta.version.index {
        return Err(ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            crate::error::OUT_OF_SEQUENCE,
        ));
    }
    cluster.spec = merged_spec(&cluster.spec, Some(&spec_req))?;
    if let Some(on) = autolock_asked(&spec_req) {
        cluster.spec.encryption_config.auto_lock_managers = on;
    }
    // As SwarmKit: turning autolock on makes an unlock key, rotating (only
    // with autolock on) replaces it, turning it off drops it.
    if !cluster.spec.encryption_config.auto_lock_managers {
        cluster.sealed_unlock_key.clear();
    } else if cluster.sealed_unlock_key.is_empty() || flag(&q, "rotateManagerUnlockKey") {
        crate::autolock::new_unlock_key(&state, &mut cluster)?;
    }
    let rotate_w = flag(&q, "rotateWorkerToken");
    let rotate_m = flag(&q, "rotateManagerToken");
    if rotate_w || rotate_m {
        let der = certs::pem_to_der(&cluster.tls_info.trust_root);
        if rotate_w {
            cluster.join_tokens.worker = certs::join_token(&der);
        }
        if rotate_m {
            cluster.join_tokens.manager = certs::join_token(&der);
        }
    }
    let updated = state.store()?.update(&cluster).await?;
    state.keys.follow(&updated)?;
    Ok(HttpResponse::Ok().finish())
}

/// For `/swarm` endpoints: Docker says "not part of a swarm" before init.
async fn swarm_manager(state: &AppState) -> ApiResult<crate::state::Ctx> {
    state.manager_or(NOT_IN_SWARM).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_keep_the_defaults() {
        let base = SwarmSpec::default_spec();
        let req = json!({"Name": "", "Raft": {"ElectionTick": 0, "HeartbeatTick": 0, "SnapshotInterval": 20000},
                         "Dispatcher": {}, "Labels": {"a": "b"}});
        let s = merged_spec(&base, Some(&req)).unwrap();
        assert_eq!(s.raft.election_tick, 3);
        assert_eq!(s.raft.snapshot_interval, 20_000);
        assert_eq!(s.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(s.name, "default");
        let bad = json!({"Raft": {"SnapshotInterval": "x"}});
        let e = merged_spec(&base, Some(&bad)).unwrap_err();
        assert!(e.message.contains("Raft.SnapshotInterval"), "{}", e.message);
        assert_eq!(ip_of("10.1.2.3:2377").as_deref(), Some("10.1.2.3"));
        assert_eq!(ip_of("eth0"), None);
        let lock = json!({"EncryptionConfig": {"AutoLockManagers": true}});
        let locked = merged_spec(&base, Some(&lock)).unwrap();
        assert!(locked.encryption_config.auto_lock_managers);
        let off = json!({"encryptionconfig": {"autolockmanagers": false}});
        assert_eq!(autolock_asked(&off), Some(false));
        assert_eq!(autolock_asked(&json!({})), None);
    }
}
