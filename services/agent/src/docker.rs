//! The `docker` executor: each task is a container on the node's Docker
//! Engine, driven through bollard.
//!
//! - preparing: the image is used as is when the engine has it (a
//!   `name@digest` reference recorded by `/distribution` also matches a local
//!   image by ID), else pulled with the task's registry credentials; then the
//!   container is created, named `<service>.<slot>.<task-id>` (global:
//!   `<service>.<node-id>.<task-id>`) and labelled as Swarm labels them;
//! - starting: the container is started; its exit code ends the task;
//! - stopping: `docker stop` with the task's grace period (the engine sends
//!   the stop signal, then SIGKILL);
//! - the labels let a restarted agent find its containers again
//!   ([`Executor::find`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, Mount, PortBinding, PortMap, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use serde_json::{json, Value};
use shoal_shared::logs::{LogStream, WorkState};
use shoal_shared::model::{EngineDescription, PluginDescription, PortConfig, PortProtocol, PublishMode, Task};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::exec::{stop_grace, ExecError, Executor, Exit, Found, Handle, Started};
use crate::files::Files;
use crate::health;

pub const LABEL_SERVICE_ID: &str = "com.docker.swarm.service.id";
pub const LABEL_SERVICE_NAME: &str = "com.docker.swarm.service.name";
pub const LABEL_TASK_ID: &str = "com.docker.swarm.task.id";
pub const LABEL_TASK_NAME: &str = "com.docker.swarm.task.name";
pub const LABEL_NODE_ID: &str = "com.docker.swarm.node.id";
/// Present (empty) on every task container, as Swarm sets it.
pub const LABEL_TASK: &str = "com.docker.swarm.task";

/// A pull that has not finished in this long fails the task.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// The node's engine, as the agent uses it.
#[derive(Clone)]
pub struct DockerExecutor {
    docker: Docker,
    node_id: String,
    /// Secret and config files of this node's tasks.
    files: Arc<Files>,
    /// The host's overlay networks and the sandboxes' image ([`crate::sandbox`]).
    net: Option<(Arc<crate::net::NetHost>, String)>,
}

/// What the engine says about itself, for the node description.
#[derive(Debug, Clone, Default)]
pub struct EngineFacts {
    pub hostname: String,
    pub os: String,
    pub architecture: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub engine: EngineDescription,
}

/// Docker's words for an engine error (its message, without bollard's wrapping).
pub fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// An engine error as an execution error: what the engine refuses is final,
/// an engine that did not answer is temporary.
fn classify(e: &DockerError) -> ExecError {
    match e {
        DockerError::DockerResponseServerError { .. } => ExecError::Rejected(engine_message(e)),
        _ => ExecError::Temporary(engine_message(e)),
    }
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub use crate::image::decode_registry_auth;

/// The container name of a task: `<service>.<slot>.<task-id>`, or
/// `<service>.<node-id>.<task-id>` for a global service's task.
pub fn container_name(task: &Task) -> String {
    format!("{}.{}", task.name(&service_name(task)), task.meta.id)
}

fn service_name(task: &Task) -> String {
    task.service_annotations
        .as_ref()
        .map(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| task.service_id.clone())
}

/// `/etc/hosts` lines as the service gives them (`IP host...`) in the engine's form (`host:IP`).
/// The engine's `SecurityOpt` for a spec's `Privileges`, as Swarm's
/// container executor writes them: no-new-privileges, SELinux labels,
/// seccomp (`unconfined`, or a custom profile given base64-encoded) and
/// AppArmor (`disabled` runs unconfined). The credential spec is Windows-only.
fn security_opts(c: &shoal_shared::model::ContainerSpec) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let Some(p) = &c.privileges else { return Ok(out) };
    if p.no_new_privileges {
        out.push("no-new-privileges=true".to_string());
    }
    if let Some(se) = &p.selinux_context {
        if se.disable {
            out.push("label=disable".to_string());
        } else {
            for (k, v) in [
                ("user", &se.user),
                ("role", &se.role),
                ("type", &se.kind),
                ("level", &se.level),
            ] {
                if !v.is_empty() {
                    out.push(format!("label={k}:{v}"));
                }
            }
        }
    }
    if let Some(sc) = &p.seccomp {
        match sc.mode.as_str() {
            "unconfined" => out.push("seccomp=unconfined".to_string()),
            "custom" => {
                let profile = base64::engine::general_purpose::STANDARD
                    .decode(sc.profile.as_bytes())
                    .map_err(|e| format!("invalid seccomp profile: {e}"))?;
                out.push(format!("seccomp={}", String::from_utf8_lossy(&profile)));
            }
            _ => {}
        }
    }
    if p.app_armor.as_ref().is_some_and(|a| a.mode == "disabled") {
        out.push("apparmor=unconfined".to_string());
    }
    Ok(out)
}

fn extra_hosts(hosts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in hosts {
        let mut parts = line.split_whitespace();
        let Some(ip) = parts.next() else { continue };
        for host in parts {
            out.push(format!("{host}:{ip}"));
        }
    }
    out
}

fn protocol_name(p: Option<PortProtocol>) -> &'static str {
    match p.unwrap_or_default() {
        PortProtocol::Tcp => "tcp",
        PortProtocol::Udp => "udp",
        PortProtocol::Sctp => "sctp",
    }
}

/// The engine's `ExposedPorts` and `HostConfig.PortBindings` for a task's
/// host-mode ports, as Swarm's executor writes them: every address of the
/// host, the published port, or none (0: the engine picks one).
pub fn port_bindings(ports: &[PortConfig]) -> (Vec<String>, PortMap) {
    let mut exposed = Vec::new();
    let mut map = PortMap::new();
    for p in ports {
        let key = format!("{}/{}", p.target_port, protocol_name(p.protocol));
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let host_port = (p.published_port != 0).then(|| p.published_port.to_string());
        map.entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                host_port: Some(host_port.unwrap_or_default()),
            });
    }
    (exposed, map)
}

/// The ports the engine bound for a container (`NetworkSettings.Ports`),
/// as the task's `Status.PortStatus.Ports` lists them: one per target,
/// protocol and host port (the engine lists IPv4 and IPv6 bindings apart).
pub fn port_status(map: &PortMap) -> Vec<PortConfig> {
    let mut out: Vec<PortConfig> = Vec::new();
    for (key, bindings) in map {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(target_port) = port.parse::<u32>() else { continue };
        let protocol = match proto {
            "udp" => PortProtocol::Udp,
            "sctp" => PortProtocol::Sctp,
            _ => PortProtocol::Tcp,
        };
        for b in bindings.iter().flatten() {
            let Some(published_port) = b.host_port.as_deref().and_then(|h| h.parse::<u32>().ok()) else {
                continue;
            };
            let p = PortConfig {
                name: String::new(),
                protocol: Some(protocol),
                target_port,
                published_port,
                publish_mode: Some(PublishMode::Host),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| (p.target_port, protocol_name(p.protocol), p.published_port));
    out
}

/// The container a task runs: its spec, Swarm's labels, limits and mounts.
pub fn container_config(task: &Task, node_id: &str, image: &str) -> Result<ContainerCreateBody, String> {
    let c = task.spec.container_spec.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = c.labels.clone().into_iter().collect();
    labels.insert(LABEL_SERVICE_ID.into(), task.service_id.clone());
    labels.insert(LABEL_SERVICE_NAME.into(), service_name(task));
    labels.insert(LABEL_TASK_ID.into(), task.meta.id.clone());
    labels.insert(LABEL_TASK_NAME.into(), container_name(task));
    labels.insert(LABEL_NODE_ID.into(), node_id.to_string());
    labels.insert(LABEL_TASK.into(), String::new());
    let mounts = c
        .mounts
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .and_then(serde_json::from_value::<Mount>)
                .map_err(|e| format!("invalid mount config: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let healthcheck = match &c.healthcheck {
        Some(h) => {
            Some(serde_json::from_value::<HealthConfig>(h.clone()).map_err(|e| format!("invalid healthcheck: {e}"))?)
        }
        None => None,
    };
    let limits = task
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    let dns = c.dns_config.clone().unwrap_or_default();
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let some_str = |s: &String| (!s.is_empty()).then(|| s.clone());
    let grace = stop_grace(&task.spec);
    let host_ports = task.host_ports();
    let (exposed, bindings) = port_bindings(&host_ports);
    Ok(ContainerCreateBody {
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        image: Some(image.to_string()),
        entrypoint: some_vec(&c.command),
        cmd: some_vec(&c.args),
        env: some_vec(&c.env),
        working_dir: some_str(&c.dir),
        user: some_str(&c.user),
        hostname: some_str(&c.hostname),
        labels: Some(labels),
        tty: Some(c.tty),
        open_stdin: Some(c.open_stdin),
        stop_signal: some_str(&c.stop_signal),
        stop_timeout: Some(grace.as_secs_f64().ceil() as i64),
        healthcheck,
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            nano_cpus: (limits.nano_cpus > 0).then_some(limits.nano_cpus),
            memory: (limits.memory_bytes > 0).then_some(limits.memory_bytes),
            readonly_rootfs: c.read_only.then_some(true),
            extra_hosts: Some(extra_hosts(&c.hosts)).filter(|h| !h.is_empty()),
            dns: some_vec(&dns.nameservers),
            dns_search: some_vec(&dns.search),
            dns_options: some_vec(&dns.options),
            init: c.init,
            group_add: some_vec(&c.groups),
            pids_limit: (limits.pids > 0).then_some(limits.pids),
            cap_add: some_vec(&c.capability_add),
            cap_drop: some_vec(&c.capability_drop),
            sysctls: (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect()),
            ulimits: (!c.ulimits.is_empty()).then(|| {
                c.ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            security_opt: Some(security_opts(&c)?).filter(|o| !o.is_empty()),
            oom_score_adj: (c.oom_score_adj != 0).then_some(c.oom_score_adj),
            log_config: task.spec.log_driver.as_ref().map(|d| HostConfigLogConfig {
                typ: Some(d.name.clone()),
                config: Some(d.options.clone().into_iter().collect()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The engine's filter for this node's task containers: both labels must
/// match (Docker ANDs the values of one `label` filter). Nodes of one
/// cluster may share an engine (the dev cluster's node containers all use
/// the machine's), so adoption and cleanup never see another node's tasks.
pub fn own_containers_filter(node_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_NODE_ID}={node_id}"), LABEL_TASK_ID.to_string()],
    )])
}

impl DockerExecutor {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and
    /// agrees on an API version the engine speaks.
    pub async fn connect(node_id: &str, files: Arc<Files>) -> Result<DockerExecutor, String> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| format!("cannot reach the Docker Engine: {e}"))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| format!("cannot reach the Docker Engine: {e}"))?;
        docker
            .ping()
            .await
            .map_err(|e| format!("the Docker Engine does not answer: {e}"))?;
        Ok(DockerExecutor {
            docker,
            node_id: node_id.to_string(),
            files,
            net: None,
        })
    }

    /// Tasks with `NetworksAttachments` get a network sandbox attached to
    /// the host's overlay networks ([`crate::sandbox`]).
    pub fn with_networks(mut self, net: Arc<crate::net::NetHost>, sandbox_image: String) -> DockerExecutor {
        self.net = Some((net, sandbox_image));
        self
    }

    /// Hostname, platform, capacity, version, plugins and labels of the engine.
    pub async fn facts(&self) -> Result<EngineFacts, String> {
        let info = self.docker.info().await.map_err(|e| engine_message(&e))?;
        let mut plugins = Vec::new();
        if let Some(p) = info.plugins {
            for (kind, names) in [
                ("Log", p.log),
                ("Network", p.network),
                ("Authorization", p.authorization),
                ("Volume", p.volume),
            ] {
                for name in names.unwrap_or_default() {
                    plugins.push(PluginDescription {
                        kind: kind.into(),
                        name,
                    });
                }
            }
        }
        Ok(EngineFacts {
            hostname: info.name.unwrap_or_default(),
            os: info.os_type.unwrap_or_else(|| std::env::consts::OS.into()),
            architecture: info.architecture.unwrap_or_else(|| std::env::consts::ARCH.into()),
            nano_cpus: info.ncpu.unwrap_or(0) * 1_000_000_000,
            memory_bytes: info.mem_total.unwrap_or(0),
            engine: EngineDescription {
                engine_version: info.server_version.unwrap_or_default(),
                labels: info
                    .labels
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                plugins,
            },
        })
    }

    /// The image reference to create the container from: the task's image if
    /// the engine has it, else pulled (with the task's credentials).
    async fn ensure_image(&self, task: &Task) -> Result<String, String> {
        let c = task.spec.container_spec.as_ref();
        let image = c.map(|c| c.image.clone()).unwrap_or_default();
        if image.is_empty() {
            return Err("task has no image".into());
        }
        if self.docker.inspect_image(&image).await.is_ok() {
            return Ok(image);
        }
        // `name:tag@sha256:X` recorded from a local image: X is the image ID.
        if let Some((name, digest)) = image.split_once('@') {
            if let Ok(img) = self.docker.inspect_image(name).await {
                let repo_digest = |d: &String| d.rsplit_once('@').is_some_and(|(_, dd)| dd == digest);
                if img.id.as_deref() == Some(digest) || img.repo_digests.unwrap_or_default().iter().any(repo_digest) {
                    return Ok(name.to_string());
                }
            }
            if self.docker.inspect_image(digest).await.is_ok() {
                return Ok(digest.to_string());
            }
        }
        let creds = c
            .and_then(|c| c.pull_options.as_ref())
            .and_then(|p| decode_registry_auth(&p.registry_auth));
        tracing::info!(task = %task.meta.id, image = %image, with_auth = creds.is_some(), "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.clone()),
            ..Default::default()
        };
        let pull = async {
            let mut stream = self.docker.create_image(Some(options), None, creds);
            while let Some(item) = stream.next().await {
                item.map_err(|e| engine_message(&e))?;
            }
            Ok::<(), String>(())
        };
        let started = std::time::Instant::now();
        let res = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(image),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("pulling {image} did not finish in {}s", PULL_TIMEOUT.as_secs())),
        };
        let outcome = if res.is_ok() { "ok" } else { "failed" };
        crate::metrics::metrics()
            .pull_seconds
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .observe(started.elapsed().as_secs_f64());
        res
    }

    /// Preparing: image, then the container (created, not started). Returns the
    /// container ID. What the engine refuses rejects the task; an engine that
    /// cannot be reached is a temporary error.
    pub async fn prepare_container(&self, task: &Task) -> Result<String, ExecError> {
        let image = self.ensure_image(task).await.map_err(ExecError::Rejected)?;
        let mut body = container_config(task, &self.node_id, &image).map_err(ExecError::Rejected)?;
        // Secrets and configs: files on the node's tmpfs, bound read-only.
        let files = self.files.materialize(task).map_err(ExecError::Rejected)?;
        if !files.is_empty() {
            let hc = body.host_config.get_or_insert_with(HostConfig::default);
            let mounts = hc.mounts.get_or_insert_with(Vec::new);
            for f in files {
                mounts.push(Mount {
                    typ: Some(bollard::models::MountType::BIND),
                    source: Some(f.source.display().to_string()),
                    target: Some(f.target),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
        }
        let sandbox = match &self.net {
            Some((net, image)) => crate::sandbox::prepare(&self.docker, net, task, &self.node_id, image, &body).await?,
            None => None,
        };
        if let Some(sb) = &sandbox {
            crate::sandbox::join(&mut body, sb);
        }
        let res = self.create_task_container(task, body).await;
        if let (Err(_), Some(sb)) = (&res, &sandbox) {
            crate::sandbox::remove(&self.docker, sb).await;
        }
        res
    }

    async fn create_task_container(&self, task: &Task, body: ContainerCreateBody) -> Result<String, ExecError> {
        let name = container_name(task);
        let options = || CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        match self.docker.create_container(Some(options()), body.clone()).await {
            Ok(r) => Ok(r.id),
            Err(e) if status_of(&e) == Some(409) => {
                // A container of this task from before a crash: start afresh.
                tracing::info!(container = %name, "removing a leftover container of the same task");
                self.remove_container(&name).await;
                self.docker
                    .create_container(Some(options()), body)
                    .await
                    .map(|r| r.id)
                    .map_err(|e| classify(&e))
            }
            Err(e) => Err(classify(&e)),
        }
    }

    /// Starting: the container runs.
    pub async fn start_container(&self, container_id: &str) -> Result<(), String> {
        self.docker
            .start_container(container_id, None)
            .await
            .map_err(|e| format!("starting container failed: {}", engine_message(&e)))
    }

    /// The host-mode ports the engine bound for a task's container: on its
    /// network sandbox when it has one (which owns the namespace), else on
    /// the container itself.
    pub async fn bound_ports(&self, container_id: &str) -> Vec<PortConfig> {
        let owner = crate::sandbox::of_container(&self.docker, container_id)
            .await
            .unwrap_or_else(|| container_id.to_string());
        match self.docker.inspect_container(&owner, None).await {
            Ok(info) => info
                .network_settings
                .and_then(|n| n.ports)
                .map(|m| port_status(&m))
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(container = %owner, error = %engine_message(&e), "agent: cannot read the published ports");
                Vec::new()
            }
        }
    }

    /// Waits until the container stops and returns its exit code.
    pub async fn wait_container(&self, container_id: &str) -> Exit {
        loop {
            let mut stream = self.docker.wait_container(container_id, None);
            match stream.next().await {
                Some(Ok(r)) => return Exit::Code(r.status_code),
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => return Exit::Code(code),
                _ => {}
            }
            // The wait broke (engine restart, connection): look, then wait again.
            match self.docker.inspect_container(container_id, None).await {
                Err(e) if status_of(&e) == Some(404) => return Exit::Lost("task: container removed".into()),
                Ok(c) => {
                    let st = c.state.unwrap_or_default();
                    if st.running != Some(true) && st.restarting != Some(true) {
                        return Exit::Code(st.exit_code.unwrap_or(0));
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Stops the container: its stop signal, then SIGKILL after `grace`.
    pub async fn stop_container(&self, container_id: &str, grace: Duration) {
        let options = StopContainerOptions {
            t: Some(grace.as_secs_f64().ceil() as i32),
            signal: None,
        };
        if let Err(e) = self.docker.stop_container(container_id, Some(options)).await {
            if !matches!(status_of(&e), Some(304) | Some(404)) {
                tracing::warn!(container = %container_id, error = %engine_message(&e), "stopping container failed");
            }
        }
    }

    /// Removes the container (and its anonymous volumes' references; named volumes stay).
    pub async fn remove_container(&self, container: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        if let Err(e) = self.docker.remove_container(container, Some(options)).await {
            if status_of(&e) != Some(404) {
                tracing::warn!(container = %container, error = %engine_message(&e), "removing container failed");
            }
        }
    }

    /// Every task container of this node on the engine, running or not.
    pub async fn own_containers(&self) -> Result<Vec<Found>, String> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(own_containers_filter(&self.node_id)),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_message(&e))?;
        let mut out = Vec::new();
        for c in list {
            let (Some(id), Some(task_id)) = (c.id, c.labels.and_then(|mut l| l.remove(LABEL_TASK_ID))) else {
                continue;
            };
            let state = match self.docker.inspect_container(&id, None).await {
                Ok(i) => i.state.unwrap_or_default(),
                Err(_) => continue,
            };
            let running = state.running == Some(true) || state.restarting == Some(true);
            let started = state.status != Some(bollard::models::ContainerStateStatusEnum::CREATED);
            out.push(Found {
                handle: Handle::Container { container_id: id },
                task_id,
                running,
                started,
                exit_code: (!running).then(|| state.exit_code.unwrap_or(0)),
            });
        }
        Ok(out)
    }

    /// A task's container on this node and whether it can still write
    /// lines (`None`: the engine has no container of that task).
    pub async fn task_container(&self, task_id: &str) -> Result<Option<(String, WorkState)>, String> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{LABEL_NODE_ID}={}", self.node_id),
                    format!("{LABEL_TASK_ID}={task_id}"),
                ],
            )])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_message(&e))?;
        Ok(list.into_iter().find_map(|c| {
            use bollard::models::ContainerSummaryStateEnum as S;
            let state = match c.state {
                Some(S::CREATED) | Some(S::EMPTY) | None => WorkState::NotStarted,
                Some(S::RUNNING) | Some(S::PAUSED) | Some(S::RESTARTING) | Some(S::STOPPING) => WorkState::Running,
                Some(_) => WorkState::Ended,
            };
            Some((c.id?, state))
        }))
    }

    /// A container's log lines time-stamped at or after `since_nanos`
    /// (asked for from its second on), in the engine's order.
    pub async fn engine_logs(
        &self,
        container: &str,
        since_nanos: i64,
        stdout: bool,
        stderr: bool,
    ) -> Result<Vec<crate::logs::EngineLine>, String> {
        use bollard::container::LogOutput;
        let options = bollard::query_parameters::LogsOptions {
            follow: false,
            stdout,
            stderr,
            since: (since_nanos.div_euclid(1_000_000_000)).clamp(0, i32::MAX as i64) as i32,
            until: 0,
            timestamps: true,
            tail: "all".into(),
        };
        let mut stream = self.docker.logs(container, Some(options));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let (s, message) = match item.map_err(|e| engine_message(&e))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => (LogStream::Stdout, message),
                LogOutput::StdErr { message } => (LogStream::Stderr, message),
                LogOutput::StdIn { .. } => continue,
            };
            if let Some(l) = crate::logs::parse_engine_line(s, &message) {
                if l.time_nanos >= since_nanos {
                    out.push(l);
                }
            }
        }
        Ok(out)
    }

    /// Docker's `DistributionInspect` for an image: from the engine's store
    /// when present (the repo digest when it has one, else the image ID),
    /// else from its registry through the engine, with `auth`.
    pub async fn distribution(&self, image: &str, auth: Option<&str>) -> Option<Value> {
        if let Ok(img) = self.docker.inspect_image(image).await {
            let repo = image.split('@').next().unwrap_or(image);
            let repo = match repo.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r,
                _ => repo,
            };
            let repo_digest = img.repo_digests.as_ref().and_then(|ds| {
                ds.iter()
                    .filter_map(|d| d.split_once('@'))
                    .find(|(r, _)| *r == repo || r.ends_with(&format!("/{repo}")))
                    .map(|(_, d)| d.to_string())
            });
            let (media_type, digest) = match repo_digest {
                Some(d) => ("application/vnd.docker.distribution.manifest.v2+json", d),
                None => ("application/vnd.docker.container.image.v1+json", img.id.clone()?),
            };
            let mut platform = json!({
                "architecture": img.architecture.unwrap_or_default(),
                "os": img.os.unwrap_or_default(),
            });
            if let Some(v) = img.variant.filter(|v| !v.is_empty()) {
                platform["variant"] = json!(v);
            }
            return Some(json!({
                "Descriptor": {"mediaType": media_type, "digest": digest, "size": img.size.unwrap_or(0)},
                "Platforms": [platform],
            }));
        }
        let creds = auth.and_then(decode_registry_auth);
        match self.docker.inspect_registry_image(image, creds).await {
            Ok(d) => serde_json::to_value(d).ok(),
            Err(e) => {
                tracing::debug!(image, error = %engine_message(&e), "image not known to this node's registry");
                None
            }
        }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn prepare(&self, task: &Task) -> BoxFuture<'static, Result<Option<Handle>, ExecError>> {
        let (d, task) = (self.clone(), task.clone());
        async move {
            d.prepare_container(&task)
                .await
                .map(|container_id| Some(Handle::Container { container_id }))
        }
        .boxed()
    }

    /// Starts the container and, if it has a health check, waits for it to
    /// be healthy (the task stays `starting`); an unhealthy one is stopped
    /// and its task fails ([`crate::health`]).
    fn start(&self, task: &Task, prepared: Option<Handle>) -> BoxFuture<'static, Result<Started, ExecError>> {
        let (d, grace) = (self.clone(), stop_grace(&task.spec));
        let publishes = !task.host_ports().is_empty();
        async move {
            let Some(handle @ Handle::Container { .. }) = prepared else {
                return Err(ExecError::Failed("the container was not prepared".into()));
            };
            let id = handle.container_id().unwrap_or_default().to_string();
            // From here a stop asked of the task ends the wait for health.
            let gate = health::StartGate::new(&id);
            if let Err(e) = d.start_container(&id).await {
                // Already running: a restarted agent's adopted container, whose health is looked at again.
                if health::health_of(&d.docker, &id).await == health::Health::NotRunning {
                    return Err(ExecError::Failed(e));
                }
            }
            if !gate.until_healthy(&d.docker).await {
                d.stop_container(&id, grace).await;
                return Err(ExecError::Failed(health::UNHEALTHY.into()));
            }
            let ports = if publishes {
                d.bound_ports(&id).await
            } else {
                Vec::new()
            };
            Ok(Started {
                handle,
                child: None,
                ports,
            })
        }
        .boxed()
    }

    fn wait(&self, handle: Handle, _child: Option<tokio::process::Child>) -> BoxFuture<'static, Exit> {
        let d = self.clone();
        async move {
            match handle {
                // A container that turns unhealthy is stopped, and its task fails.
                Handle::Container { container_id } => {
                    let exit = tokio::select! {
                        exit = d.wait_container(&container_id) => exit,
                        () = health::until_unhealthy(&d.docker, &container_id) => {
                            health::stop_unhealthy(&d.docker, &container_id).await;
                            Exit::Lost(health::UNHEALTHY.into())
                        }
                    };
                    // Its addresses are free once it ended: its sandbox goes.
                    if let Some(sb) = crate::sandbox::of_container(&d.docker, &container_id).await {
                        crate::sandbox::remove(&d.docker, &sb).await;
                    }
                    exit
                }
                Handle::Process(_) => Exit::Lost("task: a process, but this agent runs containers".into()),
            }
        }
        .boxed()
    }

    fn stop(&self, handle: Handle, grace: Duration) -> BoxFuture<'static, ()> {
        let d = self.clone();
        async move {
            if let Handle::Container { container_id } = handle {
                health::stop_asked(&container_id);
                d.stop_container(&container_id, grace).await;
            }
        }
        .boxed()
    }

    fn remove(&self, task: &Task) -> BoxFuture<'static, ()> {
        let (d, name, id) = (self.clone(), container_name(task), task.meta.id.clone());
        let sandbox = crate::sandbox::sandbox_name(task);
        async move {
            d.remove_container(&name).await;
            d.files.remove(&id);
            if let Some((net, _)) = &d.net {
                crate::sandbox::remove(&d.docker, &sandbox).await;
                net.detach(&id).await;
            }
        }
        .boxed()
    }

    fn find(&self) -> BoxFuture<'static, Result<Vec<Found>, String>> {
        let d = self.clone();
        async move {
            let found = d.own_containers().await?;
            // Sandboxes whose task container is not running (left by a
            // crash between the two, or by a task that ended meanwhile) go.
            // The others' namespaces get their VIP tables written again.
            if let Some((net, _)) = &d.net {
                for (id, task_id, running) in crate::sandbox::list(&d.docker, &d.node_id).await? {
                    if !found.iter().any(|f| f.task_id == task_id && f.running) {
                        crate::sandbox::remove(&d.docker, &id).await;
                    } else if running {
                        if let Some(ns) = crate::sandbox::namespace(&d.docker, &id).await {
                            net.adopt(&task_id, &ns).await;
                        }
                    }
                }
            }
            Ok(found)
        }
        .boxed()
    }

    fn discard(&self, found: Found) -> BoxFuture<'static, ()> {
        let d = self.clone();
        async move {
            if let Some(id) = found.handle.container_id() {
                d.remove_container(id).await;
            }
            d.files.remove(&found.task_id);
        }
        .boxed()
    }

    fn lost_reason(&self) -> &'static str {
        "task: container removed while the agent was not running"
    }

    /// Containers carry their labels, so [`Executor::find`] sees all of them.
    fn probe(&self, _handle: &Handle, _task_id: &str) -> Option<Found> {
        None
    }
}

#[cfg(test)]
mod tests;
