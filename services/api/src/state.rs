//! What every handler shares: the store client, this node's identity, and
//! the swarm as this node sees it (derived from store objects on each request).

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use shoal_shared::model::{Cluster, Node, NodeRole};
use shoal_shared::store::{Kind, ListFilter, StoreClient, StoreObject};

use crate::config::Role;
use crate::error::{ApiError, ApiResult, NOT_MANAGER, NO_SWARM_MANAGER};

/// Docker Engine API version this API speaks.
pub const API_VERSION: &str = "1.50";
/// Oldest API version a client may use.
pub const MIN_API_VERSION: &str = "1.24";

pub struct AppState {
    /// The store, reached over NATS; `None` on a host that reaches NATS only
    /// through its membership (`--nats-url none`) and has not joined yet.
    store: RwLock<Option<StoreClient>>,
    pub node_id: String,
    /// This host's store replica (`--store-replica`), on a manager.
    pub store_replica: Option<u64>,
    pub role: Role,
    pub advertise_addr: String,
    pub data_dir: PathBuf,
    pub max_body: usize,
    /// Longest a client may take to send a request body (`--body-timeout-ms`).
    pub body_timeout: Duration,
    /// The cluster's ID once seen (there is only one cluster; it changes only by leave + init).
    cluster_id: RwLock<Option<String>>,
    /// The managers' key for secret data, read (or made) at first use; sealed with autolock.
    pub keys: crate::autolock::Keys,
    /// Joining and certificates: where the membership lives, the swarm listener, this node's TLS identity.
    pub swarm: crate::join::SwarmSettings,
}

/// The swarm as this node sees it.
#[derive(Debug, Clone)]
pub enum SwarmView {
    /// No cluster, or this node is not in it.
    Inactive,
    Active {
        cluster: Box<Cluster>,
        /// This node's object (absent only for a forced `--role worker` that never joined).
        node: Option<Box<Node>>,
        manager: bool,
    },
}

/// What a manager-only handler gets.
pub struct Ctx {
    pub cluster: Cluster,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Option<StoreClient>,
        node_id: String,
        role: Role,
        advertise_addr: String,
        data_dir: PathBuf,
        max_body: usize,
        body_timeout: Duration,
        swarm: crate::join::SwarmSettings,
    ) -> AppState {
        AppState {
            store: RwLock::new(store),
            node_id,
            store_replica: None,
            role,
            advertise_addr,
            data_dir: data_dir.clone(),
            max_body,
            body_timeout,
            cluster_id: RwLock::new(None),
            keys: crate::autolock::Keys::new(&data_dir),
            swarm,
        }
    }

    /// The managers' key for secret data (`<data-dir>/secrets.key`, made at
    /// first use; Docker's 503 while autolock keeps it sealed).
    pub fn secrets_key(&self) -> crate::error::ApiResult<std::sync::Arc<shoal_shared::secrets::SecretKey>> {
        self.keys.key()
    }

    /// The store client, or Docker's "not part of a swarm" (503) on a host
    /// that reaches the store only once it has joined.
    pub fn store(&self) -> ApiResult<StoreClient> {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| ApiError::unavailable(crate::error::NOT_IN_SWARM))
    }

    /// Uses (or, with `None`, drops) a store client: after a join, after a leave.
    pub fn set_store(&self, store: Option<StoreClient>) {
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = store;
    }

    fn current_store(&self) -> Option<StoreClient> {
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn forget_cluster(&self) {
        *self.cluster_id.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a cluster was seen (for answers that must not wait on the store).
    pub fn cached_cluster(&self) -> bool {
        self.cluster_id.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The swarm as this node sees it, read from the store.
    pub async fn view(&self) -> ApiResult<SwarmView> {
        match self.current_store() {
            Some(store) => self.view_with(&store).await,
            None => Ok(SwarmView::Inactive),
        }
    }

    pub async fn view_with(&self, store: &StoreClient) -> ApiResult<SwarmView> {
        let cached = self.cluster_id.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (cluster, node) = match cached {
            Some(cid) => {
                let filter = ListFilter::default()
                    .id_prefix(cid.clone())
                    .id_prefix(self.node_id.clone());
                let res = store.list_records(&[Kind::Cluster, Kind::Node], filter).await?;
                let mut cluster = None;
                let mut node = None;
                for r in &res.records {
                    if r.kind == Kind::Cluster && r.id == cid {
                        cluster = Some(Cluster::from_record(r)?);
                    } else if r.kind == Kind::Node && r.id == self.node_id {
                        node = Some(Node::from_record(r)?);
                    }
                }
                (cluster, node)
            }
            None => {
                let clusters: Vec<Cluster> = store.list(ListFilter::default()).await?;
                match clusters.into_iter().next() {
                    None => (None, None),
                    Some(c) => {
                        let node = store.get::<Node>(&self.node_id).await?;
                        (Some(c), node)
                    }
                }
            }
        };
        let Some(cluster) = cluster else {
            self.forget_cluster();
            return Ok(SwarmView::Inactive);
        };
        *self.cluster_id.write().unwrap_or_else(|e| e.into_inner()) = Some(cluster.meta.id.clone());
        let manager = match (self.role, &node) {
            (Role::Worker, _) => false,
            (_, None) => return Ok(SwarmView::Inactive),
            (Role::Manager, Some(_)) => true,
            (Role::Auto, Some(n)) => n.spec.role == NodeRole::Manager,
        };
        if manager {
            if let Err(e) = self.keys.follow(&cluster) {
                tracing::warn!(error = %e.message, "cannot bring the secrets key file in line with autolock");
            }
        }
        Ok(SwarmView::Active {
            cluster: Box::new(cluster),
            node: node.map(Box::new),
            manager,
        })
    }

    /// The cluster, or Docker's 503 when this node is not a manager of a swarm.
    pub async fn manager(&self) -> ApiResult<Ctx> {
        self.manager_or(NO_SWARM_MANAGER).await
    }

    /// [`AppState::manager`], saying `inactive` (Docker's 503 words) when
    /// there is no swarm.
    pub async fn manager_or(&self, inactive: &str) -> ApiResult<Ctx> {
        match self.view().await? {
            SwarmView::Inactive => Err(ApiError::unavailable(inactive)),
            SwarmView::Active { manager: false, .. } => Err(ApiError::unavailable(NOT_MANAGER)),
            SwarmView::Active { .. } if self.keys.locked() => Err(ApiError::unavailable(crate::autolock::SWARM_LOCKED)),
            SwarmView::Active { cluster, .. } => Ok(Ctx { cluster: *cluster }),
        }
    }

    /// The `Swarm` header of `/_ping`: quick, falls back to what was last seen.
    pub async fn ping_swarm_header(&self) -> &'static str {
        let Some(store) = self.current_store() else {
            return "inactive";
        };
        match self.view_with(&store.with_deadline(Duration::from_millis(500))).await {
            Ok(SwarmView::Inactive) => "inactive",
            Ok(SwarmView::Active { manager: true, .. }) => "active/manager",
            Ok(SwarmView::Active { manager: false, .. }) => "active/worker",
            Err(_) if self.cached_cluster() => {
                if self.role == Role::Worker {
                    "active/worker"
                } else {
                    "active/manager"
                }
            }
            Err(_) => "inactive",
        }
    }
}
