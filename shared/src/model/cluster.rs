//! The cluster object: Docker's `Swarm` (`GET /swarm`, `docker swarm inspect`).
//!
//! There is one, named `default`. It holds the cluster-wide settings
//! (`SwarmSpec`), the CA's public trust root, the address pool overlay
//! subnets come from, and the join tokens. The store keeps the tokens; the
//! API decides when to show them (`GET /swarm` yes, `GET /info` no).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults::DEFAULTS;
use super::is_zero_u64;
use super::network::Driver;
use super::node::TlsInfo;
use crate::store::Meta;

/// The only cluster's name.
pub const DEFAULT_CLUSTER_NAME: &str = "default";

/// `Spec.Orchestration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct OrchestrationConfig {
    /// Old tasks kept per slot (or per node, for global services); negative keeps all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_history_retention_limit: Option<i64>,
}

/// `Spec.Raft`. Ticks are seconds in shoal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RaftConfig {
    /// Log entries between snapshots.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub snapshot_interval: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_old_snapshots: Option<u64>,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub log_entries_for_slow_followers: u64,
    pub election_tick: u32,
    pub heartbeat_tick: u32,
}

/// `Spec.Dispatcher`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DispatcherConfig {
    /// How often agents heartbeat to the dispatcher.
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub heartbeat_period: Option<Duration>,
}

/// One external CA (`docker swarm update --external-ca`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExternalCa {
    /// Only `cfssl`.
    pub protocol: String,
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "CACert", skip_serializing_if = "String::is_empty")]
    pub ca_cert: String,
}

/// `Spec.CAConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CaConfig {
    /// Validity of the node certificates the CA issues.
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub node_cert_expiry: Option<Duration>,
    #[serde(rename = "ExternalCAs", skip_serializing_if = "Vec::is_empty")]
    pub external_cas: Vec<ExternalCa>,
    /// PEM; set only in a request that rotates the root CA.
    #[serde(rename = "SigningCACert", skip_serializing_if = "String::is_empty")]
    pub signing_ca_cert: String,
    #[serde(rename = "SigningCAKey", skip_serializing_if = "String::is_empty")]
    pub signing_ca_key: String,
    /// Bumped to force a root rotation with unchanged inputs.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub force_rotate: u64,
}

/// `Spec.EncryptionConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EncryptionConfig {
    pub auto_lock_managers: bool,
}

/// `Spec.TaskDefaults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
}

/// The user-modifiable cluster settings (`docker swarm update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SwarmSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub orchestration: OrchestrationConfig,
    pub raft: RaftConfig,
    pub dispatcher: DispatcherConfig,
    #[serde(rename = "CAConfig")]
    pub ca_config: CaConfig,
    pub task_defaults: TaskDefaults,
    pub encryption_config: EncryptionConfig,
}

impl SwarmSpec {
    /// The settings of a fresh `docker swarm init`, with shoal's Raft ticks
    /// (heartbeat 1, election 3): [`super::Defaults::swarm_spec`].
    pub fn default_spec() -> SwarmSpec {
        DEFAULTS.swarm_spec()
    }
}

/// `JoinTokens`: what `docker swarm join --token` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}

/// The cluster in the store (Docker's `Swarm`: `ClusterInfo` plus `JoinTokens`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Spec", default)]
    pub spec: SwarmSpec,
    #[serde(rename = "TLSInfo", default)]
    pub tls_info: TlsInfo,
    #[serde(rename = "RootRotationInProgress", default)]
    pub root_rotation_in_progress: bool,
    /// Pools overlay subnets are carved from.
    #[serde(rename = "DefaultAddrPool", default)]
    pub default_addr_pool: Vec<String>,
    /// Prefix length of each overlay subnet taken from the pool.
    #[serde(rename = "SubnetSize", default)]
    pub subnet_size: u32,
    /// UDP port of the VXLAN data path.
    #[serde(rename = "DataPathPort", default)]
    pub data_path_port: u32,
    #[serde(rename = "JoinTokens", default)]
    pub join_tokens: JoinTokens,
    /// The root CA's private key (PEM), so every manager can sign node
    /// certificates. Only the store holds it: the API removes it from every
    /// answer ([`Cluster::public`]), and only managers may read the store.
    #[serde(rename = "RootCAKey", default, skip_serializing_if = "String::is_empty")]
    pub root_ca_key: String,
    /// With autolock on: the unlock key sealed with the managers' secrets
    /// key (`shoal_shared::secrets::SecretKey::seal_unlock_key`), so an
    /// unlocked manager can show it (`docker swarm unlock-key`) and every
    /// manager can re-seal its key file after a rotation. Store-only, like
    /// the CA key.
    #[serde(rename = "SealedUnlockKey", default, skip_serializing_if = "String::is_empty")]
    pub sealed_unlock_key: String,
}

impl Cluster {
    /// A fresh cluster with [`SwarmSpec::default_spec`], address pool
    /// `10.0.0.0/8` in /24s and VXLAN port 4789.
    pub fn new(id: impl Into<String>, join_tokens: JoinTokens) -> Cluster {
        Cluster {
            meta: Meta::new(id),
            spec: SwarmSpec::default_spec(),
            tls_info: TlsInfo::default(),
            root_rotation_in_progress: false,
            default_addr_pool: vec![DEFAULTS.default_addr_pool.into()],
            subnet_size: DEFAULTS.subnet_size,
            data_path_port: DEFAULTS.data_path_port,
            join_tokens,
            root_ca_key: String::new(),
            sealed_unlock_key: String::new(),
        }
    }

    /// The cluster as clients may see it: without the CA key.
    pub fn public(&self) -> Cluster {
        Cluster {
            root_ca_key: String::new(),
            sealed_unlock_key: String::new(),
            ..self.clone()
        }
    }
}

store_object!(Cluster, Cluster, spec_named);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{Kind, StoreObject};

    #[test]
    fn default_cluster_serializes_dockers_defaults() {
        let c = Cluster::new(
            "c1",
            JoinTokens {
                worker: "SWMTKN-1-w".into(),
                manager: "SWMTKN-1-m".into(),
            },
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["Spec"],
            json!({
                "Name": "default",
                "Orchestration": {"TaskHistoryRetentionLimit": 5},
                "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0,
                         "LogEntriesForSlowFollowers": 500, "ElectionTick": 3, "HeartbeatTick": 1},
                "Dispatcher": {"HeartbeatPeriod": 5_000_000_000i64},
                "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000i64},
                "TaskDefaults": {},
                "EncryptionConfig": {"AutoLockManagers": false}
            })
        );
        assert_eq!(v["DefaultAddrPool"], json!(["10.0.0.0/8"]));
        assert_eq!(v["SubnetSize"], 24);
        assert_eq!(v["DataPathPort"], 4789);
        assert_eq!(
            v["JoinTokens"],
            json!({"Worker": "SWMTKN-1-w", "Manager": "SWMTKN-1-m"})
        );
        assert_eq!(v["RootRotationInProgress"], false);

        let rec = c.to_record().unwrap();
        assert_eq!(rec.kind, Kind::Cluster);
        assert_eq!(rec.name.as_deref(), Some("default"));
        let back = Cluster::from_record(&rec).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            back.spec.ca_config.node_cert_expiry,
            Some(Duration::from_secs(7_776_000))
        );
    }

    #[test]
    fn swagger_swarm_spec_example_round_trips() {
        let v = json!({
            "Name": "default",
            "Orchestration": {"TaskHistoryRetentionLimit": 10},
            "Raft": {"SnapshotInterval": 10000, "LogEntriesForSlowFollowers": 500,
                     "HeartbeatTick": 1, "ElectionTick": 3},
            "Dispatcher": {"HeartbeatPeriod": 5000000000i64},
            "CAConfig": {"NodeCertExpiry": 7776000000000000i64,
                         "ExternalCAs": [{"Protocol": "cfssl", "URL": "https://ca.example/sign"}]},
            "TaskDefaults": {"LogDriver": {"Name": "json-file", "Options": {"max-size": "10M"}}},
            "EncryptionConfig": {"AutoLockManagers": true}
        });
        let spec: SwarmSpec = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(spec.orchestration.task_history_retention_limit, Some(10));
        assert_eq!(spec.raft.keep_old_snapshots, None);
        assert_eq!(spec.dispatcher.heartbeat_period, Some(Duration::from_secs(5)));
        assert_eq!(spec.ca_config.external_cas[0].url, "https://ca.example/sign");
        assert!(spec.encryption_config.auto_lock_managers);
        assert_eq!(serde_json::to_value(&spec).unwrap(), v);
    }
}
