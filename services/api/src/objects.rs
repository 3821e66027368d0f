//! `/nodes`, `/services` and `/tasks`: Docker's shapes, derived from the store's objects.

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use shoal_shared::id::new_id;
use shoal_shared::model::{
    Endpoint, JobStatus, Network, Node, NodeRole, NodeSpec, NodeState, PortProtocol, PublishMode, PullOptions, Service,
    ServiceSpec, ServiceStatus, Task, TaskSpec, TaskState, UpdateState, UpdateStatus,
};
use shoal_shared::store::{Kind, ListFilter, StoreMembership, StoreObject};
use shoal_shared::ErrorCode;

use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::request::{flag, parse_version, Body, IdPath, Manager, Query};
use crate::spec::{decode, decode_service};
use crate::state::AppState;

/// The last step of the lookup rule: the one object whose ID starts with
/// `key`; when none does, several objects of that name are ambiguous.
fn by_unique_prefix<T>(mut by_prefix: Vec<T>, named: usize, key: &str, what: &str) -> ApiResult<T> {
    let shown = crate::error::clip(key);
    match by_prefix.len() {
        1 => Ok(by_prefix.remove(0)),
        0 if named > 1 => Err(ApiError::bad_request(format!(
            "{what} {shown} is ambiguous ({named} matches found)"
        ))),
        0 => Err(ApiError::not_found(format!("{what} {shown} not found"))),
        n => Err(ApiError::bad_request(format!(
            "{what} {shown} is ambiguous ({n} matches found)"
        ))),
    }
}

/// Finds one object by Docker's lookup rule, through the store's indexes
/// instead of a list of everything: the exact ID (`Get`), then the name (the
/// name index; `T::name` is the name Docker looks up), then the ID prefix (a
/// key-prefix scan). `what` is `node`, `service`, ...
pub async fn find<T: StoreObject>(state: &AppState, key: &str, what: &str) -> ApiResult<T> {
    if key.is_empty() {
        return Err(ApiError::not_found(format!(
            "{what} {} not found",
            crate::error::clip(key)
        )));
    }
    if let Some(o) = state.store()?.get::<T>(key).await? {
        return Ok(o);
    }
    // Tasks have no name to look up.
    let mut by_name: Vec<T> = match T::KIND {
        Kind::Task => Vec::new(),
        _ => state.store()?.list(ListFilter::default().name(key)).await?,
    };
    if by_name.len() == 1 {
        return Ok(by_name.remove(0));
    }
    let by_prefix: Vec<T> = state.store()?.list(ListFilter::default().id_prefix(key)).await?;
    by_unique_prefix(by_prefix, by_name.len(), key, what)
}

// ---------------------------------------------------------------- nodes

/// The IDs that filter references (ID, name or unique prefix) name; a reference
/// that names nothing matches nothing, as in Docker's task filters.
async fn resolve_ids<'a, T: StoreObject>(
    state: &AppState,
    keys: impl Iterator<Item = &'a str>,
    what: &str,
) -> ApiResult<Vec<String>> {
    let mut ids = Vec::new();
    for key in keys {
        match find::<T>(state, key, what).await {
            Ok(o) => ids.push(o.meta().id.clone()),
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ids)
}

/// A node as Docker shows it: no store-only `Spec.Membership` or
/// `ManagerStatus.NATSURLs` or `ManagerStatus.RaftID`; `Leader`/`Reachability`
/// from the store's live membership (`m`) when the node's replica is known,
/// else the stored flags with `Leader` on this API's node when it is the
/// only manager.
fn node_json(n: &Node, self_id: &str, managers: usize, m: Option<&StoreMembership>) -> Value {
    let mut n = n.clone();
    n.spec.membership = None;
    if let Some(ms) = n.manager_status.as_mut() {
        ms.nats_urls.clear();
        if ms.raft_id != 0 && m.is_some() {
            crate::managers::apply_live_status(ms, m);
        } else if managers == 1 && n.meta.id == self_id {
            ms.leader = true;
        }
        ms.raft_id = 0;
    }
    serde_json::to_value(&n).unwrap_or(Value::Null)
}

/// The node `key` names (`self`: this API's node), and the number of managers.
async fn find_node(state: &AppState, key: &str) -> ApiResult<(Node, usize)> {
    let key = if key == "self" { state.node_id.as_str() } else { key };
    let n = find::<Node>(state, key, "node").await?;
    let managers = state
        .store()?
        .list_records(
            &[Kind::Node],
            ListFilter::default().field("role", NodeRole::Manager.as_str()),
        )
        .await?
        .records
        .len();
    Ok((n, managers))
}

fn managers(all: &[Node]) -> usize {
    all.iter().filter(|n| n.is_manager()).count()
}

pub async fn node_list(state: web::Data<AppState>, q: Query) -> ApiResult<HttpResponse> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["id", "name", "role", "membership", "label", "node.label"],
    )?;
    f.check_values("role", &["worker", "manager"])?;
    f.check_values("membership", &["pending", "accepted"])?;
    state.manager().await?;
    let all: Vec<Node> = state.store()?.list(ListFilter::default()).await?;
    let m = managers(&all);
    let live = match all
        .iter()
        .any(|n| n.manager_status.as_ref().is_some_and(|s| s.raft_id != 0))
    {
        true => crate::managers::membership(&state).await,
        false => None,
    };
    let out: Vec<Value> = all
        .iter()
        .filter(|n| {
            f.any_prefix("id", &n.meta.id)
                && (!f.has("name")
                    || f.get("name")
                        .iter()
                        .any(|p| n.description.hostname.starts_with(p.as_str()) || n.spec.name.starts_with(p.as_str())))
                && f.any_eq_ignore_case("role", n.spec.role.as_str())
                && f.any_eq_ignore_case("membership", n.membership().as_str())
                && f.labels_match("label", &n.description.engine.labels)
                && f.labels_match("node.label", &n.spec.labels)
        })
        .map(|n| node_json(n, &state.node_id, m, live.as_ref()))
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

pub async fn node_inspect(state: web::Data<AppState>, path: web::Path<IdPath>, _: Manager) -> ApiResult<HttpResponse> {
    let (n, managers) = find_node(&state, &path.id).await?;
    let live = match n.manager_status.as_ref().is_some_and(|s| s.raft_id != 0) {
        true => crate::managers::membership(&state).await,
        false => None,
    };
    Ok(HttpResponse::Ok().json(node_json(&n, &state.node_id, managers, live.as_ref())))
}

/// A node spec body with `Role` and `Availability` checked as Docker's
/// daemon checks them (any case; `invalid Role: "x"`, `invalid
/// Availability: "x"`) and written in lower case for the typed decoder.
fn node_spec_checked(body: &[u8]) -> ApiResult<Vec<u8>> {
    let mut v: Value = decode(body)?;
    if let Value::Object(m) = &mut v {
        for (field, allowed) in [
            ("Role", &["worker", "manager"][..]),
            ("Availability", &["active", "pause", "drain"][..]),
        ] {
            let Some(key) = m.keys().find(|k| k.eq_ignore_ascii_case(field)).cloned() else {
                continue;
            };
            let Some(given) = m.get(&key).and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let lower = given.to_ascii_lowercase();
            if !allowed.contains(&lower.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "invalid {field}: {:?}",
                    crate::error::clip(&given)
                )));
            }
            m.insert(key, Value::String(lower));
        }
    }
    serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))
}

pub async fn node_update(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    body: Body,
) -> ApiResult<HttpResponse> {
    let spec: NodeSpec = decode(&node_spec_checked(&body)?)?;
    let version = parse_version(&q)?;
    state.manager().await?;
    let (mut n, managers) = find_node(&state, &path.id).await?;
    if n.spec.role == NodeRole::Manager && spec.role == NodeRole::Worker && managers == 1 {
        return Err(ApiError::bad_request(
            "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
        ));
    }
    let was = n.spec.role;
    let membership = n.spec.membership;
    n.spec = NodeSpec { membership, ..spec };
    let mut add_replica = None;
    match (was, n.spec.role) {
        (NodeRole::Manager, NodeRole::Worker) => {
            crate::managers::demote(&state, &n).await?;
            n.manager_status = None;
        }
        (_, NodeRole::Manager) => {
            let raft_id = n.manager_status.as_ref().map_or(0, |s| s.raft_id);
            // A promotion, or one whose replica never became a member (retried).
            let retry = raft_id != 0
                && crate::managers::membership(&state)
                    .await
                    .is_none_or(|m| m.member(raft_id).is_none());
            if was == NodeRole::Worker || retry {
                add_replica = crate::managers::promote(&state, &mut n).await?;
            }
        }
        _ => {}
    }
    n.meta.version.index = version;
    state.store()?.update(&n).await?;
    if let Some(replica) = add_replica {
        crate::managers::add_replica(&state, replica).await?;
    }
    Ok(HttpResponse::Ok().finish())
}

pub async fn node_delete(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    _: Manager,
) -> ApiResult<HttpResponse> {
    let (n, _) = find_node(&state, &path.id).await?;
    let force = flag(&q, "force");
    if n.is_manager() {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = FailedPrecondition desc = node {} is a cluster manager and is a member of the raft \
             cluster. It must be demoted to worker before removal",
            n.meta.id
        )));
    }
    if n.status.state == NodeState::Ready && !force {
        return Err(ApiError::bad_request(format!(
            "rpc error: code = FailedPrecondition desc = node {} is not down and can't be removed",
            n.meta.id
        )));
    }
    state.store()?.delete(Kind::Node, &n.meta.id, None).await?;
    Ok(HttpResponse::Ok().finish())
}

// ---------------------------------------------------------------- services

async fn find_service(state: &AppState, key: &str) -> ApiResult<Service> {
    find(state, key, "service").await
}

/// `ServiceStatus` from the tasks in the store: running = tasks running;
/// desired = replicas, or for a global service the tasks meant to run. For a
/// job, as SwarmKit counts it, only tasks of the current iteration count:
/// desired = `MaxConcurrent` (a replicated job) or the tasks still meant to
/// complete (a global job), and completed = those that did.
fn service_status(svc: &Service, tasks: &[&Task]) -> ServiceStatus {
    let iteration = svc.job_iteration();
    let tasks: Vec<&&Task> = tasks
        .iter()
        .filter(|t| iteration.is_none() || t.job_iteration.map(|v| v.index) == iteration)
        .collect();
    let running = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state.wants_run())
        .count() as u64;
    let completed = tasks.iter().filter(|t| t.status.state == TaskState::Complete).count() as u64;
    let desired = match (svc.replicas(), &svc.spec.mode.replicated_job) {
        (Some(r), _) => r,
        (None, Some(job)) => job.concurrency(),
        (None, None) => tasks
            .iter()
            .filter(|t| t.desired_state.wants_run() && t.status.state != TaskState::Complete)
            .count() as u64,
    };
    ServiceStatus {
        running_tasks: running,
        desired_tasks: desired,
        completed_tasks: completed,
    }
}

/// Checks what a spec refers to: its networks exist (and are not the ingress
/// network), and its published ports are not taken by another service.
/// Network names are resolved to network IDs, as Docker stores them.
async fn check_references(state: &AppState, spec: &mut ServiceSpec, self_id: Option<&str>) -> ApiResult<()> {
    crate::secrets::check_references(state, spec).await?;
    let mut attachments: Vec<&mut shoal_shared::model::NetworkAttachmentConfig> = spec
        .task_template
        .networks
        .iter_mut()
        .chain(spec.networks.iter_mut())
        .collect();
    if !attachments.is_empty() {
        let nets: Vec<Network> = state.store()?.list(ListFilter::default()).await?;
        for a in attachments.iter_mut() {
            let t = a.target.as_str();
            let net = nets
                .iter()
                .find(|n| n.meta.id == t)
                .or_else(|| nets.iter().find(|n| n.spec.name == t))
                .or_else(|| {
                    let mut by_prefix = nets.iter().filter(|n| !t.is_empty() && n.meta.id.starts_with(t));
                    match (by_prefix.next(), by_prefix.next()) {
                        (Some(n), None) => Some(n),
                        _ => None,
                    }
                })
                .ok_or_else(|| ApiError::not_found(format!("network {} not found", crate::error::clip(t))))?;
            if net.spec.ingress {
                return Err(ApiError::bad_request(
                    "rpc error: code = InvalidArgument desc = service cannot be explicitly attached to the ingress \
                     network \"ingress\"",
                ));
            }
            a.target = net.meta.id.clone();
        }
    }
    let ports: Vec<_> = spec
        .endpoint_spec
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| p.published_port != 0 && p.publish_mode != Some(PublishMode::Host))
        .collect();
    if !ports.is_empty() {
        let services: Vec<Service> = state.store()?.list(ListFilter::default()).await?;
        for other in services.iter().filter(|o| Some(o.meta.id.as_str()) != self_id) {
            let taken = other
                .spec
                .endpoint_spec
                .iter()
                .flat_map(|e| e.ports.iter())
                .filter(|p| p.publish_mode != Some(PublishMode::Host));
            for q in taken {
                let proto = |p: &shoal_shared::model::PortConfig| p.protocol.unwrap_or_default();
                if let Some(p) = ports
                    .iter()
                    .find(|p| p.published_port == q.published_port && proto(p) == proto(q))
                {
                    return Err(ApiError::bad_request(format!(
                        "rpc error: code = InvalidArgument desc = port '{}' is already in use by service '{}' ({}) \
                         as an ingress port",
                        p.published_port, other.spec.name, other.meta.id
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `Endpoint` as far as the API knows it: the spec, and the ports the user
/// published explicitly (ports Swarm picks and virtual IPs are left to the allocator).
fn fill_endpoint(s: &mut Service) {
    let spec = s.spec.endpoint_spec.clone().unwrap_or_default();
    let ep = s.endpoint.get_or_insert_with(Endpoint::default);
    let old = std::mem::take(&mut ep.ports);
    for p in &spec.ports {
        let mut p = p.clone();
        p.protocol.get_or_insert(PortProtocol::Tcp);
        p.publish_mode.get_or_insert(PublishMode::Ingress);
        if p.published_port == 0 && p.publish_mode == Some(PublishMode::Ingress) {
            // A port the allocator numbered keeps its number while the spec
            // keeps it (same target and protocol); a new one is numbered by
            // the scheduler's next pass.
            match old
                .iter()
                .find(|o| o.published_port != 0 && o.target_port == p.target_port && o.protocol == p.protocol)
            {
                Some(o) => p.published_port = o.published_port,
                None => continue,
            }
        }
        ep.ports.push(p);
    }
    ep.spec = spec;
}

pub async fn service_list(state: web::Data<AppState>, q: Query) -> ApiResult<HttpResponse> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["id", "name", "label", "mode", "runtime"],
    )?;
    state.manager().await?;
    // ID prefixes narrow what the store reads; the other filters apply here.
    let mut store_filter = ListFilter::default();
    for p in f.get("id") {
        store_filter = store_filter.id_prefix(p.clone());
    }
    let all: Vec<Service> = state.store()?.list(store_filter).await?;
    let listed = all.len();
    let selected: Vec<Service> = all
        .into_iter()
        .filter(|s| {
            f.any_prefix("id", &s.meta.id)
                && f.any_prefix("name", &s.spec.name)
                && f.labels_match("label", &s.spec.labels)
                && f.any_eq("mode", s.spec.mode_name())
                && f.any_eq("runtime", runtime_of(&s.spec.task_template))
        })
        .collect();
    let with_status = flag(&q, "status");
    // The tasks of the services shown: all tasks only when all services are shown.
    let tasks: Vec<Task> = match (with_status, selected.len()) {
        (false, _) | (true, 0) => Vec::new(),
        (true, n) if n == listed && !f.has("id") => state.store()?.list(ListFilter::default()).await?,
        (true, _) => {
            let mut by_service = ListFilter::default();
            for s in &selected {
                by_service = by_service.field("service", s.meta.id.clone());
            }
            state.store()?.list(by_service).await?
        }
    };
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in &tasks {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    let out: Vec<Service> = selected
        .into_iter()
        .map(|mut s| {
            if with_status {
                let ts = by_service.get(s.meta.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                s.service_status = Some(service_status(&s, ts));
            }
            redact_service(&mut s);
            s
        })
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

pub async fn service_create(state: web::Data<AppState>, req: HttpRequest, body: Body) -> ApiResult<HttpResponse> {
    let mut spec = decode_service(&body)?;
    set_registry_auth(&req, &mut spec, None);
    state.manager().await?;
    check_references(&state, &mut spec, None).await?;
    // Docker names an unnamed service (`adjective_surname`); a generated name
    // that happens to be taken is drawn again.
    let generated = spec.name.is_empty();
    let mut attempts = 0;
    let created = loop {
        attempts += 1;
        if generated {
            spec.name = crate::names::random_name(&mut rand::thread_rng());
        }
        let mut svc = Service::new(new_id(), spec.clone());
        if spec.is_job() {
            svc.job_status = Some(JobStatus {
                job_iteration: Default::default(),
                last_execution: chrono::Utc::now(),
            });
        }
        fill_endpoint(&mut svc);
        // What the spec refers to must still exist when the service is
        // written (checked in the same write, not only by the read above).
        let guards = shoal_shared::store::reference_guards(&svc.references());
        match state.store()?.create_guarded(&svc, guards).await {
            Ok(c) => break c,
            Err(e) if e.code == ErrorCode::NotFound => {
                // Removed since the check: say which, in Docker's words.
                check_references(&state, &mut spec, None).await?;
                return Err(e.into());
            }
            Err(e) if e.code == ErrorCode::NameConflict && generated && attempts < 8 => continue,
            Err(e) if e.code == ErrorCode::NameConflict => {
                return Err(ApiError::conflict(format!(
                    "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {} \
                     already exists",
                    spec.name
                )))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let name = spec.name;
    tracing::info!(service = %created.meta.id, name = %name, "service created");
    Ok(HttpResponse::Created().json(json!({"ID": created.meta.id, "Warnings": []})))
}

pub async fn service_inspect(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    _: Manager,
) -> ApiResult<HttpResponse> {
    let mut s = find_service(&state, &path.id).await?;
    if flag(&q, "insertDefaults") {
        crate::spec::insert_defaults(&mut s.spec);
    }
    redact_service(&mut s);
    Ok(HttpResponse::Ok().json(s))
}

pub async fn service_update(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    q: Query,
    req: HttpRequest,
    body: Body,
) -> ApiResult<HttpResponse> {
    let version = parse_version(&q)?;
    let rollback = q.get("rollback").map(String::as_str) == Some("previous");
    let new_spec = if rollback { None } else { Some(decode_service(&body)?) };
    state.manager().await?;
    // The scheduler writes a service too (its VIPs, rollout and job status;
    // the spec only when it rolls back): an update that read the current
    // spec goes in over its other writes, even one landing between our read
    // and our write. Swarm refuses those ("update out of sequence"), which
    // is why docker-py marks its test of this flaky.
    let mut attempts = 0;
    loop {
        let s = find_service(&state, &path.id).await?;
        let read_current = s.read_current_spec(version);
        let at = match read_current {
            true => s.meta.version.index,
            false => version,
        };
        let next = update_of(&state, &req, s, new_spec.clone(), rollback).await?;
        match write_service_update(&state.store()?, next.clone(), at).await {
            Err(e) if e.code == ErrorCode::StaleVersion && read_current && attempts < 5 => attempts += 1,
            Err(e) if e.code == ErrorCode::NotFound && attempts < 5 => {
                // Something it refers to was removed since the check (or the
                // service itself): checked again, in Docker's words.
                attempts += 1;
                check_references(&state, &mut next.spec.clone(), Some(&next.meta.id)).await?;
            }
            r => break r.map(drop)?,
        }
    }
    Ok(HttpResponse::Ok().json(json!({"Warnings": []})))
}

/// The service `s` becomes by an update to `new_spec` (`None`: a rollback
/// to its previous spec), checked as SwarmKit checks one.
async fn update_of(
    state: &AppState,
    req: &HttpRequest,
    mut s: Service,
    new_spec: Option<ServiceSpec>,
    rollback: bool,
) -> ApiResult<Service> {
    let current = s.spec.clone();
    let mut next = match new_spec {
        Some(mut spec) => {
            set_registry_auth(req, &mut spec, Some(&current));
            spec
        }
        None => s.previous_spec.clone().ok_or_else(|| {
            ApiError::bad_request(format!(
                "rpc error: code = FailedPrecondition desc = service {} does not have a previous spec",
                s.meta.id
            ))
        })?,
    };
    let self_id = s.meta.id.clone();
    check_references(state, &mut next, Some(&self_id)).await?;
    if next.name != current.name {
        return Err(ApiError::bad_request(
            "rpc error: code = Unimplemented desc = renaming services is not supported",
        ));
    }
    if next.mode_name() != current.mode_name() {
        return Err(ApiError::bad_request(
            "rpc error: code = Unimplemented desc = service mode change is not allowed",
        ));
    }
    // Every update of a job runs it again, as SwarmKit does: the next iteration.
    if let Some(job) = s.job_status.as_mut() {
        job.job_iteration.index += 1;
        job.last_execution = chrono::Utc::now();
    }
    s.spec = next;
    s.previous_spec = Some(current);
    // A new spec starts a new rollout (a paused one does not stay paused); a
    // requested rollback is one the scheduler carries out like SwarmKit does.
    s.update_status = rollback.then(|| UpdateStatus {
        state: Some(UpdateState::RollbackStarted),
        started_at: None,
        completed_at: None,
        message: "manually requested rollback".into(),
    });
    fill_endpoint(&mut s);
    Ok(s)
}

/// Writes an updated service over its version `at`; the spec is this write's.
async fn write_service_update(
    store: &shoal_shared::store::StoreClient,
    mut s: Service,
    at: u64,
) -> Result<Service, shoal_shared::ShoalError> {
    s.meta.version.index = at;
    s.spec_version = 0;
    let guards = shoal_shared::store::reference_guards(&s.references());
    store.update_guarded(&s, guards).await
}

pub async fn service_delete(
    state: web::Data<AppState>,
    path: web::Path<IdPath>,
    _: Manager,
) -> ApiResult<HttpResponse> {
    let s = find_service(&state, &path.id).await?;
    state.store()?.delete(Kind::Service, &s.meta.id, None).await?;
    tracing::info!(service = %s.meta.id, "service removed");
    Ok(HttpResponse::Ok().finish())
}

// ---------------------------------------------------------------- tasks

pub async fn task_list(state: web::Data<AppState>, q: Query) -> ApiResult<HttpResponse> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &[
            "id",
            "name",
            "service",
            "node",
            "desired-state",
            "label",
            "_up-to-date",
            "runtime",
        ],
    )?;
    let states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
    f.check_values("desired-state", &states)?;
    state.manager().await?;
    let mut store_filter = ListFilter::default();
    // Resolve service and node references (name, ID or prefix) to IDs.
    if f.has("service") {
        let keys = f.get("service").iter().map(String::as_str);
        let ids = resolve_ids::<Service>(&state, keys, "service").await?;
        if ids.is_empty() {
            return Ok(HttpResponse::Ok().json(Vec::<Task>::new()));
        }
        for id in ids {
            store_filter = store_filter.field("service", id);
        }
    }
    if f.has("node") {
        let keys = f.get("node").iter().map(|k| {
            if k == "self" {
                state.node_id.as_str()
            } else {
                k.as_str()
            }
        });
        let ids = resolve_ids::<Node>(&state, keys, "node").await?;
        if ids.is_empty() {
            return Ok(HttpResponse::Ok().json(Vec::<Task>::new()));
        }
        for id in ids {
            store_filter = store_filter.field("node", id);
        }
    }
    for s in f.get("desired-state").iter().filter(|s| !s.is_empty()) {
        store_filter = store_filter.field("desired-state", s.to_ascii_lowercase());
    }
    let tasks: Vec<Task> = state.store()?.list(store_filter).await?;
    let up_to_date = f.get("_up-to-date").iter().any(|v| v == "true" || v == "1");
    // The services of these tasks, only when a filter needs them (task names, up to date).
    let services: Vec<Service> = if (f.has("name") || up_to_date) && !tasks.is_empty() {
        let mut ids: Vec<&str> = tasks
            .iter()
            .map(|t| t.service_id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut by_id = ListFilter::default();
        for id in &ids {
            by_id = by_id.id_prefix(*id);
        }
        if ids.is_empty() {
            Vec::new()
        } else {
            state.store()?.list(by_id).await?
        }
    } else {
        Vec::new()
    };
    let svc_by_id: HashMap<&str, &Service> = services.iter().map(|s| (s.meta.id.as_str(), s)).collect();
    let out: Vec<Task> = tasks
        .iter()
        .filter(|t| {
            let svc = svc_by_id.get(t.service_id.as_str());
            let name = svc.map(|s| t.name(&s.spec.name)).unwrap_or_default();
            f.any_prefix("id", &t.meta.id)
                // Docker passes a task `name` filter as name prefixes.
                && f.any_prefix("name", &name)
                // SwarmKit matches a task's label filter on its service's labels
                // (`ServiceAnnotations.Labels`), which is what `docker stack ps` sends.
                && f.labels_match(
                    "label",
                    t.service_annotations.as_ref().map_or(&t.labels, |a| &a.labels),
                )
                && f.any_eq("runtime", runtime_of(&t.spec))
                && (!up_to_date || svc.is_some_and(|s| s.spec.task_template == t.spec))
        })
        .cloned()
        .map(redact_task)
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

pub async fn task_inspect(state: web::Data<AppState>, path: web::Path<IdPath>, _: Manager) -> ApiResult<HttpResponse> {
    let t: Task = find(&state, &path.id, "task").await?;
    Ok(HttpResponse::Ok().json(redact_task(t)))
}

/// A task spec's runtime as Docker's `runtime` filter names it (`container` unless set).
fn runtime_of(spec: &TaskSpec) -> &str {
    spec.runtime.as_deref().filter(|r| !r.is_empty()).unwrap_or("container")
}

/// The registry credentials of `X-Registry-Auth` (sent by `--with-registry-auth`)
/// go into the spec; an update without them keeps the ones the service had, as Docker does.
fn set_registry_auth(req: &HttpRequest, spec: &mut ServiceSpec, current: Option<&ServiceSpec>) {
    let header = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "e30=" && *v != "e30");
    let Some(c) = spec.task_template.container_spec.as_mut() else {
        return;
    };
    c.pull_options = match header {
        Some(auth) => Some(PullOptions {
            registry_auth: auth.to_string(),
        }),
        None => current
            .and_then(|cur| cur.task_template.container_spec.as_ref())
            .and_then(|cc| cc.pull_options.clone()),
    };
}

/// Credentials never leave the managers through the API.
fn redact(spec: &mut TaskSpec) {
    if let Some(c) = spec.container_spec.as_mut() {
        c.pull_options = None;
    }
}

pub(crate) fn redact_service(s: &mut Service) {
    s.spec_version = 0;
    redact(&mut s.spec.task_template);
    if let Some(p) = s.previous_spec.as_mut() {
        redact(&mut p.task_template);
    }
}

fn redact_task(mut t: Task) -> Task {
    redact(&mut t.spec);
    // SwarmKit's copy of the service's endpoint: Docker's task has none.
    t.endpoint = None;
    t
}

#[cfg(test)]
mod tests {
    use shoal_shared::model::ServiceSpec;

    use super::*;

    fn svc(id: &str, name: &str) -> Service {
        Service::new(
            id,
            ServiceSpec {
                name: name.into(),
                ..ServiceSpec::default()
            },
        )
    }

    #[test]
    fn a_unique_prefix_wins_and_several_of_a_name_are_ambiguous() {
        let one = by_unique_prefix(vec![svc("abc1", "web")], 0, "abc", "service").unwrap();
        assert_eq!(one.meta.id, "abc1");
        let e = by_unique_prefix(vec![svc("abc1", "web"), svc("abd2", "db")], 0, "ab", "service").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "service ab is ambiguous (2 matches found)")
        );
        let e = by_unique_prefix(Vec::<Service>::new(), 2, "web", "service").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "service web is ambiguous (2 matches found)"),
            "two services named web and no ID prefix"
        );
        let e = by_unique_prefix(Vec::<Service>::new(), 0, "nope", "service").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "service nope not found")
        );
    }

    #[test]
    fn status_counts_running_tasks_and_desired_replicas() {
        let s = Service::new(
            "s",
            ServiceSpec {
                mode: shoal_shared::model::ServiceMode::replicated(3),
                ..ServiceSpec::default()
            },
        );
        let mut running = Task::new("t1", "s", Default::default());
        running.status.state = TaskState::Running;
        let pending = Task::new("t2", "s", Default::default());
        let mut old = Task::new("t3", "s", Default::default());
        old.status.state = TaskState::Running;
        old.desired_state = TaskState::Shutdown;
        let st = service_status(&s, &[&running, &pending, &old]);
        assert_eq!((st.running_tasks, st.desired_tasks), (1, 3));
        let g = Service::new(
            "g",
            ServiceSpec {
                mode: shoal_shared::model::ServiceMode::global(),
                ..ServiceSpec::default()
            },
        );
        let st = service_status(&g, &[&running, &pending, &old]);
        assert_eq!((st.running_tasks, st.desired_tasks), (1, 2));
    }
}
