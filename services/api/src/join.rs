//! Joining a swarm over TLS, and node certificates.
//!
//! A manager's API serves a second, TLS-only listener (`--swarm-listen`,
//! Docker's port 2377) with two routes:
//!
//! - `POST /join` (no client certificate): a join token and a certificate
//!   signing request in, a node certificate, the CA certificate, the
//!   managers' NATS URLs and swarm addresses out; the Node object is written.
//! - `POST /renew` (the node's current certificate as TLS client
//!   certificate): a new CSR in, a new certificate out, with the role the
//!   store holds for that node now.
//!
//! The joining side ([`join`]) pins the swarm's CA by the digest in the token:
//! the TLS handshake fails, before any request is sent, unless the chain the
//! manager presents holds a CA certificate with that digest which signed the
//! manager's certificate. The host keeps what it received in
//! `<data-dir>/swarm/` ([`shoal_shared::membership`]), which the host's other
//! processes (the agent) read, and renews its certificate at a random point
//! between 50 % and 80 % of its lifetime ([`renew_loop`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use shoal_shared::membership::{self, Membership, CA_CERT, NODE_CERT, NODE_KEY};
use shoal_shared::model::{Availability, Cluster, Node, NodeRole, NodeState, NodeStatus, DEFAULTS};
use shoal_shared::store::StoreClient;

use crate::certs;
use crate::error::{ApiError, ApiResult, ALREADY_IN_SWARM};
use crate::managers;
use crate::state::AppState;

/// Docker's words when a join does not complete in time.
pub const JOIN_TIMEOUT: &str =
    "Timeout was reached before node joined. The attempt to join the swarm will continue in \
                                the background. Use the \"docker info\" command to see the current swarm status of \
                                your node.";
/// SwarmKit's words for a token whose secret is not the cluster's.
pub const WRONG_SECRET: &str =
    "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster";
/// The TLS name every manager certificate carries (SwarmKit's manager role name).
pub const MANAGER_NAME: &str = certs::MANAGER_OU;

/// Joining and certificate settings, and this node's TLS identity.
pub struct SwarmSettings {
    /// `<data-dir>/swarm`: membership, node certificate and key, CA certificate.
    pub dir: PathBuf,
    /// Where this host, as a manager, serves joins and renewals.
    pub listen: Option<std::net::SocketAddr>,
    /// The NATS URLs given to joining hosts.
    pub nats_advertise: Vec<String>,
    /// The API reaches NATS only through the membership (`--nats-url none`).
    pub nats_from_membership: bool,
    pub join_timeout: Duration,
    pub identity: Arc<Identity>,
    listener_started: Mutex<bool>,
    join_lock: tokio::sync::Mutex<()>,
}

impl SwarmSettings {
    pub fn new(
        dir: PathBuf,
        listen: Option<std::net::SocketAddr>,
        nats_advertise: Vec<String>,
        nats_from_membership: bool,
        join_timeout: Duration,
    ) -> SwarmSettings {
        SwarmSettings {
            dir,
            listen,
            nats_advertise,
            nats_from_membership,
            join_timeout,
            identity: Arc::new(Identity::default()),
            listener_started: Mutex::new(false),
            join_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The swarm address this manager advertises (`IP:PORT`), if it listens.
    pub fn advertised(&self, ip: &str) -> Option<String> {
        self.listen.map(|l| format!("{ip}:{}", l.port()))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This node's certificate and key as the swarm listener presents them;
/// replaced in place when the certificate is renewed (no restart).
#[derive(Debug, Default)]
pub struct Identity {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Identity {
    /// Loads `node.crt` + `ca.crt` (the chain) and `node.key` from `dir`;
    /// false when the host has no identity.
    pub fn load(&self, dir: &Path) -> anyhow::Result<bool> {
        if !dir.join(NODE_CERT).exists() {
            return Ok(false);
        }
        let mut chain: Vec<CertificateDer<'static>> = Vec::new();
        for f in [NODE_CERT, CA_CERT] {
            let c = CertificateDer::from_pem_file(dir.join(f))
                .map_err(|e| anyhow::anyhow!("read {}: {e}", dir.join(f).display()))?;
            chain.push(c);
        }
        let key = PrivateKeyDer::from_pem_file(dir.join(NODE_KEY))
            .map_err(|e| anyhow::anyhow!("read {}: {e}", dir.join(NODE_KEY).display()))?;
        let signing = provider().key_provider.load_private_key(key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(CertifiedKey::new(chain, signing)));
        Ok(true)
    }

    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl rustls::server::ResolvesServerCert for Identity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `POST /join` on a manager's swarm listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinRequest {
    pub token: String,
    /// PEM certificate signing request for the node's new key.
    pub csr: String,
    /// The joining host's node ID (kept in its `node-id` file).
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub hostname: String,
    /// The address other nodes reach the joining node at.
    pub addr: String,
    pub availability: Availability,
    /// Where the joining host serves joins and renewals if it becomes a
    /// manager (`IP:PORT`; empty: none, `<addr>:2377` is assumed).
    #[serde(default)]
    pub swarm_addr: String,
    /// The NATS URLs the joining host serves (empty: it has no NATS of its
    /// own and can join only as a worker).
    #[serde(rename = "NATSURLs", default)]
    pub nats_urls: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinAnswer {
    #[serde(rename = "ClusterID")]
    pub cluster_id: String,
    pub role: NodeRole,
    /// PEM node certificate.
    pub certificate: String,
    /// PEM root CA certificate.
    pub ca_certificate: String,
    pub nats_urls: Vec<String>,
    /// The managers' swarm addresses (for renewals).
    pub managers: Vec<String>,
    /// The managers' secrets key, for a host joining as a manager (every
    /// manager must open the secrets any other one sealed). Only in this
    /// answer, over the TLS connection the token's CA digest pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_key: Option<shoal_shared::secrets::KeyAnswer>,
}

/// `POST /renew`: the client certificate says who asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewRequest {
    pub csr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewAnswer {
    pub certificate: String,
    pub role: NodeRole,
}

/// The TLS client certificate of a connection to the swarm listener.
#[derive(Debug, Clone)]
struct PeerCert(Vec<u8>);

fn role_ou(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => certs::MANAGER_OU,
        NodeRole::Worker => certs::WORKER_OU,
    }
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

/// How long node certificates last, from the cluster's `CAConfig`.
fn cert_expiry(cluster: &Cluster) -> Duration {
    cluster
        .spec
        .ca_config
        .node_cert_expiry
        .unwrap_or(DEFAULTS.node_cert_expiry)
}

/// Signs a node certificate with the cluster's CA (kept in the store).
pub fn sign_for(cluster: &Cluster, csr: &str, node_id: &str, role: NodeRole) -> ApiResult<String> {
    if cluster.root_ca_key.is_empty() {
        return Err(ApiError::internal("the cluster has no CA key in the store"));
    }
    certs::sign_node_cert(
        &cluster.tls_info.trust_root,
        &cluster.root_ca_key,
        csr,
        node_id,
        role_ou(role),
        &cluster.meta.id,
        cert_expiry(cluster),
    )
    .map_err(|e| ApiError::bad_request(format!("cannot sign the node certificate: {e}")))
}

/// Keeps a node's identity and membership in `dir`.
pub fn write_identity(
    dir: &Path,
    cert: &str,
    key: Option<&str>,
    ca: Option<&str>,
    m: Option<&Membership>,
) -> std::io::Result<()> {
    if let Some(ca) = ca {
        membership::write_file(dir, CA_CERT, ca.as_bytes(), 0o644)?;
    }
    if let Some(key) = key {
        membership::write_file(dir, NODE_KEY, key.as_bytes(), 0o600)?;
    }
    membership::write_file(dir, NODE_CERT, cert.as_bytes(), 0o644)?;
    if let Some(m) = m {
        m.write(dir)?;
    }
    Ok(())
}

async fn join_handler(state: web::Data<AppState>, body: web::Json<JoinRequest>) -> ApiResult<HttpResponse> {
    let r = body.into_inner();
    let cluster = state.manager().await?.cluster;
    certs::parse_token(&r.token).map_err(ApiError::bad_request)?;
    let role = if r.token == cluster.join_tokens.worker {
        NodeRole::Worker
    } else if r.token == cluster.join_tokens.manager {
        NodeRole::Manager
    } else {
        return Err(ApiError::bad_request(WRONG_SECRET));
    };
    if role == NodeRole::Manager && r.nats_urls.is_empty() {
        return Err(ApiError::bad_request(managers::NO_STORE_REPLICA));
    }
    if !shoal_shared::id::is_id(&r.node_id) {
        return Err(ApiError::bad_request(format!(
            "NodeID: {:?} is not a node ID",
            crate::error::clip(&r.node_id)
        )));
    }
    let store = state.store()?;
    if let Some(n) = store.get::<Node>(&r.node_id).await? {
        if n.status.state == NodeState::Ready {
            return Err(ApiError::conflict(format!(
                "node {} is already a member of this swarm and ready",
                r.node_id
            )));
        }
    }
    let certificate = sign_for(&cluster, &r.csr, &r.node_id, role)?;
    let secrets_key = match role {
        NodeRole::Manager => Some(shoal_shared::secrets::KeyAnswer {
            key: state.keys.key()?.bytes().to_vec(),
        }),
        NodeRole::Worker => None,
    };
    let status = NodeStatus {
        state: NodeState::Unknown,
        message: String::new(),
        addr: r.addr.clone(),
    };
    let manager_status =
        (role == NodeRole::Manager).then(|| managers::joining_manager_status(&r.addr, &r.swarm_addr, &r.nats_urls));
    match store.get::<Node>(&r.node_id).await? {
        Some(mut n) => {
            n.spec.role = role;
            n.spec.availability = r.availability;
            n.status = status;
            n.description.tls_info = Some(cluster.tls_info.clone());
            n.manager_status = manager_status;
            store.update(&n).await?;
        }
        None => {
            let mut n = Node::new(r.node_id.clone(), r.hostname.clone(), role);
            n.spec.availability = r.availability;
            n.status = status;
            n.description.hostname = r.hostname.clone();
            n.description.tls_info = Some(cluster.tls_info.clone());
            n.manager_status = manager_status;
            store.create(&n).await?;
        }
    }
    tracing::info!(node = %r.node_id, role = role_name(role), addr = %r.addr, "node joined");
    let (managers, nats_urls) = managers::managers_of(&state, &store).await?;
    Ok(HttpResponse::Ok().json(JoinAnswer {
        cluster_id: cluster.meta.id.clone(),
        role,
        certificate,
        ca_certificate: cluster.tls_info.trust_root.clone(),
        nats_urls,
        managers,
        secrets_key,
    }))
}

async fn renew_handler(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RenewRequest>,
) -> ApiResult<HttpResponse> {
    let Some(peer) = req.conn_data::<PeerCert>() else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "a node certificate of this swarm is required to renew one",
        ));
    };
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        certs::base64(&peer.0)
    );
    let info = certs::cert_info(&pem).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cluster = state.manager().await?.cluster;
    if info.cluster_id != cluster.meta.id {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "the certificate is not of this cluster",
        ));
    }
    let Some(node) = state.store()?.get::<Node>(&info.node_id).await? else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            format!("node {} is not a member of this swarm", info.node_id),
        ));
    };
    let certificate = sign_for(&cluster, &body.csr, &node.meta.id, node.spec.role)?;
    tracing::info!(node = %node.meta.id, "node certificate renewed");
    Ok(HttpResponse::Ok().json(RenewAnswer {
        certificate,
        role: node.spec.role,
    }))
}

/// Starts the swarm listener once this host is a manager with an identity
/// (at start, or after `swarm init`); later calls do nothing.
pub fn start_listener(state: &web::Data<AppState>) -> anyhow::Result<()> {
    let Some(addr) = state.swarm.listen else {
        return Ok(());
    };
    let mut started = state.swarm.listener_started.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return Ok(());
    }
    let ca_path = state.swarm.dir.join(CA_CERT);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(
        CertificateDer::from_pem_file(&ca_path).map_err(|e| anyhow::anyhow!("read {}: {e}", ca_path.display()))?,
    )?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(state.swarm.identity.clone());
    let data = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
            )
            .route("/join", web::post().to(join_handler))
            .route("/renew", web::post().to(renew_handler))
    })
    .on_connect(|conn, ext| {
        use actix_tls::accept::rustls_0_23::TlsStream;
        if let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
            if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                ext.insert(PeerCert(leaf.to_vec()));
            }
        }
    })
    .client_request_timeout(Duration::from_secs(5))
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .bind_rustls_0_23(addr, tls)?
    .run();
    actix_web::rt::spawn(server);
    *started = true;
    tracing::info!(%addr, "swarm listener ready (joins, certificate renewals)");
    Ok(())
}

/// Accepts a manager's TLS certificate only if its chain holds a CA
/// certificate whose digest is the join token's, and that CA signed it.
#[derive(Debug)]
struct PinnedCa {
    digest: String,
    mismatch: Arc<AtomicBool>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| certs::ca_digest(c) == self.digest) else {
            self.mismatch.store(true, Ordering::SeqCst);
            return Err(rustls::Error::General("remote CA does not match fingerprint".into()));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a call to a manager's swarm listener failed.
#[derive(Debug)]
enum CallError {
    /// The manager's CA is not the one the token names.
    Mismatch,
    /// No TLS connection (refused, timed out, handshake failed): try another
    /// manager, or again.
    Unreachable(String),
}

/// One JSON POST over TLS to a manager's swarm listener: (status, body).
async fn call<T: Serialize>(
    tls: Arc<rustls::ClientConfig>,
    mismatch: Option<&AtomicBool>,
    addr: &str,
    path: &str,
    body: &T,
    timeout: Duration,
) -> Result<(u16, bytes::Bytes), CallError> {
    use http_body_util::BodyExt;
    let unreachable = |e: String| CallError::Unreachable(format!("{addr}: {e}"));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let name = ServerName::try_from(MANAGER_NAME).map_err(|e| unreachable(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                if mismatch.is_some_and(|m| m.load(Ordering::SeqCst)) {
                    CallError::Mismatch
                } else {
                    unreachable(format!("TLS: {e}"))
                }
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        actix_web::rt::spawn(async move {
            let _ = conn.await;
        });
        let json = serde_json::to_vec(body).map_err(|e| unreachable(e.to_string()))?;
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, MANAGER_NAME)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(json)))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(unreachable("timed out".into())))
}

/// The message of a manager's error answer.
fn message_of(status: u16, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let status =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, message)
}

/// What `POST /swarm/join` asks of this host.
pub struct JoinParams {
    pub remote_addrs: Vec<String>,
    pub token: String,
    pub addr: String,
    pub availability: Availability,
}

/// Joins this host to the swarm a manager at one of `remote_addrs` serves:
/// pins its CA by the token, proves the token, sends a CSR and keeps the
/// answer in `<data-dir>/swarm/`; then waits until this node is Ready (its
/// agent registered), all within `--join-timeout-ms`.
pub async fn join(state: &web::Data<AppState>, p: JoinParams) -> ApiResult<()> {
    let _one_at_a_time = state.swarm.join_lock.lock().await;
    let dir = &state.swarm.dir;
    if Membership::read(dir).is_some() {
        return Err(ApiError::unavailable(ALREADY_IN_SWARM));
    }
    let (digest, _) = certs::parse_token(&p.token).map_err(ApiError::bad_request)?;
    let digest = digest.to_string();
    let started = Instant::now();
    let deadline = started + state.swarm.join_timeout;
    let (csr, key) = certs::node_csr(&state.node_id).map_err(|e| ApiError::internal(format!("node key: {e}")))?;
    let request = JoinRequest {
        token: p.token.clone(),
        csr,
        node_id: state.node_id.clone(),
        hostname: crate::host::hostname(),
        addr: p.addr.clone(),
        availability: p.availability,
        swarm_addr: state.swarm.advertised(&p.addr).unwrap_or_default(),
        nats_urls: managers::own_nats_urls(state),
    };
    let mut last = String::new();
    let answer: JoinAnswer = 'found: loop {
        for addr in &p.remote_addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mismatch = Arc::new(AtomicBool::new(false));
            let tls = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ApiError::internal(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCa {
                    digest: digest.clone(),
                    mismatch: mismatch.clone(),
                    provider: provider(),
                }))
                .with_no_client_auth();
            match call(Arc::new(tls), Some(&mismatch), addr, "/join", &request, left).await {
                Ok((200, body)) => match serde_json::from_slice::<JoinAnswer>(&body) {
                    Ok(a) => break 'found a,
                    Err(e) => last = format!("{addr}: bad answer: {e}"),
                },
                Ok((status, body)) => return Err(message_of(status, &body)),
                Err(CallError::Mismatch) => {
                    return Err(ApiError::internal(format!(
                        "remote CA does not match fingerprint. Expected: {}",
                        certs::digest_hex(&digest)
                    )))
                }
                Err(CallError::Unreachable(e)) => last = e,
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(last = %last, "join: no manager answered in time");
            return Err(ApiError::unavailable(JOIN_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if certs::ca_digest(&certs::pem_to_der(&answer.ca_certificate)) != digest {
        return Err(ApiError::internal(format!(
            "remote CA does not match fingerprint. Expected: {}",
            certs::digest_hex(&digest)
        )));
    }
    let m = Membership {
        cluster_id: answer.cluster_id.clone(),
        node_id: state.node_id.clone(),
        role: role_name(answer.role).to_string(),
        // A manager host's processes use its own NATS server first.
        nats_urls: managers::union(&managers::own_nats_urls(state), answer.nats_urls.clone()),
        managers: if answer.managers.is_empty() {
            p.remote_addrs.clone()
        } else {
            answer.managers.clone()
        },
    };
    write_identity(
        dir,
        &answer.certificate,
        Some(&key),
        Some(&answer.ca_certificate),
        Some(&m),
    )
    .map_err(|e| ApiError::internal(format!("write {}: {e}", dir.display())))?;
    state
        .swarm
        .identity
        .load(dir)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if state.swarm.nats_from_membership {
        let nats = membership::connect(dir, &m, &format!("shoal-api-{}", state.node_id))
            .await
            .map_err(|e| ApiError::internal(format!("connect to the managers' NATS: {e}")))?;
        state.set_store(Some(StoreClient::new(nats)));
    }
    state.forget_cluster();
    if let (NodeRole::Manager, Some(k)) = (answer.role, answer.secrets_key.as_ref()) {
        state.keys.install(&k.key)?;
    }
    if answer.role == NodeRole::Manager {
        if let Err(e) = managers::joined_as_manager(state, &m).await {
            after_leave(state)?;
            return Err(e);
        }
    }
    tracing::info!(cluster = %m.cluster_id, role = %m.role, managers = ?m.managers, "joined; waiting for this node's agent to register");
    // The join answers once this node's agent has registered (Ready).
    let store = state.store()?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ApiError::unavailable(JOIN_TIMEOUT));
        }
        let quick = store.with_deadline(left.min(Duration::from_secs(2)));
        if let Ok(Some(n)) = quick.get::<Node>(&state.node_id).await {
            if n.status.state == NodeState::Ready {
                tracing::info!(took_ms = started.elapsed().as_millis() as u64, "node ready");
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After `swarm init`: this manager's own certificate, signed with the new
/// CA, and its membership; then the swarm listener starts.
pub fn after_init(state: &web::Data<AppState>, cluster: &Cluster, addr: &str) -> ApiResult<()> {
    let (csr, key) = certs::node_csr(&state.node_id).map_err(|e| ApiError::internal(format!("node key: {e}")))?;
    let cert = sign_for(cluster, &csr, &state.node_id, NodeRole::Manager)?;
    let m = Membership {
        cluster_id: cluster.meta.id.clone(),
        node_id: state.node_id.clone(),
        role: "manager".into(),
        nats_urls: state.swarm.nats_advertise.clone(),
        managers: state.swarm.advertised(addr).into_iter().collect(),
    };
    let dir = &state.swarm.dir;
    write_identity(dir, &cert, Some(&key), Some(&cluster.tls_info.trust_root), Some(&m))
        .map_err(|e| ApiError::internal(format!("write {}: {e}", dir.display())))?;
    state
        .swarm
        .identity
        .load(dir)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    start_listener(state).map_err(|e| ApiError::internal(format!("swarm listener: {e}")))
}

/// After `swarm leave`: forget the membership and the identity.
pub fn after_leave(state: &AppState) -> ApiResult<()> {
    membership::forget(&state.swarm.dir)
        .map_err(|e| ApiError::internal(format!("remove {}: {e}", state.swarm.dir.display())))?;
    state.swarm.identity.clear();
    if state.swarm.nats_from_membership {
        state.set_store(None);
    }
    Ok(())
}

/// When to renew a certificate valid from `not_before` to `not_after`
/// (seconds): at `fraction` (50-80 %) of its lifetime.
pub fn renew_at(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    not_before + ((not_after - not_before) as f64 * fraction) as i64
}

/// Renews this node's certificate at a random point between 50 % and 80 %
/// of its lifetime, from any manager in the membership, for as long as the
/// process runs; the swarm listener presents the new one at once.
pub async fn renew_loop(dir: PathBuf, identity: Arc<Identity>) {
    // (the certificate's not_after, the renewal time drawn for it)
    let mut planned: Option<(i64, i64)> = None;
    loop {
        let wait = match renew_step(&dir, &identity, &mut planned).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("certificate renewal: {e}");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn renew_step(dir: &Path, identity: &Identity, planned: &mut Option<(i64, i64)>) -> anyhow::Result<Duration> {
    let idle = Duration::from_secs(2);
    let Some(m) = Membership::read(dir) else {
        return Ok(idle);
    };
    let Ok(pem) = std::fs::read_to_string(dir.join(NODE_CERT)) else {
        return Ok(idle);
    };
    let info = certs::cert_info(&pem)?;
    let at = match *planned {
        Some((not_after, at)) if not_after == info.not_after => at,
        _ => {
            let at = renew_at(info.not_before, info.not_after, rand::random::<f64>() * 0.3 + 0.5);
            tracing::info!(
                not_after = info.not_after,
                renew_at = at,
                "node certificate renewal planned"
            );
            *planned = Some((info.not_after, at));
            at
        }
    };
    let now = chrono::Utc::now().timestamp();
    if now < at {
        return Ok(Duration::from_secs((at - now) as u64).min(idle));
    }
    let (csr, key) = certs::node_csr(&m.node_id)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(dir.join(CA_CERT))?)?;
    let chain = vec![certs::pem_to_der(&pem).into()];
    let current_key = PrivateKeyDer::from_pem_file(dir.join(NODE_KEY))?;
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, current_key)?,
    );
    let mut last = String::from("no manager address in the membership");
    for addr in &m.managers {
        match call(
            tls.clone(),
            None,
            addr,
            "/renew",
            &RenewRequest { csr: csr.clone() },
            Duration::from_secs(5),
        )
        .await
        {
            Ok((200, body)) => {
                let a: RenewAnswer = serde_json::from_slice(&body)?;
                let mut m = m.clone();
                m.role = role_name(a.role).to_string();
                write_identity(dir, &a.certificate, Some(&key), None, Some(&m))?;
                identity.load(dir)?;
                let new = certs::cert_info(&a.certificate)?;
                tracing::info!(not_after = new.not_after, role = %m.role, "node certificate renewed");
                return Ok(Duration::ZERO);
            }
            Ok((status, body)) => last = format!("{addr}: {}", message_of(status, &body).message),
            Err(CallError::Mismatch) => last = format!("{addr}: CA mismatch"),
            Err(CallError::Unreachable(e)) => last = e,
        }
    }
    anyhow::bail!("{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_lifetime() {
        assert_eq!(renew_at(1000, 2000, 0.5), 1500);
        assert_eq!(renew_at(1000, 2000, 0.8), 1800);
        for _ in 0..100 {
            let at = renew_at(0, 1000, rand::random::<f64>() * 0.3 + 0.5);
            assert!((500..=800).contains(&at), "{at}");
        }
    }
}
