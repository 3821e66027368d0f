//! Services: `ServiceSpec` (what the user asked for, including the
//! `TaskTemplate` every task is made from) and the state Swarm keeps beside
//! it (`Endpoint`, `UpdateStatus`, `ServiceStatus`).
//!
//! The task-template types (`TaskSpec`, `ContainerSpec`, `Mount`,
//! `ResourceRequirements`, `RestartPolicy`, `Placement`, ...) live here too
//! because a task carries a copy of its service's template.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::network::Driver;
use super::resources::{Platform, Resources};
use super::{is_false, is_zero_i64, is_zero_u32, is_zero_u64};
use crate::store::Meta;

// ---------------------------------------------------------------- enums

/// `RestartPolicy.Condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

/// `UpdateConfig.FailureAction` (also used by `RollbackConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

/// `UpdateConfig.Order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// `EndpointSpec.Mode`: how the service's name resolves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP load-balanced over the tasks.
    #[default]
    Vip,
    /// DNS round-robin over the tasks' addresses.
    Dnsrr,
}

/// `UpdateStatus.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

/// `Mount.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

/// `PortConfig.Protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// `PortConfig.PublishMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Published on every node through the routing mesh.
    #[default]
    Ingress,
    /// Published only on the node running the task.
    Host,
}

// ---------------------------------------------------------------- task template

/// `Limit`: the most a task's container may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limit {
    #[serde(rename = "NanoCPUs", skip_serializing_if = "is_zero_i64")]
    pub nano_cpus: i64,
    #[serde(rename = "MemoryBytes", skip_serializing_if = "is_zero_i64")]
    pub memory_bytes: i64,
    #[serde(rename = "Pids", skip_serializing_if = "is_zero_i64")]
    pub pids: i64,
}

/// `TaskTemplate.Resources`. Docker writes `{"Limits": {}, "Reservations": {}}`
/// for a service created without any, so both are `Some(default)` there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResourceRequirements {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resources>,
}

/// `TaskTemplate.RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "super::empty_as_none")]
    pub condition: Option<RestartCondition>,
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub delay: Option<Duration>,
    /// 0 means no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// 0 means unbounded.
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub window: Option<Duration>,
}

/// `SpreadOver`: spread tasks over the values of a node attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SpreadOver {
    /// e.g. `node.labels.datacenter`.
    pub spread_descriptor: String,
}

/// One entry of `Placement.Preferences`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlacementPreference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<SpreadOver>,
}

/// `TaskTemplate.Placement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Placement {
    /// e.g. `node.role==manager`, `node.labels.zone!=b`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// Most replicas of this service on one node; 0 means no limit.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub max_replicas: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
}

/// A network a service's tasks attach to (`--network name --network-alias a`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkAttachmentConfig {
    /// Network name or ID.
    pub target: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

/// `Mount.BindOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    /// `private`, `rprivate`, `shared`, `rshared`, `slave` or `rslave`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    #[serde(skip_serializing_if = "is_false")]
    pub non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub create_mountpoint: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_force_recursive: bool,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "is_false")]
    pub no_copy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<Driver>,
    /// A path inside the volume to mount instead of its root.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
    /// Unix permission bits (Go's `os.FileMode`, written as a decimal integer).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    /// Extra tmpfs mount options, each `[name]` or `[name, value]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Vec<String>>,
}

/// One entry of `ContainerSpec.Mounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: MountType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `default`, `consistent`, `cached` or `delegated`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
    /// Cluster volume options (kept as given; shoal has no cluster volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_options: Option<serde_json::Value>,
}

/// `ContainerSpec.DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DnsConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// `TaskTemplate.ContainerSpec`: the container each task runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Replaces the image's entrypoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's `CMD`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `KEY=value` strings, as Docker keeps them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(rename = "TTY", skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub open_stdin: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub stop_grace_period: Option<Duration>,
    /// Docker's `HealthConfig`, kept verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    /// Extra `/etc/hosts` lines, `IP hostname...`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Security options: credential spec, SELinux, seccomp, AppArmor, no-new-privileges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Privileges>,
    /// `default`, `process` or `hyperv` (Windows); kept as given.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub isolation: String,
    /// Namespaced kernel parameters, e.g. `net.core.somaxconn`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capability_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capability_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// The container's OOM score adjustment.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub oom_score_adj: i64,
    /// Registry credentials given with `--with-registry-auth` (SwarmKit's
    /// `PullOptions`). Never part of the Docker API's answers: the API strips
    /// it, and only the agent running a task receives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_options: Option<PullOptions>,
    /// Secrets as files under `/run/secrets` (`--secret`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::SecretReference>,
    /// Configs as files (`--config`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<super::ConfigReference>,
}

/// One entry of `ContainerSpec.Ulimits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ulimit {
    pub name: String,
    pub hard: i64,
    pub soft: i64,
}

/// `Privileges.CredentialSpec` (Windows): kept as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CredentialSpec {
    pub config: String,
    pub file: String,
    pub registry: String,
}

/// `Privileges.SELinuxContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SeLinuxContext {
    pub disable: bool,
    pub user: String,
    pub role: String,
    #[serde(rename = "Type")]
    pub kind: String,
    pub level: String,
}

/// `Privileges.Seccomp`: `default`, `unconfined`, or `custom` with a profile (JSON, base64 on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SeccompOpts {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Go's `[]byte`: base64 in JSON, kept as that text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub profile: String,
}

/// `Privileges.AppArmor`: `default` or `disabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AppArmorOpts {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// `ContainerSpec.Privileges`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Privileges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<CredentialSpec>,
    #[serde(rename = "SELinuxContext", skip_serializing_if = "Option::is_none")]
    pub selinux_context: Option<SeLinuxContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompOpts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_armor: Option<AppArmorOpts>,
    pub no_new_privileges: bool,
}

/// `ContainerSpec.PullOptions`: how a node pulls the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PullOptions {
    /// The `X-Registry-Auth` header value (base64url of a JSON auth config).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub registry_auth: String,
}

impl ContainerSpec {
    /// `Env` as a map; a later `KEY=` wins, a bare `KEY` maps to `""`.
    pub fn env_map(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    }
}

/// `TaskSpec`: the template a service's tasks are made from (`TaskTemplate`),
/// and the copy each task carries (`Task.Spec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_spec: Option<ContainerSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<Driver>,
    /// Bumped to force a rolling update with an unchanged spec; always
    /// written, as Docker writes it (`"ForceUpdate": 0`).
    pub force_update: u64,
    /// `PluginSpec` (runtime `plugin`): kept as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_spec: Option<serde_json::Value>,
    /// `NetworkAttachmentSpec` (runtime `attachment`): kept as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_attachment_spec: Option<serde_json::Value>,
    /// `container` (the default), `plugin` or `attachment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

// ---------------------------------------------------------------- service spec

/// `Mode.Replicated`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReplicatedService {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

/// `Mode.Global`: one task on every eligible node; has no fields (`{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalService {}

/// `Mode.ReplicatedJob`: `TotalCompletions` tasks run to completion, at
/// most `MaxConcurrent` at a time. The API fills both (Docker's defaults: 1,
/// and `MaxConcurrent` for the total), so readers find them set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReplicatedJob {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_completions: Option<u64>,
}

impl ReplicatedJob {
    /// Most tasks running at once (Docker's default 1).
    pub fn concurrency(&self) -> u64 {
        self.max_concurrent.unwrap_or(1)
    }

    /// Completions wanted (Docker's default: the concurrency).
    pub fn total(&self) -> u64 {
        self.total_completions.unwrap_or_else(|| self.concurrency())
    }
}

/// `ServiceSpec.Mode`: exactly one of `Replicated`, `Global`,
/// `ReplicatedJob` or `GlobalJob` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceMode {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated: Option<ReplicatedService>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalService>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated_job: Option<ReplicatedJob>,
    /// One task to completion on every eligible node; has no fields (`{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_job: Option<GlobalService>,
}

impl ServiceMode {
    pub fn replicated(replicas: u64) -> ServiceMode {
        ServiceMode {
            replicated: Some(ReplicatedService {
                replicas: Some(replicas),
            }),
            ..ServiceMode::default()
        }
    }

    pub fn global() -> ServiceMode {
        ServiceMode {
            global: Some(GlobalService {}),
            ..ServiceMode::default()
        }
    }
}

/// `UpdateConfig` and `RollbackConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateConfig {
    /// Tasks updated at once; 0 means all at once. Docker always writes it.
    pub parallelism: u64,
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "super::empty_as_none")]
    pub failure_action: Option<FailureAction>,
    /// How long to watch an updated task for failure.
    #[serde(skip_serializing_if = "Option::is_none", with = "super::duration::option_nanos")]
    pub monitor: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failure_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "super::empty_as_none")]
    pub order: Option<UpdateOrder>,
}

/// One published port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "super::empty_as_none")]
    pub protocol: Option<PortProtocol>,
    /// The port inside the container.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub target_port: u32,
    /// The port on the swarm hosts; 0 lets Swarm pick one.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub published_port: u32,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "super::empty_as_none")]
    pub publish_mode: Option<PublishMode>,
}

/// The ports of a list published in host mode (`mode=host`), in order:
/// a task publishes them on its own host, not through the routing mesh.
pub fn host_mode_ports(ports: &[PortConfig]) -> Vec<PortConfig> {
    ports
        .iter()
        .filter(|p| p.publish_mode == Some(PublishMode::Host))
        .cloned()
        .collect()
}

/// `EndpointSpec`: how the service is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSpec {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "super::empty_as_none")]
    pub mode: Option<EndpointMode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

/// What the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub task_template: TaskSpec,
    pub mode: ServiceMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// Deprecated by Docker in favour of `TaskTemplate.Networks`, still accepted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachmentConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_spec: Option<EndpointSpec>,
}

impl ServiceSpec {
    /// Whether its tasks go one per node (`Global` or `GlobalJob`), grouped
    /// by node rather than by slot.
    pub fn is_global(&self) -> bool {
        self.mode.global.is_some() || self.mode.global_job.is_some()
    }

    /// Whether its tasks run to completion (`ReplicatedJob` or `GlobalJob`).
    pub fn is_job(&self) -> bool {
        self.mode.replicated_job.is_some() || self.mode.global_job.is_some()
    }

    /// Whether no mode is set at all (Docker makes such a spec replicated, 1).
    pub fn mode_unset(&self) -> bool {
        let m = &self.mode;
        m.replicated.is_none() && m.global.is_none() && m.replicated_job.is_none() && m.global_job.is_none()
    }

    /// Desired replica count: `None` for a global service or a job. A
    /// replicated service (or one with no mode at all, which Docker treats
    /// as replicated) without `Replicas` gets Docker's default of 1.
    pub fn replicas(&self) -> Option<u64> {
        if self.is_global() || self.is_job() {
            return None;
        }
        Some(self.mode.replicated.as_ref().and_then(|r| r.replicas).unwrap_or(1))
    }

    /// The service's `mode` index field, in the words of Docker's `mode`
    /// filter: `replicated`, `global`, `replicated-job` or `global-job`.
    pub fn mode_name(&self) -> &'static str {
        let m = &self.mode;
        if m.global_job.is_some() {
            "global-job"
        } else if m.replicated_job.is_some() {
            "replicated-job"
        } else if m.global.is_some() {
            "global"
        } else {
            "replicated"
        }
    }
}

// ---------------------------------------------------------------- service

/// One virtual IP of the service on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointVirtualIp {
    #[serde(rename = "NetworkID", skip_serializing_if = "String::is_empty")]
    pub network_id: String,
    /// CIDR form, e.g. `10.255.0.2/16`.
    #[serde(rename = "Addr", skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// `Endpoint`: the endpoint spec as applied, with allocated ports and VIPs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Endpoint {
    pub spec: EndpointSpec,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    #[serde(rename = "VirtualIPs", skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<EndpointVirtualIp>,
}

/// `UpdateStatus`: progress of the last rolling update or rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<UpdateState>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::model::gotime::option::serialize"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::model::gotime::option::serialize"
    )]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `ServiceStatus` (`GET /services?status=true`): task counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceStatus {
    pub running_tasks: u64,
    pub desired_tasks: u64,
    pub completed_tasks: u64,
}

/// `JobStatus`: which run of a job is current. `JobIteration` starts at 0
/// and every update of the service starts the next one (tasks of older
/// iterations are stopped); `LastExecution` is when the current one began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobStatus {
    #[serde(default)]
    pub job_iteration: crate::store::Version,
    #[serde(serialize_with = "crate::model::gotime::serialize")]
    pub last_execution: DateTime<Utc>,
}

/// A service in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Spec", default)]
    pub spec: ServiceSpec,
    /// The spec before the last update, for `docker service rollback`.
    #[serde(rename = "PreviousSpec", default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(rename = "Endpoint", default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    #[serde(rename = "UpdateStatus", default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    #[serde(rename = "ServiceStatus", default, skip_serializing_if = "Option::is_none")]
    pub service_status: Option<ServiceStatus>,
    /// Set for a job only.
    #[serde(rename = "JobStatus", default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobStatus>,
    /// The `Version.Index` at which the spec was last written, when a write
    /// since then left it alone (the scheduler's VIPs, rollout and job
    /// status); 0 when the last write set the spec. An update that names any
    /// version from there on read the current spec, so those writes don't
    /// make it "out of sequence". Kept in the store; the API doesn't show it.
    #[serde(rename = "SpecVersion", default, skip_serializing_if = "crate::model::is_zero_u64")]
    pub spec_version: u64,
}

impl Service {
    /// The ports the service's tasks publish on their own hosts
    /// (`mode=host`), from its endpoint as the scheduler applied it.
    pub fn host_ports(&self) -> Vec<PortConfig> {
        self.endpoint
            .as_ref()
            .map(|e| host_mode_ports(&e.ports))
            .unwrap_or_default()
    }

    pub fn new(id: impl Into<String>, spec: ServiceSpec) -> Service {
        Service {
            meta: Meta::new(id),
            spec,
            previous_spec: None,
            endpoint: None,
            update_status: None,
            service_status: None,
            job_status: None,
            spec_version: 0,
        }
    }

    /// The networks, secrets and configs the spec refers to, by ID (as the
    /// API resolved them), each once.
    pub fn references(&self) -> Vec<(crate::store::Kind, String)> {
        use crate::store::Kind;
        let t = &self.spec.task_template;
        let nets = t
            .networks
            .iter()
            .chain(self.spec.networks.iter())
            .map(|a| (Kind::Network, a.target.clone()));
        let c = t.container_spec.iter();
        let secrets = c
            .clone()
            .flat_map(|c| c.secrets.iter().map(|r| (Kind::Secret, r.secret_id.clone())));
        let configs = c.flat_map(|c| c.configs.iter().map(|r| (Kind::Config, r.config_id.clone())));
        let mut out: Vec<(Kind, String)> = nets
            .chain(secrets)
            .chain(configs)
            .filter(|(_, id)| !id.is_empty())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The version at which the current spec was written (see `spec_version`).
    pub fn spec_written_at(&self) -> u64 {
        match self.spec_version {
            0 => self.meta.version.index,
            v => v,
        }
    }

    /// Whether an update naming `version` read the current spec: the
    /// current version, or one since the spec was last written.
    pub fn read_current_spec(&self, version: u64) -> bool {
        (self.spec_written_at()..=self.meta.version.index).contains(&version)
    }

    /// Before writing `self` over `stored`: keeps where the spec was written
    /// when the spec is unchanged, else marks this write as the spec's.
    pub fn keep_spec_version(&mut self, stored: &Service) {
        self.spec_version = match self.spec == stored.spec {
            true => stored.spec_written_at(),
            false => 0,
        };
    }

    /// The current job iteration (0 for a job without a status yet, `None`
    /// for a service that is not a job).
    pub fn job_iteration(&self) -> Option<u64> {
        self.spec
            .is_job()
            .then(|| self.job_status.as_ref().map_or(0, |j| j.job_iteration.index))
    }

    /// See [`ServiceSpec::replicas`].
    pub fn replicas(&self) -> Option<u64> {
        self.spec.replicas()
    }

    pub fn is_global(&self) -> bool {
        self.spec.is_global()
    }
}

store_object! {
    Service, Service, spec_named,
    fn fields(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::from([("mode".to_string(), self.spec.mode_name().to_string())]);
        for (kind, id) in self.references() {
            f.insert(crate::store::reference_field(kind, &id), "1".into());
        }
        f
    }
}

#[cfg(test)]
mod tests;
