//! Docker's defaults, in one place: what a service created with no flags
//! gets (`docker service create IMAGE`), and the settings of a fresh
//! `docker swarm init`. Every shoal process that needs a default reads it
//! from [`DEFAULTS`]: the API fills specs with it, the scheduler falls back
//! to it, the dispatcher and the agent take their periods from it.
//!
//! The values are SwarmKit's (`api/defaults/service.go`) and the docker
//! CLI's flag defaults, which are the same; `tests/tests/defaults.rs`
//! compares them with what a real Docker swarm stores for
//! `docker service create --name d0 busybox sleep 1`.
//!
//! Where Docker prints nothing (`UpdateConfig.Delay` of 0 is omitted by Go's
//! `omitempty`), the value here is `None`, which every reader treats as 0.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cluster::{
    CaConfig, DispatcherConfig, EncryptionConfig, OrchestrationConfig, RaftConfig, SwarmSpec, TaskDefaults,
    DEFAULT_CLUSTER_NAME,
};
use super::service::{
    EndpointMode, EndpointSpec, FailureAction, Limit, Placement, ResourceRequirements, RestartCondition, RestartPolicy,
    ServiceMode, ServiceSpec, TaskSpec, UpdateConfig, UpdateOrder,
};
use super::Resources;

/// Every default shoal shares with Docker (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// `TaskTemplate.RestartPolicy`: any, 5 s delay, no attempt limit, no window.
    pub restart_policy: RestartPolicy,
    /// `UpdateConfig`: one at a time, no delay, pause on failure, monitor
    /// 5 s, failure ratio 0, stop-first.
    pub update_config: UpdateConfig,
    /// `RollbackConfig`: the same as [`Defaults::update_config`].
    pub rollback_config: UpdateConfig,
    /// `ContainerSpec.StopGracePeriod`: SIGKILL this long after the stop signal.
    pub stop_grace_period: Duration,
    /// `TaskTemplate.Resources`: no limits, no reservations (`{"Limits": {}, "Reservations": {}}`).
    pub resources: ResourceRequirements,
    /// `TaskTemplate.Placement`: no constraints (`{}`). A reference, so that
    /// `Defaults` has no destructor and its fields can be read in `const`s.
    pub placement: &'static Placement,
    /// `EndpointSpec.Mode`: a virtual IP.
    pub endpoint_mode: EndpointMode,
    /// `Mode.Replicated.Replicas` of a service that gives no mode or count.
    pub replicas: u64,
    /// `Spec.Orchestration.TaskHistoryRetentionLimit`: old tasks kept per slot.
    pub task_history_retention_limit: i64,
    /// `Spec.Dispatcher.HeartbeatPeriod`.
    pub heartbeat_period: Duration,
    /// `Spec.CAConfig.NodeCertExpiry`: 90 days.
    pub node_cert_expiry: Duration,
    /// `Spec.Raft`. Docker's ticks are 100 ms (election 10, heartbeat 1);
    /// shoal's are seconds (`--tick-ms` 1000), so its election tick is 3.
    pub raft: RaftConfig,
    /// `DefaultAddrPool`, `SubnetSize` and `DataPathPort` of a new cluster.
    pub default_addr_pool: &'static str,
    pub subnet_size: u32,
    pub data_path_port: u32,
}

const UPDATE: UpdateConfig = UpdateConfig {
    parallelism: 1,
    delay: None,
    failure_action: Some(FailureAction::Pause),
    monitor: Some(Duration::from_secs(5)),
    max_failure_ratio: Some(0.0),
    order: Some(UpdateOrder::StopFirst),
};

/// The defaults.
pub const DEFAULTS: Defaults = Defaults {
    restart_policy: RestartPolicy {
        condition: Some(RestartCondition::Any),
        delay: Some(Duration::from_secs(5)),
        max_attempts: Some(0),
        window: None,
    },
    update_config: UPDATE,
    rollback_config: UPDATE,
    stop_grace_period: Duration::from_secs(10),
    resources: ResourceRequirements {
        limits: Some(Limit {
            nano_cpus: 0,
            memory_bytes: 0,
            pids: 0,
        }),
        reservations: Some(Resources {
            generic_resources: Vec::new(),
            nano_cpus: 0,
            memory_bytes: 0,
        }),
    },
    placement: &Placement {
        constraints: Vec::new(),
        preferences: Vec::new(),
        max_replicas: 0,
        platforms: Vec::new(),
    },
    endpoint_mode: EndpointMode::Vip,
    replicas: 1,
    task_history_retention_limit: 5,
    heartbeat_period: Duration::from_secs(5),
    node_cert_expiry: Duration::from_secs(90 * 24 * 3600),
    raft: RaftConfig {
        snapshot_interval: 10_000,
        keep_old_snapshots: Some(0),
        log_entries_for_slow_followers: 500,
        election_tick: 3,
        heartbeat_tick: 1,
    },
    default_addr_pool: "10.0.0.0/8",
    subnet_size: 24,
    data_path_port: 4789,
};

impl Defaults {
    /// The spec Docker stores for `docker service create IMAGE` with no
    /// flags, less the name, the image and the command: replicated ×1, every
    /// default above written out.
    pub fn service_spec(&self) -> ServiceSpec {
        ServiceSpec {
            task_template: TaskSpec {
                container_spec: Some(super::ContainerSpec {
                    stop_grace_period: Some(self.stop_grace_period),
                    ..Default::default()
                }),
                resources: Some(self.resources.clone()),
                restart_policy: Some(self.restart_policy.clone()),
                placement: Some(self.placement.clone()),
                ..TaskSpec::default()
            },
            mode: ServiceMode::replicated(self.replicas),
            update_config: Some(self.update_config.clone()),
            rollback_config: Some(self.rollback_config.clone()),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(self.endpoint_mode),
                ports: Vec::new(),
            }),
            ..ServiceSpec::default()
        }
    }

    /// The cluster settings of a fresh `docker swarm init` (with shoal's Raft ticks).
    pub fn swarm_spec(&self) -> SwarmSpec {
        SwarmSpec {
            name: DEFAULT_CLUSTER_NAME.into(),
            labels: BTreeMap::new(),
            orchestration: OrchestrationConfig {
                task_history_retention_limit: Some(self.task_history_retention_limit),
            },
            raft: self.raft.clone(),
            dispatcher: DispatcherConfig {
                heartbeat_period: Some(self.heartbeat_period),
            },
            ca_config: CaConfig {
                node_cert_expiry: Some(self.node_cert_expiry),
                ..CaConfig::default()
            },
            task_defaults: TaskDefaults::default(),
            encryption_config: EncryptionConfig::default(),
        }
    }

    /// The restart policy a task runs with: what `rp` sets, Docker's
    /// default for what it leaves unset (condition, delay, attempts; the
    /// window stays unset), the default policy for none.
    pub fn restart_policy_of(&self, rp: Option<&RestartPolicy>) -> RestartPolicy {
        let d = &self.restart_policy;
        match rp {
            None => d.clone(),
            Some(rp) => RestartPolicy {
                condition: rp.condition.or(d.condition),
                delay: rp.delay.or(d.delay),
                max_attempts: rp.max_attempts.or(d.max_attempts),
                window: rp.window,
            },
        }
    }

    /// The update config a rolling update runs with: what `cfg` sets,
    /// Docker's default for what it leaves unset (failure action, monitor,
    /// failure ratio, order), the default config for none. `Parallelism` is
    /// always given (0 means all at once); `Delay` stays unset (0).
    pub fn update_config_of(&self, cfg: Option<&UpdateConfig>) -> UpdateConfig {
        filled_update(cfg, &self.update_config)
    }

    /// [`Defaults::update_config_of`] for a rollback.
    pub fn rollback_config_of(&self, cfg: Option<&UpdateConfig>) -> UpdateConfig {
        filled_update(cfg, &self.rollback_config)
    }

    /// What the API fills in a service spec it accepts: the replica count
    /// of a replicated (or mode-less) service, the restart policy, the
    /// update and rollback configs, and the endpoint mode. Resources and
    /// placement (which the docker CLI sends) and the stop grace period
    /// (which Docker's engine stores though the CLI does not send it) are
    /// left as given: readers fall back to [`DEFAULTS`] for them.
    pub fn fill_service(&self, spec: &mut ServiceSpec) {
        if spec.mode_unset() || spec.mode.replicated.is_some() {
            spec.mode
                .replicated
                .get_or_insert_with(Default::default)
                .replicas
                .get_or_insert(self.replicas);
        }
        let tt = &mut spec.task_template;
        tt.restart_policy = Some(self.restart_policy_of(tt.restart_policy.as_ref()));
        if !spec.is_job() {
            // Jobs have no rolling updates.
            spec.update_config = Some(self.update_config_of(spec.update_config.as_ref()));
            spec.rollback_config = Some(self.rollback_config_of(spec.rollback_config.as_ref()));
        }
        spec.endpoint_spec
            .get_or_insert_with(EndpointSpec::default)
            .mode
            .get_or_insert(self.endpoint_mode);
    }
}

/// `cfg` with `default`'s values where it has none; `default` for no `cfg`.
fn filled_update(cfg: Option<&UpdateConfig>, default: &UpdateConfig) -> UpdateConfig {
    match cfg {
        None => default.clone(),
        Some(c) => UpdateConfig {
            parallelism: c.parallelism,
            delay: c.delay,
            failure_action: c.failure_action.or(default.failure_action),
            monitor: c.monitor.or(default.monitor),
            max_failure_ratio: c.max_failure_ratio.or(default.max_failure_ratio),
            order: c.order.or(default.order),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What Docker 28's CLI on a Docker 20.10 swarm stored for
    /// `docker service create --name d0 busybox sleep 1` (the fields that are
    /// defaults; `tests/tests/defaults.rs` checks it against a live engine).
    #[test]
    fn service_spec_serializes_as_docker_stores_it() {
        let v = serde_json::to_value(DEFAULTS.service_spec()).unwrap();
        assert_eq!(
            v,
            json!({
                "TaskTemplate": {
                    "ContainerSpec": {"StopGracePeriod": 10_000_000_000i64},
                    "Resources": {"Limits": {}, "Reservations": {}},
                    "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000i64, "MaxAttempts": 0},
                    "Placement": {},
                    "ForceUpdate": 0
                },
                "Mode": {"Replicated": {"Replicas": 1}},
                "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000i64,
                                 "MaxFailureRatio": 0.0, "Order": "stop-first"},
                "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000i64,
                                   "MaxFailureRatio": 0.0, "Order": "stop-first"},
                "EndpointSpec": {"Mode": "vip"}
            })
        );
    }

    #[test]
    fn filling_keeps_what_is_given_and_adds_the_rest() {
        let mut spec = ServiceSpec::default();
        DEFAULTS.fill_service(&mut spec);
        let mut want = DEFAULTS.service_spec();
        want.task_template.container_spec = None;
        want.task_template.resources = None;
        want.task_template.placement = None;
        assert_eq!(spec, want);

        let mut spec = ServiceSpec {
            mode: ServiceMode::global(),
            update_config: Some(UpdateConfig {
                parallelism: 0,
                order: Some(UpdateOrder::StartFirst),
                ..UpdateConfig::default()
            }),
            ..ServiceSpec::default()
        };
        spec.task_template.restart_policy = Some(RestartPolicy {
            condition: Some(RestartCondition::None),
            ..RestartPolicy::default()
        });
        DEFAULTS.fill_service(&mut spec);
        assert_eq!(spec.mode, ServiceMode::global());
        let u = spec.update_config.unwrap();
        assert_eq!((u.parallelism, u.order), (0, Some(UpdateOrder::StartFirst)));
        assert_eq!(u.monitor, Some(Duration::from_secs(5)));
        let rp = spec.task_template.restart_policy.unwrap();
        assert_eq!(rp.condition, Some(RestartCondition::None));
        assert_eq!(rp.delay, Some(Duration::from_secs(5)));

        // What readers (the scheduler) get for a spec without any.
        assert_eq!(DEFAULTS.restart_policy_of(None), DEFAULTS.restart_policy);
        assert_eq!(DEFAULTS.update_config_of(None), DEFAULTS.update_config);
        assert_eq!(DEFAULTS.rollback_config_of(None), DEFAULTS.rollback_config);
        let window = RestartPolicy {
            window: Some(Duration::from_secs(60)),
            ..RestartPolicy::default()
        };
        let rp = DEFAULTS.restart_policy_of(Some(&window));
        assert_eq!((rp.window, rp.max_attempts), (Some(Duration::from_secs(60)), Some(0)));
    }
}
