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
//! - [`swarm`]: `/_ping`, `/version`, `/info`, `/swarm/*`;
//! - [`objects`]: `/nodes`, `/services`, `/tasks`;
//! - [`networks`]: `/networks` (Docker's flat shape) and `/distribution`;
//! - [`spec`]: body decoding that names the bad field, service spec
//!   validation with Docker's defaults;
//! - [`filters`]: Docker's `filters` query parameter;
//! - [`error`]: Docker's status codes and words.
//!
//! Every route is served both bare and under `/v{version}/`.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod config;
pub mod error;
pub mod filters;
pub mod host;
pub mod networks;
pub mod objects;
pub mod spec;
pub mod state;
pub mod swarm;

use std::future::Future;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;

pub use config::Config;
use error::{ApiError, ApiResult};
use state::AppState;

/// Reads a request body of at most `limit` bytes. A declared length over the
/// limit is refused before reading anything; a streamed body is cut off at the limit.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> ApiResult<web::Bytes> {
    let too_large = || {
        ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?;
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The `{id}` of a path (also under `/v{api_version}/`, whose extra parameter is ignored).
#[derive(Debug, serde::Deserialize)]
pub struct IdPath {
    pub id: String,
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "message": format!("page not found: {} {}", req.method(), req.path())
    }))
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
        .route("/swarm/unlockkey", web::get().to(swarm::unlock_key))
        .route("/nodes", web::get().to(objects::node_list))
        .route("/nodes/{id}", web::get().to(objects::node_inspect))
        .route("/nodes/{id}", web::delete().to(objects::node_delete))
        .route("/nodes/{id}/update", web::post().to(objects::node_update))
        .route("/services", web::get().to(objects::service_list))
        .route("/services/create", web::post().to(objects::service_create))
        .route("/services/{id}", web::get().to(objects::service_inspect))
        .route("/services/{id}", web::delete().to(objects::service_delete))
        .route("/services/{id}/update", web::post().to(objects::service_update))
        .route("/tasks", web::get().to(objects::task_list))
        .route("/tasks/{id}", web::get().to(objects::task_inspect))
        .route("/networks", web::get().to(networks::list))
        .route("/networks/create", web::post().to(networks::create))
        .route("/networks/{id}", web::get().to(networks::inspect))
        .route("/networks/{id}", web::delete().to(networks::delete))
        .route("/distribution/{id:.*}/json", web::get().to(networks::distribution))
        .route("/auth", web::post().to(networks::auth));
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
    let node_id = config.resolve_node_id()?;
    let nats = config.nats.connect(&format!("shoal-api-{node_id}")).await?;
    let store = shoal_shared::store::StoreClient::new(nats);
    let state = web::Data::new(AppState::new(
        store,
        node_id.clone(),
        config.role,
        config.advertise_addr.clone(),
        config.data_dir.clone(),
        config.max_body,
    ));
    let mut server = HttpServer::new(move || {
        App::new()
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
            .service(web::scope("/v{api_version}").configure(routes))
            .default_service(web::to(not_found))
    })
    .workers(2)
    .shutdown_timeout(2)
    .disable_signals();
    if let Some(addr) = config.tcp_addr().map_err(|m| anyhow::anyhow!(m))? {
        server = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                if config.tls_ca.is_none() && !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "TLS without --tls-ca: any client that reaches this address controls the swarm");
                }
                server.bind_rustls_0_23(addr, tls_config(cert, key, config.tls_ca.as_deref())?)?
            }
            _ => server.bind(addr)?,
        };
    }
    if let Some(path) = config.socket_path() {
        let _ = std::fs::remove_file(&path);
        server = server.bind_uds(&path)?;
        // Whoever can reach the socket controls the swarm: owner and group only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    }
    let server = server.run();
    let handle = server.handle();
    tracing::info!(node = %node_id, listen = %config.listen, socket = ?config.socket_path(), "shoal-api ready");
    tokio::select! {
        r = server => r?,
        _ = shutdown => {
            tracing::info!("shoal-api stopping");
            handle.stop(true).await;
        }
    }
    Ok(())
}
