//! `shoal-api`: the swarm subset of the Docker Engine API, so the real
//! `docker` CLI (and the `shoal` command) drive shoal.
//!
//! Every answer is derived from store objects on each request; the API
//! keeps no state of its own beyond this host's node ID and the swarm CA key
//! in its data dir.
//!
//! - [`config`]: flags and `SHOAL_*` variables; TLS is required off loopback;
//! - [`state`]: the store client and the swarm as this node sees it
//!   (inactive / manager / worker), read from the Cluster and Node objects;
//! - [`swarm`]: `/_ping`, `/version`, `/info`, `/swarm/*`; [`autolock`]:
//!   the secrets key sealed with the unlock key, `/swarm/unlock*`;
//! - [`objects`]: `/nodes`, `/services`, `/tasks`;
//! - [`networks`]: `/networks` (Docker's flat shape);
//! - [`secrets`]: `/secrets` (data sealed with the managers' key) and `/configs`;
//! - [`distribution`]: `/distribution` (answered by the agents);
//! - [`engine`]: every other endpoint (containers, images, exec, `/auth`,
//!   local networks, ...) passed to the host's Docker Engine;
//! - [`front`]: the public listeners (TCP, TLS, the unix socket): hijacked
//!   `exec start`/`attach` go to the engine both ways, the rest to actix;
//! - [`logs`]: `/services/{id}/logs`, `/tasks/{id}/logs` (pulled from the agents);
//! - [`request`]: request bodies within limits, query parameters, `{id}`
//!   paths, and the [`request::Manager`] extractor;
//! - [`host`]: this host's description; [`certs`]: root CA, join tokens,
//!   node certificates, `TLSInfo`;
//! - [`join`]: the swarm listener (joins and certificate renewals over TLS),
//!   the joining side, and the renewal loop; [`managers`]: what a manager
//!   host brings (swarm address, NATS URLs) and joining as one;
//! - [`spec`]: body decoding that names the bad field, service spec
//!   validation with Docker's defaults;
//! - [`filters`]: Docker's `filters` query parameter;
//! - [`fold`]: object keys matched to fields ignoring case, as Go decodes;
//! - [`error`]: Docker's status codes and words;
//! - [`metrics`]: requests by route pattern and status, and their latency.
//!
//! Every route is served both bare and under `/v{version}/`.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod autolock;
pub mod certs;
pub mod config;
pub mod distribution;
pub mod engine;
pub mod error;
pub mod filters;
pub mod fold;
pub mod front;
pub mod host;
pub mod host_role;
pub mod join;
pub mod logs;
pub mod managers;
pub mod metrics;
pub mod names;
pub mod networks;
pub mod objects;
#[cfg(test)]
mod proptests;
pub mod request;
pub mod secrets;
pub mod spec;
pub mod state;
pub mod swarm;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use futures::future::LocalBoxFuture;

pub use config::Config;
use error::ApiError;
use state::AppState;

/// Docker's API version check for a `/v{version}/` path that names a route:
/// a version above [`state::API_VERSION`] is too new, one below
/// [`state::MIN_API_VERSION`] too old (400, Docker's words). Paths that name
/// no route are left to the router (404, as Docker answers them).
pub fn version_refusal(path: &str, rmap: &actix_web::dev::ResourceMap) -> Option<ApiError> {
    let rest = path.strip_prefix("/v")?;
    let version = rest.split('/').next().unwrap_or_default();
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    if !rmap.has_resource(path) {
        return None;
    }
    version_bounds(version)
}

/// Docker's answer for an API version outside [`state::MIN_API_VERSION`]..=[`state::API_VERSION`].
pub fn version_bounds(version: &str) -> Option<ApiError> {
    if compare_versions(version, state::MIN_API_VERSION).is_lt() {
        return Some(ApiError::bad_request(format!(
            "client version {} is too old. Minimum supported API version is {}, please upgrade your client to a \
             newer version",
            error::clip(version),
            state::MIN_API_VERSION
        )));
    }
    if compare_versions(version, state::API_VERSION).is_gt() {
        return Some(ApiError::bad_request(format!(
            "client version {} is too new. Maximum supported API version is {}",
            error::clip(version),
            state::API_VERSION
        )));
    }
    None
}

/// Compares dotted versions number by number, as Docker does (`1.9` < `1.24`;
/// a part that is not a number counts as 0, a missing one too).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse::<u64>().unwrap_or(0)).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let (x, y) = (pa.get(i).copied().unwrap_or(0), pb.get(i).copied().unwrap_or(0));
        if x != y {
            return x.cmp(&y);
        }
    }
    std::cmp::Ordering::Equal
}

/// Docker's answer for a path it has no route for, or a method a path does not take.
pub fn page_not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "message": "page not found" }))
}

/// The request's body reader, shared by the handler (which reads it through
/// this) and the response body ([`HoldPayload`], which holds it until the
/// response has been sent). While the
/// reader lives, a body the handler left unread (a client that stalled past
/// `--body-timeout-ms`, or a body no handler wanted) makes actix close the
/// connection after the response; once it is dropped, actix would instead
/// keep draining a chunked body for as long as the client trickles it.
#[derive(Clone)]
struct SharedPayload(Rc<RefCell<actix_web::dev::Payload>>);

impl futures::Stream for SharedPayload {
    type Item = Result<web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut payload = self.0.borrow_mut();
        Pin::new(&mut *payload).poll_next(cx)
    }
}

/// A response body that keeps the request's body reader alive while it is sent.
struct HoldPayload {
    body: BoxBody,
    _payload: SharedPayload,
}

impl actix_web::body::MessageBody for HoldPayload {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// `res` with a body that holds `payload` until it has been sent.
fn holding(res: ServiceResponse<BoxBody>, payload: SharedPayload) -> ServiceResponse<BoxBody> {
    res.map_body(|_, body| {
        BoxBody::new(HoldPayload {
            body,
            _payload: payload,
        })
    })
}

/// Before routing: Docker's API version check, and the body reader shared
/// with the response ([`SharedPayload`]). After: a known path asked with a
/// method it does not take is answered like an unknown path (404), as Docker does.
fn gate<S>(
    mut req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<actix_web::dev::ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
    S::Future: 'static,
{
    use actix_web::HttpMessage as _;
    let shared = SharedPayload(Rc::new(RefCell::new(req.take_payload())));
    let stream: Pin<Box<dyn futures::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>>> =
        Box::pin(shared.clone());
    req.set_payload(actix_web::dev::Payload::from(stream));
    if let Some(e) = version_refusal(req.path(), req.resource_map()) {
        let resp = holding(req.into_response(e.error_response()), shared);
        return Box::pin(async move { Ok(resp) });
    }
    let fut = srv.call(req);
    Box::pin(async move {
        let mut res = fut.await?;
        if res.status() == StatusCode::METHOD_NOT_ALLOWED {
            let (req, _) = res.into_parts();
            res = ServiceResponse::new(req, page_not_found());
        }
        Ok(holding(res, shared))
    })
}

/// The API's routes (mounted bare and under `/v{version}`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_ping", web::get().to(swarm::ping))
        .route("/_ping", web::head().to(swarm::ping))
        .route("/version", web::get().to(swarm::version))
        .route("/info", web::get().to(swarm::info))
        .route("/swarm", web::get().to(swarm::inspect))
        .route("/swarm/init", web::post().to(swarm::init))
        .route("/swarm/join", web::post().to(swarm::join))
        .route("/swarm/leave", web::post().to(swarm::leave))
        .route("/swarm/update", web::post().to(swarm::update))
        .route("/swarm/unlockkey", web::get().to(autolock::unlock_key))
        .route("/swarm/unlock", web::post().to(autolock::unlock))
        .route("/nodes", web::get().to(objects::node_list))
        .route("/nodes/{id}", web::get().to(objects::node_inspect))
        .route("/nodes/{id}", web::delete().to(objects::node_delete))
        .route("/nodes/{id}/update", web::post().to(objects::node_update))
        .route("/services", web::get().to(objects::service_list))
        .route("/services/create", web::post().to(objects::service_create))
        .route("/services/{id}", web::get().to(objects::service_inspect))
        .route("/services/{id}", web::delete().to(objects::service_delete))
        .route("/services/{id}/update", web::post().to(objects::service_update))
        .route("/services/{id}/logs", web::get().to(logs::service_logs))
        .route("/tasks", web::get().to(objects::task_list))
        .route("/tasks/{id}", web::get().to(objects::task_inspect))
        .route("/tasks/{id}/logs", web::get().to(logs::task_logs))
        .route("/networks", web::get().to(networks::list))
        .route("/networks/create", web::post().to(networks::create))
        .route("/networks/{id}", web::get().to(networks::inspect))
        .route("/networks/{id}", web::delete().to(networks::delete))
        .route("/secrets", web::get().to(secrets::secret_list))
        .route("/secrets/create", web::post().to(secrets::secret_create))
        .route("/secrets/{id}", web::get().to(secrets::secret_inspect))
        .route("/secrets/{id}", web::delete().to(secrets::secret_delete))
        .route("/secrets/{id}/update", web::post().to(secrets::secret_update))
        .route("/configs", web::get().to(secrets::config_list))
        .route("/configs/create", web::post().to(secrets::config_create))
        .route("/configs/{id}", web::get().to(secrets::config_inspect))
        .route("/configs/{id}", web::delete().to(secrets::config_delete))
        .route("/configs/{id}/update", web::post().to(secrets::config_update))
        .route("/distribution/{id:.*}/json", web::get().to(distribution::distribution));
}

/// Loads the TLS server config from PEM files; with `ca`, clients must
/// present a certificate that CA signed (mutual TLS).
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read_certs = |path: &std::path::Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("parse {}: {e}", path.display()))
    };
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("read {}: {e}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_single_cert(certs, key)?)
}

/// Runs the API until `shutdown` completes. Must be called inside an actix `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate().map_err(|m| anyhow::anyhow!(m))?;
    metrics::metrics();
    let node_id = config.resolve_node_id()?;
    let swarm_dir = config.swarm_dir();
    let membership = shoal_shared::membership::Membership::read(&swarm_dir);
    let name = format!("shoal-api-{node_id}");
    // A host without NATS of its own reaches the managers' once it has joined.
    let own_nats = match config.nats_from_membership() {
        false => Some(config.nats.connect(&name).await?),
        true => None,
    };
    let store = match (own_nats.clone(), &membership) {
        (Some(nats), _) => Some(nats),
        (None, Some(m)) => Some(shoal_shared::membership::connect(&swarm_dir, m, &name).await?),
        (None, None) => None,
    }
    .map(shoal_shared::store::StoreClient::new);
    let swarm = join::SwarmSettings::new(
        swarm_dir.clone(),
        config.swarm_addr().map_err(|m| anyhow::anyhow!(m))?,
        config.nats_advertise_urls(),
        config.nats_from_membership(),
        std::time::Duration::from_millis(config.join_timeout_ms),
    );
    let mut state = AppState::new(
        store,
        node_id.clone(),
        config.role,
        config.advertise_addr.clone(),
        config.data_dir.clone(),
        config.max_body,
        std::time::Duration::from_millis(config.body_timeout_ms),
        swarm,
    );
    state.store_replica = config.store_replica;
    let state = web::Data::new(state);
    if let Some(nats) = own_nats {
        // A host with NATS of its own can be a manager: its dispatcher asks here for the secrets key.
        autolock::serve_key(nats, state.clone()).await?;
    }
    if state.swarm.identity.load(&swarm_dir)? && membership.as_ref().is_some_and(|m| m.role == "manager") {
        join::start_listener(&state)?;
    }
    actix_web::rt::spawn(join::renew_loop(swarm_dir, state.swarm.identity.clone()));
    if config.manage_units && config.store_replica.is_none() {
        actix_web::rt::spawn(host_role::follow(state.clone(), config.data_dir.clone()));
    }
    let engine = web::Data::new(engine::Engine::new(&config.engine));
    let engine_for_front = engine.clone().into_inner();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(engine.clone())
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("Api-Version", state::API_VERSION))
                    .add(("Ostype", "linux"))
                    .add(("Server", concat!("shoal/", env!("CARGO_PKG_VERSION"), " (linux)"))),
            )
            .app_data(state.clone())
            .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::bad_request(e.to_string()).into()))
            .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::bad_request(e.to_string()).into()))
            .configure(routes)
            .service(web::scope("/v{api_version:[0-9.]+}").configure(routes))
            .default_service(web::to(engine::passthrough))
            .wrap_fn(gate)
            .wrap_fn(metrics::observe)
    })
    // Request heads must arrive within 5 s (408), bodies within --body-timeout-ms
    // (`read_body`); idle keep-alive connections close after 5 s, and a closing
    // connection that the client does not close gets 1 s.
    .client_request_timeout(std::time::Duration::from_secs(5))
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .keep_alive(std::time::Duration::from_secs(5))
    .workers(2)
    .shutdown_timeout(2)
    .disable_signals();
    // The public listeners are the front's (hijacked requests go to the
    // engine both ways there); actix serves everything else on a private
    // socket behind it.
    let inner = config.data_dir.join("api-inner.sock");
    let _ = std::fs::remove_file(&inner);
    server = server.bind_uds(&inner)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
    let front = std::sync::Arc::new(front::Front {
        inner,
        engine: engine_for_front,
    });
    let mut fronts = Vec::new();
    if let Some(addr) = config.tcp_addr().map_err(|m| anyhow::anyhow!(m))? {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                if config.tls_ca.is_none() && !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "TLS without --tls-ca: any client that reaches this address controls the swarm");
                }
                Some(std::sync::Arc::new(tls_config(cert, key, config.tls_ca.as_deref())?))
            }
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        fronts.push(actix_web::rt::spawn(front.clone().serve_tcp(listener, tls)));
    }
    if let Some(path) = config.socket_path() {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        // Whoever can reach the socket controls the swarm: owner and group only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
        fronts.push(actix_web::rt::spawn(front.clone().serve_unix(listener)));
    }
    let server = server.run();
    let handle = server.handle();
    tracing::info!(node = %node_id, listen = %config.listen, socket = ?config.socket_path(), "shoal-api ready");
    tokio::select! {
        r = server => r?,
        _ = shutdown => {
            tracing::info!("shoal-api stopping");
            for f in &fronts {
                f.abort();
            }
            handle.stop(true).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.9", "1.24"), Less);
        assert_eq!(compare_versions("1.50", "1.50"), Equal);
        assert_eq!(compare_versions("9.99", "1.50"), Greater);
        assert_eq!(compare_versions("1.50.0", "1.50"), Equal);
        assert_eq!(compare_versions("...", "1.24"), Less);
    }
}
