//! `/networks`: swarm-scoped overlay networks, in Docker's flat `Network`
//! resource shape, rendered from the store's `model::Network`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shoal_shared::id::new_id;
use shoal_shared::model::{Driver, IpamConfig, IpamOptions, Network, NetworkSpec, TaskState, OVERLAY_DRIVER};
use shoal_shared::store::{Kind, ListFilter};
use shoal_shared::ErrorCode;

use crate::engine::{self, Engine};
use crate::error::{clip, ApiError, ApiResult};
use crate::filters::Filters;
use crate::request::{Body, IdPath, Query};
use crate::spec::decode;
use crate::state::AppState;

/// Docker's `/networks` shape for a store network.
pub fn network_json(n: &Network) -> Value {
    let ipam = n.ipam_options.as_ref().or(n.spec.ipam_options.as_ref());
    let driver = ipam.map(|i| i.driver.name.clone()).filter(|d| !d.is_empty());
    let config: Vec<Value> = ipam
        .map(|i| {
            i.configs
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    m.insert("Subnet".into(), json!(c.subnet));
                    if !c.range.is_empty() {
                        m.insert("IPRange".into(), json!(c.range));
                    }
                    if !c.gateway.is_empty() {
                        m.insert("Gateway".into(), json!(c.gateway));
                    }
                    Value::Object(m)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut options = n.spec.driver_opts();
    for (k, v) in &n.driver_state.options {
        options.insert(k.clone(), v.clone());
    }
    json!({
        "Name": n.spec.name,
        "Id": n.meta.id,
        "Created": n.meta.created_at,
        "Scope": "swarm",
        "Driver": n.spec.driver_name(),
        "EnableIPv4": true,
        "EnableIPv6": n.spec.ipv6_enabled,
        "IPAM": {"Driver": driver.unwrap_or_else(|| "default".into()), "Options": null, "Config": config},
        "Internal": n.spec.internal,
        "Attachable": n.spec.attachable,
        "Ingress": n.spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": options,
        "Labels": n.spec.labels,
    })
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateIpamConfig {
    subnet: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
    gateway: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateIpam {
    driver: String,
    config: Vec<CreateIpamConfig>,
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateRequest {
    name: String,
    driver: String,
    scope: String,
    internal: bool,
    attachable: bool,
    ingress: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<CreateIpam>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

async fn find(state: &AppState, key: &str) -> ApiResult<Network> {
    crate::objects::find::<Network>(state, key, "network").await
}

/// Whether a swarm lookup's error lets the host engine answer instead: the
/// network is not the swarm's, or this node serves no swarm.
fn engine_may_answer(e: &ApiError) -> bool {
    matches!(e.status.as_u16(), 404 | 503)
}

/// `GET /networks`: the host engine's local networks, then the swarm's, as
/// dockerd lists both on a manager.
pub async fn list(
    state: web::Data<AppState>,
    engine: web::Data<Engine>,
    req: HttpRequest,
    q: Query,
) -> ApiResult<HttpResponse> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["id", "name", "label", "driver", "scope", "type", "dangling"],
    )?;
    if let Some(t) = f
        .get("type")
        .iter()
        .find(|t| !matches!(t.as_str(), "builtin" | "custom"))
    {
        return Err(ApiError::bad_request(format!("invalid filter: 'type'='{}'", clip(t))));
    }
    match f.get("dangling") {
        [] => {}
        [v] if matches!(v.as_str(), "0" | "false" | "1" | "true") => {}
        [_] => {
            return Err(ApiError::bad_request(
                r#"invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")"#,
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                r#"got more than one value for filter key "dangling""#,
            ))
        }
    }
    let local = match req.query_string() {
        "" => engine::optional_json(&engine, "/networks").await,
        qs => engine::optional_json(&engine, &format!("/networks?{qs}")).await,
    };
    let mut out: Vec<Value> = match &local {
        Some(Value::Array(nets)) => nets
            .iter()
            .filter(|n| n.get("Scope").and_then(Value::as_str) != Some("swarm"))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    match state.manager().await {
        Ok(_) => {}
        Err(e) if local.is_some() && engine_may_answer(&e) => return Ok(HttpResponse::Ok().json(out)),
        Err(e) => return Err(e),
    }
    let all: Vec<Network> = state.store()?.list(ListFilter::default()).await?;
    let swarm = all
        .iter()
        .filter(|n| {
            f.any_prefix("id", &n.meta.id)
                && (!f.has("name") || f.get("name").iter().any(|p| n.spec.name.contains(p.as_str())))
                && f.labels_match("label", &n.spec.labels)
                && f.any_eq("driver", n.spec.driver_name())
                && f.any_eq("scope", "swarm")
                && (!f.has("type") || f.get("type").iter().any(|t| t == "custom") != n.spec.ingress)
        })
        .map(network_json);
    out.extend(swarm);
    Ok(HttpResponse::Ok().json(out))
}

/// `GET /networks/{id}`: a swarm network, else the host engine's (`scope=local` asks the engine only).
pub async fn inspect(
    state: web::Data<AppState>,
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<IdPath>,
    q: Query,
) -> ApiResult<HttpResponse> {
    let scope = q.get("scope").map(String::as_str).unwrap_or_default();
    let swarm = match scope {
        "" | "swarm" => match state.manager().await {
            Ok(_) => find(&state, &path.id).await.map(|n| network_json(&n)),
            Err(e) => Err(e),
        },
        other => Err(ApiError::not_found(format!(
            "network {} not found (scope {})",
            clip(&path.id),
            clip(other)
        ))),
    };
    match swarm {
        Ok(n) => Ok(HttpResponse::Ok().json(n)),
        Err(e) if scope != "swarm" && engine.configured() && engine_may_answer(&e) => {
            let qs = match req.query_string() {
                "" => String::new(),
                qs => format!("?{qs}"),
            };
            let id = urlencode(&path.id);
            match engine.call("GET", &format!("/networks/{id}{qs}"), None).await {
                Ok((status, body)) if status.is_success() => {
                    Ok(HttpResponse::build(status).content_type("application/json").body(body))
                }
                Ok((status, body))
                    if scope == "local" || status != StatusCode::NOT_FOUND || e.status.as_u16() == 503 =>
                {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Err(engine::engine_error(status, &v, &body))
                }
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A path segment with the characters a URI path cannot hold escaped.
fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a create request is for the host engine: a driver other than
/// overlay (the CLI's default is bridge; none given means bridge, as dockerd
/// decides) that does not ask for swarm scope.
fn is_local_create(body: &[u8]) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let field = |name: &str| {
        m.iter()
            .find(|(k, _)| k.as_str() == name)
            .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let driver = field("Driver");
    driver != OVERLAY_DRIVER && field("Scope") != "swarm"
}

/// Docker's IPAM check (`ValidateIPAM`, API 1.50): each subnet is CIDR
/// notation without host bits, and its range, gateway and auxiliary addresses
/// lie inside it. IPv6 configs are skipped when IPv6 is off, as Docker does.
pub fn validate_ipam(configs: &[IpamConfig], enable_ipv6: bool) -> ApiResult<()> {
    let mut errs: Vec<String> = Vec::new();
    for c in configs {
        let Some(subnet) = Prefix::parse(&c.subnet) else {
            errs.push(format!(
                "invalid subnet {}: invalid CIDR block notation",
                clip(&c.subnet)
            ));
            continue;
        };
        if subnet.addr.is_ipv6() && !enable_ipv6 {
            continue;
        }
        let family = subnet.family();
        if subnet != subnet.masked() {
            errs.push(format!("invalid subnet {subnet}: it should be {}", subnet.masked()));
        }
        if !c.range.is_empty() {
            match Prefix::parse(&c.range) {
                None => errs.push(format!(
                    "invalid ip-range {}: invalid CIDR block notation",
                    clip(&c.range)
                )),
                Some(r) if r.family() != family => errs.push(format!(
                    "invalid ip-range {}: parent subnet is an {family} block",
                    c.range
                )),
                Some(r) => {
                    if r.bits < subnet.bits {
                        errs.push(format!(
                            "invalid ip-range {}: CIDR block is bigger than its parent subnet {subnet}",
                            c.range
                        ));
                    }
                    if r != r.masked() {
                        errs.push(format!("invalid ip-range {r}: it should be {}", r.masked()));
                    }
                    if !subnet.overlaps(&r) {
                        errs.push(format!(
                            "invalid ip-range {}: parent subnet {subnet} doesn't contain ip-range",
                            c.range
                        ));
                    }
                }
            }
        }
        if !c.gateway.is_empty() {
            let problem = match c.gateway.parse::<IpAddr>() {
                Err(_) => Some("invalid address".to_string()),
                Ok(a) if a.is_ipv6() != subnet.addr.is_ipv6() => Some(format!("parent subnet is an {family} block")),
                Ok(a) if !subnet.contains(a) => Some(format!("parent subnet {subnet} doesn't contain this address")),
                Ok(_) => None,
            };
            if let Some(p) = problem {
                errs.push(format!("invalid gateway {}: {p}", clip(&c.gateway)));
            }
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(ApiError::bad_request(format!("invalid network config:\n{}", errs[0]))),
        _ => Err(ApiError::bad_request(format!(
            "invalid network config:\n* {}",
            errs.join("\n* ")
        ))),
    }
}

/// An IP prefix (`addr/bits`), as Go's `netip.Prefix` parses and prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix {
    addr: IpAddr,
    bits: u8,
}

impl Prefix {
    fn parse(s: &str) -> Option<Prefix> {
        let (a, b) = s.split_once('/')?;
        if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) || (b.len() > 1 && b.starts_with('0')) {
            return None;
        }
        let addr: IpAddr = a.parse().ok()?;
        let bits: u8 = b.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Prefix { addr, bits })
    }

    fn family(&self) -> &'static str {
        if self.addr.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
    }

    fn as_u128(a: IpAddr) -> (u128, u8) {
        match a {
            IpAddr::V4(v) => (u32::from(v) as u128, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    }

    fn mask(bits: u8, width: u8) -> u128 {
        let all = if width == 32 { u32::MAX as u128 } else { u128::MAX };
        if bits == 0 {
            0
        } else {
            (all << (width - bits)) & all
        }
    }

    fn masked(&self) -> Prefix {
        let (v, width) = Prefix::as_u128(self.addr);
        let m = v & Prefix::mask(self.bits, width);
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(m as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(m)),
        };
        Prefix { addr, bits: self.bits }
    }

    fn contains(&self, a: IpAddr) -> bool {
        let (v, width) = Prefix::as_u128(self.addr);
        let (x, xw) = Prefix::as_u128(a);
        let m = Prefix::mask(self.bits, width);
        width == xw && v & m == x & m
    }

    fn overlaps(&self, o: &Prefix) -> bool {
        if self.addr.is_ipv4() != o.addr.is_ipv4() {
            return false;
        }
        let (a, width) = Prefix::as_u128(self.addr);
        let (b, _) = Prefix::as_u128(o.addr);
        let m = Prefix::mask(self.bits.min(o.bits), width);
        a & m == b & m
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// Decodes and validates a network create body into the spec to store: no
/// I/O, so it can be tested alone. Errors are 400s in Docker's words.
pub fn decode_network(body: &[u8]) -> ApiResult<NetworkSpec> {
    let r: CreateRequest = decode(body)?;
    if r.name.trim().is_empty() {
        return Err(ApiError::bad_request("Name: a network name is required"));
    }
    let driver = if r.driver.is_empty() {
        "bridge"
    } else {
        r.driver.as_str()
    };
    if driver != OVERLAY_DRIVER {
        return Err(ApiError::bad_request(format!(
            "Driver: network driver {:?} is not supported: shoal manages swarm-scoped overlay networks only \
             (use --driver overlay)",
            clip(driver)
        )));
    }
    if !r.scope.is_empty() && r.scope != "swarm" {
        return Err(ApiError::bad_request(format!(
            "Scope: {:?} is not supported (want swarm)",
            clip(&r.scope)
        )));
    }
    let mut spec = NetworkSpec::overlay(r.name.clone());
    spec.labels = r.labels.unwrap_or_default();
    spec.driver_configuration = Some(Driver {
        name: OVERLAY_DRIVER.into(),
        options: r.options.unwrap_or_default(),
    });
    spec.internal = r.internal;
    spec.attachable = r.attachable;
    spec.ingress = r.ingress;
    spec.ipv6_enabled = r.enable_ipv6.unwrap_or(false);
    if let Some(ipam) = r.ipam {
        let configs: Vec<IpamConfig> = ipam
            .config
            .into_iter()
            .map(|c| IpamConfig {
                subnet: c.subnet,
                range: c.ip_range,
                gateway: c.gateway,
            })
            .collect();
        validate_ipam(&configs, spec.ipv6_enabled)?;
        if !configs.is_empty() || !ipam.driver.is_empty() || ipam.options.is_some() {
            spec.ipam_options = Some(IpamOptions {
                driver: Driver {
                    name: ipam.driver,
                    options: ipam.options.unwrap_or_default(),
                },
                configs,
            });
        }
    }
    Ok(spec)
}

/// The subnets a network has (allocated) or asked for.
fn subnets_of(n: &Network) -> Vec<Prefix> {
    n.ipam_options
        .as_ref()
        .or(n.spec.ipam_options.as_ref())
        .iter()
        .flat_map(|o| o.configs.iter())
        .filter_map(|c| Prefix::parse(&c.subnet))
        .collect()
}

/// What a new network must not clash with: a second `ingress` (SwarmKit's
/// words), a subnet overlapping another network's (libnetwork's words; Swarm
/// accepts such a network and leaves it unallocated, shoal refuses it up front).
async fn check_against_existing(state: &AppState, spec: &NetworkSpec) -> ApiResult<()> {
    if spec.ingress && spec.attachable {
        return Err(ApiError::bad_request(
            "rpc error: code = InvalidArgument desc = ingress network cannot be attachable",
        ));
    }
    let asked: Vec<Prefix> = spec
        .ipam_options
        .iter()
        .flat_map(|o| o.configs.iter())
        .filter_map(|c| Prefix::parse(&c.subnet))
        .collect();
    if !spec.ingress && asked.is_empty() {
        return Ok(());
    }
    let all: Vec<Network> = state.store()?.list(ListFilter::default()).await?;
    if spec.ingress {
        if let Some(n) = all.iter().find(|n| n.spec.ingress) {
            return Err(ApiError::conflict(format!(
                "rpc error: code = AlreadyExists desc = ingress network ({}) is already present",
                n.meta.id
            )));
        }
    }
    if all
        .iter()
        .flat_map(subnets_of)
        .any(|have| asked.iter().any(|a| a.overlaps(&have)))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid pool request: Pool overlaps with other one on this address space",
        ));
    }
    Ok(())
}

/// `POST /networks/create`: an overlay network is the swarm's; any other
/// driver is created by the host engine.
pub async fn create(state: web::Data<AppState>, engine: web::Data<Engine>, body: Body) -> ApiResult<HttpResponse> {
    if engine.configured() && is_local_create(&body) {
        let (status, out) = engine.call("POST", "/networks/create", Some(body.0.to_vec())).await?;
        return Ok(HttpResponse::build(status).content_type("application/json").body(out));
    }
    let spec = decode_network(&body)?;
    match state.view().await? {
        crate::state::SwarmView::Active { manager: false, .. } => {
            return Err(ApiError::unavailable(
                "Cannot create a multi-host network from a worker node. Please create the network from a manager \
                 node.",
            ))
        }
        _ => state.manager().await?,
    };
    check_against_existing(&state, &spec).await?;
    let name = spec.name.clone();
    let net = Network::new(new_id(), spec);
    let created = state.store()?.create(&net).await.map_err(|e| match e.code {
        ErrorCode::NameConflict => ApiError::conflict(format!("network with name {} already exists", clip(&name))),
        _ => e.into(),
    })?;
    Ok(HttpResponse::Created().json(json!({"Id": created.meta.id, "Warning": ""})))
}

/// `DELETE /networks/{id}`: a swarm network, else the host engine's.
pub async fn delete(
    state: web::Data<AppState>,
    engine: web::Data<Engine>,
    path: web::Path<IdPath>,
) -> ApiResult<HttpResponse> {
    let found = match state.manager().await {
        Ok(_) => find(&state, &path.id).await,
        Err(e) => Err(e),
    };
    let n = match found {
        Ok(n) => n,
        Err(e) if engine.configured() && engine_may_answer(&e) => {
            let id = urlencode(&path.id);
            return match engine.call("DELETE", &format!("/networks/{id}"), None).await {
                Ok((status, body)) if status.is_success() => Ok(HttpResponse::build(status).body(body)),
                Ok((status, body)) if status != StatusCode::NOT_FOUND || e.status.as_u16() == 503 => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Err(engine::engine_error(status, &v, &body))
                }
                _ => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    // A service created between the checks below and the removal is caught
    // by the removal's own guard (no service refers to the network); the
    // checks then run again and name it.
    let mut attempts = 0;
    loop {
        // The ingress network may be removed like any other once no service uses
        // it (Docker allows it, to recreate it with other options). Refusals are
        // SwarmKit's words, naming the first service (or task) by ID.
        let services: Vec<shoal_shared::model::Service> = state.store()?.list(ListFilter::default()).await?;
        let refuse = |what: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("rpc error: code = FailedPrecondition desc = {what}"),
            )
        };
        if n.spec.ingress {
            let published = |s: &&shoal_shared::model::Service| {
                s.spec.endpoint_spec.as_ref().is_some_and(|ep| {
                    ep.ports
                        .iter()
                        .any(|p| p.publish_mode.unwrap_or_default() == shoal_shared::model::PublishMode::Ingress)
                })
            };
            if let Some(s) = services.iter().find(published) {
                return Err(refuse(format!(
                    "ingress network cannot be removed because service {} depends on it",
                    s.meta.id
                )));
            }
        } else {
            let user = services.iter().find(|s| {
                s.spec
                    .task_template
                    .networks
                    .iter()
                    .chain(s.spec.networks.iter())
                    .any(|a| a.target == n.meta.id || a.target == n.spec.name)
            });
            if let Some(s) = user {
                return Err(refuse(format!(
                    "network {} is in use by service {}",
                    n.meta.id, s.meta.id
                )));
            }
            // Tasks of a service that left the network may still run on it. A
            // removed service's tasks are on their way out (the scheduler stops
            // them on its next pass): they don't hold the network, as in Docker,
            // whose orchestrator marks them for removal at once.
            let tasks: Vec<shoal_shared::model::Task> = state.store()?.list(ListFilter::default()).await?;
            let running = tasks.iter().find(|t| {
                t.desired_state.wants_run()
                    && t.status.state <= TaskState::Running
                    && services.iter().any(|s| s.meta.id == t.service_id)
                    && t.networks_attachments.iter().any(|a| a.network.meta.id == n.meta.id)
            });
            if let Some(t) = running {
                return Err(refuse(format!("network {} is in use by task {}", n.meta.id, t.meta.id)));
            }
        }
        let guards = shoal_shared::store::unreferenced(Kind::Network, &n.meta.id, &[Kind::Service]);
        match state
            .store()?
            .delete_guarded(Kind::Network, &n.meta.id, None, guards)
            .await
        {
            Err(e) if e.code == shoal_shared::ErrorCode::InUse && attempts < 3 => attempts += 1,
            r => break r.map(drop)?,
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ipam: &str) -> ApiResult<NetworkSpec> {
        decode_network(format!(r#"{{"Name":"n","Driver":"overlay","IPAM":{{"Config":[{ipam}]}}}}"#).as_bytes())
    }

    #[test]
    fn ipam_configs_are_checked_as_docker_does() {
        let e = net(r#"{"Subnet":"999.1.1.1/99","Gateway":"zz"}"#).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (
                400,
                "invalid network config:\ninvalid subnet 999.1.1.1/99: invalid CIDR block notation"
            )
        );
        let e = net(r#"{"Subnet":"10.0.0.0/24","Gateway":"zz"}"#).unwrap_err();
        assert_eq!(
            e.message,
            "invalid network config:\ninvalid gateway zz: invalid address"
        );
        let e = net(r#"{"Subnet":"10.0.0.0/24","Gateway":"10.0.1.1"}"#).unwrap_err();
        assert_eq!(
            e.message,
            "invalid network config:\ninvalid gateway 10.0.1.1: parent subnet 10.0.0.0/24 doesn't contain this address"
        );
        let e = net(r#"{"Subnet":"10.0.0.1/24","IPRange":"10.1.0.0/16"}"#).unwrap_err();
        assert_eq!(
            e.message,
            "invalid network config:\n* invalid subnet 10.0.0.1/24: it should be 10.0.0.0/24\n* invalid ip-range \
             10.1.0.0/16: CIDR block is bigger than its parent subnet 10.0.0.1/24\n* invalid ip-range 10.1.0.0/16: \
             parent subnet 10.0.0.1/24 doesn't contain ip-range"
        );
        let e = net(r#"{"Subnet":"10.0.0.0/24","Gateway":"fd00::1"}"#).unwrap_err();
        assert!(e.message.ends_with("parent subnet is an IPv4 block"), "{}", e.message);
        let ok = net(r#"{"Subnet":"10.0.0.0/24","IPRange":"10.0.0.128/25","Gateway":"10.0.0.1"}"#).unwrap();
        assert_eq!(ok.ipam_options.unwrap().configs[0].gateway, "10.0.0.1");
        // IPv6 configs are not checked while IPv6 is off, as in Docker.
        net(r#"{"Subnet":"fd00::1/64"}"#).unwrap();
        assert!(decode_network(
            br#"{"Name":"n","Driver":"overlay","EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00::1/64"}]}}"#
        )
        .is_err());
        assert!(decode_network(br#"[{"Name":"n"}]"#).is_err());
    }
}
