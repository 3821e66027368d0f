//! Network sandboxes of docker tasks on overlay networks (the k8s "pause"
//! design): a task with `NetworksAttachments` first gets a small container
//! of its own, `<task container>.sandbox`, created on the host's gateway
//! bridge ([`GWBRIDGE`], Docker's `docker_gwbridge`) and started (`sleep`
//! of `--sandbox-image`), whose namespace (its `NetworkSettings.SandboxKey`)
//! the agent attaches to the task's networks; only then is the task
//! container created, joining it with `NetworkMode: container:<sandbox>`.
//! So the task's process never starts before its interfaces exist.
//!
//! Interfaces in Docker's order: the overlay networks first (`eth0`,
//! `eth1`, ... in the task's attachment order), the gateway bridge last
//! (the engine makes it `eth0`; the agent renames it `eth<n>` and puts the
//! default route back through the bridge's gateway). So the task reaches
//! the outside world through the engine's bridge (IP masquerade), its
//! overlay peers over the overlay's connected routes, and tasks on the
//! gateway bridge not each other (ICC off).
//!
//! The sandbox carries what the engine refuses on a container that joins
//! another's namespace: the hostname, `/etc/hosts` entries, the task's
//! host-mode published ports (`ExposedPorts`, `PortBindings`) and
//! resolv.conf (this host's own address on the task's first network, where
//! `shoal-dns` listens; no search domains). The engine points a container
//! on a network of its own making at its embedded resolver (127.0.0.11), so
//! the agent writes resolv.conf in the sandbox once it runs (with the
//! image's `sh`; the engine leaves a resolv.conf changed in the container
//! alone).
//!
//! The sandbox goes when its task's container ends (the waiter removes it),
//! when the task is removed, and, after an agent restart, when no container
//! of its task is found.

use std::collections::HashMap;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
};
use bollard::Docker;
use futures::StreamExt;
use shoal_shared::model::Task;

use crate::docker::{container_name, engine_message, LABEL_NODE_ID};
use crate::exec::ExecError;
use crate::net::NetHost;

/// The task a sandbox container serves.
pub const LABEL_SANDBOX_FOR: &str = "com.shoal.sandbox.task.id";

/// The default image of sandbox containers (`--sandbox-image`).
pub const DEFAULT_IMAGE: &str = "busybox:latest";

/// The engine network every sandbox is created on: the tasks' way out
/// (Docker's `docker_gwbridge`).
pub const GWBRIDGE: &str = "shoal_gwbridge";

/// Marks [`GWBRIDGE`] as shoal's.
pub const LABEL_GWBRIDGE: &str = "com.shoal.network.gwbridge";

/// The gateway bridge as Docker makes `docker_gwbridge`: tasks do not reach
/// each other through it (ICC off), their traffic leaves masqueraded.
pub fn gwbridge_request() -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: GWBRIDGE.to_string(),
        driver: Some("bridge".into()),
        options: Some(HashMap::from([
            ("com.docker.network.bridge.name".to_string(), GWBRIDGE.to_string()),
            ("com.docker.network.bridge.enable_icc".to_string(), "false".to_string()),
            (
                "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                "true".to_string(),
            ),
        ])),
        labels: Some(HashMap::from([(LABEL_GWBRIDGE.to_string(), "true".to_string())])),
        ..Default::default()
    }
}

/// The ID of the engine's [`GWBRIDGE`] network, made if missing. Agents
/// sharing an engine (the dev cluster's node containers) may make one each
/// at once (an engine before API 1.44 does not refuse a second name): all
/// keep the oldest, and the others are removed.
pub async fn ensure_gwbridge(docker: &Docker) -> Result<String, ExecError> {
    let list = || async {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_string(), vec![GWBRIDGE.to_string()])])),
        };
        let mut found: Vec<(String, String)> = docker
            .list_networks(Some(options))
            .await
            .map_err(|e| ExecError::Temporary(format!("listing networks: {}", engine_message(&e))))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(GWBRIDGE))
            .filter_map(|n| Some((n.created.map(|c| c.to_string()).unwrap_or_default(), n.id?)))
            .collect();
        found.sort();
        Ok::<_, ExecError>(found)
    };
    let mut found = list().await?;
    if found.is_empty() {
        if let Err(e) = docker.create_network(gwbridge_request()).await {
            tracing::warn!(error = %engine_message(&e), "agent: creating {GWBRIDGE}");
        }
        found = list().await?;
    }
    let Some((_, keep)) = found.first().cloned() else {
        return Err(ExecError::Temporary(format!("network {GWBRIDGE} could not be made")));
    };
    for (_, other) in found.iter().skip(1) {
        let _ = docker.remove_network(other).await;
    }
    fence_host_endpoints().await;
    Ok(keep)
}

/// The rule that keeps the gateway bridge from being a way between overlay
/// networks: this host's own endpoints (`shlh-*`, with an address on each
/// overlay network, so the host routes to every overlay subnet) take no
/// forwarded traffic, or a task's default route would carry it through the
/// host into any overlay network. In the engine's `DOCKER-USER` chain,
/// where it keeps the host's own rules (`op`: `-C` checks, `-I` inserts
/// first).
pub fn fence_args(op: &str) -> Vec<String> {
    let mut args = vec!["-w".to_string(), op.to_string(), "DOCKER-USER".to_string()];
    if op == "-I" {
        args.push("1".into());
    }
    args.extend(["-o", "shlh+", "-j", "DROP"].map(String::from));
    args
}

async fn fence_host_endpoints() {
    let run = |op: &'static str| async move {
        tokio::process::Command::new("iptables")
            .args(fence_args(op))
            .output()
            .await
    };
    match run("-C").await {
        Ok(o) if o.status.success() => {}
        _ => match run("-I").await {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::warn!(
                error = %String::from_utf8_lossy(&o.stderr).trim(),
                "agent: cannot fence the host's overlay endpoints from {GWBRIDGE}"
            ),
            Err(e) => tracing::warn!(error = %e, "agent: cannot run iptables to fence the host's overlay endpoints"),
        },
    }
}

/// resolv.conf as the engine writes it for these settings (`.` as the only
/// search domain: no search line).
pub fn resolv_conf(servers: &[String], search: &[String], options: &[String]) -> String {
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let search: Vec<&String> = search.iter().filter(|s| s.as_str() != ".").collect();
    if !search.is_empty() {
        out.push_str(&format!(
            "search {}\n",
            search.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
        ));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

pub fn sandbox_name(task: &Task) -> String {
    format!("{}.sandbox", container_name(task))
}

/// The sandbox's container: on the gateway bridge (`network`), the task's
/// hostname, hosts, published ports and resolver settings, sleeping
/// forever.
pub fn sandbox_config(
    task: &Task,
    node_id: &str,
    image: &str,
    network: &str,
    dns: Option<std::net::Ipv4Addr>,
    task_body: &ContainerCreateBody,
) -> ContainerCreateBody {
    let thc = task_body.host_config.clone().unwrap_or_default();
    let labels = HashMap::from([
        (LABEL_NODE_ID.to_string(), node_id.to_string()),
        (LABEL_SANDBOX_FOR.to_string(), task.meta.id.clone()),
    ]);
    let dns_servers = thc.dns.clone().or_else(|| dns.map(|ip| vec![ip.to_string()]));
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["2147483647".into()]),
        hostname: task_body.hostname.clone(),
        labels: Some(labels),
        exposed_ports: task_body.exposed_ports.clone(),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            port_bindings: thc.port_bindings.clone(),
            dns: dns_servers,
            // "." writes no search line (the engine's host's domains otherwise).
            dns_search: thc.dns_search.clone().or_else(|| Some(vec![".".into()])),
            dns_options: thc.dns_options.clone(),
            extra_hosts: thc.extra_hosts.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The task container joins the sandbox's namespace; what the engine
/// refuses with `container:` networking moved to the sandbox.
pub fn join(body: &mut ContainerCreateBody, sandbox_id: &str) {
    body.hostname = None;
    let hc = body.host_config.get_or_insert_with(HostConfig::default);
    hc.network_mode = Some(format!("container:{sandbox_id}"));
    hc.dns = None;
    hc.dns_search = None;
    hc.dns_options = None;
    hc.extra_hosts = None;
    hc.port_bindings = None;
    body.exposed_ports = None;
}

/// Gives the engine's interface of a sandbox (`eth0` on the gateway bridge)
/// the name after the task's `overlays` interfaces and puts the default
/// route back through `gateway` (renaming takes the link down, which drops
/// its routes).
async fn gateway_last(
    netns: &std::path::Path,
    overlays: usize,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<(), ExecError> {
    let to = format!("eth{overlays}");
    crate::net::netns::run_in(netns, move |nl| async move {
        use rtnetlink::{LinkUnspec, RouteMessageBuilder};
        let h = nl.handle();
        let idx = nl.index("eth0").await.ok_or("the sandbox has no eth0")?;
        let fail = |what: &str, e: rtnetlink::Error| format!("{what}: {e}");
        h.link()
            .set(LinkUnspec::new_with_index(idx).down().build())
            .execute()
            .await
            .map_err(|e| fail("eth0 down", e))?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).name(to.clone()).up().build())
            .execute()
            .await
            .map_err(|e| fail(&format!("renaming eth0 to {to}"), e))?;
        if let Some(gw) = gateway {
            h.route()
                .add(
                    RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                        .gateway(gw)
                        .output_interface(idx)
                        .build(),
                )
                .replace()
                .execute()
                .await
                .map_err(|e| fail(&format!("default route via {gw}"), e))?;
        }
        Ok::<(), String>(())
    })
    .await
    .and_then(|r| r)
    .map_err(|e| ExecError::Failed(format!("the sandbox's gateway interface: {e}")))
}

/// Writes the sandbox's resolv.conf (the task container shares the file).
async fn write_resolv_conf(docker: &Docker, id: &str, content: &str) -> Result<(), ExecError> {
    let failed = |e: String| ExecError::Failed(format!("writing the sandbox's resolv.conf: {e}"));
    let exec = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(vec![
                    "sh".to_string(),
                    "-c".to_string(),
                    "printf '%s' \"$1\" > /etc/resolv.conf".to_string(),
                    "sh".to_string(),
                    content.to_string(),
                ]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(engine_message(&e)))?;
    let mut said = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| failed(engine_message(&e)))?
    {
        while let Some(Ok(chunk)) = output.next().await {
            said.push_str(&chunk.to_string());
        }
    }
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| failed(engine_message(&e)))?
        .exit_code;
    match code {
        Some(0) => Ok(()),
        c => Err(failed(format!("exit {c:?}: {}", said.trim()))),
    }
}

async fn ensure_image(docker: &Docker, image: &str) -> Result<(), ExecError> {
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    let options = CreateImageOptions {
        from_image: Some(image.to_string()),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| ExecError::Temporary(format!("sandbox image {image}: {}", engine_message(&e))))?;
    }
    Ok(())
}

/// Removes a container, running or not; one already gone is fine.
pub async fn remove(docker: &Docker, name_or_id: &str) {
    let options = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(name_or_id, Some(options)).await {
        if !matches!(
            &e,
            bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
        ) {
            tracing::warn!(container = %name_or_id, error = %engine_message(&e), "removing a sandbox failed");
        }
    }
}

/// Makes the task's sandbox, attached to its networks; returns its ID, or
/// `None` when the task has no networks or no view ever arrived.
pub async fn prepare(
    docker: &Docker,
    net: &NetHost,
    task: &Task,
    node_id: &str,
    image: &str,
    task_body: &ContainerCreateBody,
) -> Result<Option<String>, ExecError> {
    if task.networks_attachments.is_empty() || !net.wait_ready(task).await? {
        return Ok(None);
    }
    ensure_image(docker, image).await?;
    let network = ensure_gwbridge(docker).await?;
    let name = sandbox_name(task);
    remove(docker, &name).await;
    net.detach(&task.meta.id).await;
    let body = sandbox_config(task, node_id, image, &network, net.dns_for(task), task_body);
    let resolv = body.host_config.as_ref().and_then(|hc| {
        let servers = hc.dns.clone()?;
        Some(resolv_conf(
            &servers,
            &hc.dns_search.clone().unwrap_or_default(),
            &hc.dns_options.clone().unwrap_or_default(),
        ))
    });
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    let id = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| ExecError::Rejected(format!("creating the network sandbox: {}", engine_message(&e))))?
        .id;
    let attached = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| ExecError::Failed(format!("starting the network sandbox: {}", engine_message(&e))))?;
        let info = docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| ExecError::Temporary(engine_message(&e)))?;
        let settings = info.network_settings.unwrap_or_default();
        let key = settings
            .sandbox_key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ExecError::Failed("the network sandbox has no namespace (SandboxKey)".into()))?;
        let gateway = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .find_map(|e| e.gateway.and_then(|g| g.parse().ok()));
        let key = std::path::PathBuf::from(key);
        gateway_last(&key, task.networks_attachments.len(), gateway).await?;
        net.attach(task, &key).await?;
        if let Some(content) = &resolv {
            write_resolv_conf(docker, &id, content).await?;
        }
        Ok::<(), ExecError>(())
    };
    match attached.await {
        Ok(()) => Ok(Some(id)),
        Err(e) => {
            remove(docker, &id).await;
            net.detach(&task.meta.id).await;
            Err(e)
        }
    }
}

/// The network namespace of a running sandbox (its `SandboxKey`).
pub async fn namespace(docker: &Docker, sandbox_id: &str) -> Option<std::path::PathBuf> {
    let info = docker.inspect_container(sandbox_id, None).await.ok()?;
    let key = info.network_settings?.sandbox_key.filter(|k| !k.is_empty())?;
    Some(key.into())
}

/// The sandbox a task container joined (from its `NetworkMode`).
pub async fn of_container(docker: &Docker, container_id: &str) -> Option<String> {
    let info = docker.inspect_container(container_id, None).await.ok()?;
    let mode = info.host_config?.network_mode?;
    let sandbox = mode.strip_prefix("container:")?.to_string();
    let labels = docker.inspect_container(&sandbox, None).await.ok()?.config?.labels?;
    labels.contains_key(LABEL_SANDBOX_FOR).then_some(sandbox)
}

/// This node's sandboxes: (container ID, task ID, running).
pub async fn list(docker: &Docker, node_id: &str) -> Result<Vec<(String, String, bool)>, String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_NODE_ID}={node_id}"), LABEL_SANDBOX_FOR.to_string()],
        )])),
        ..Default::default()
    };
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_message(&e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            Some((c.id?, c.labels?.remove(LABEL_SANDBOX_FOR)?, running))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_carries_names_and_resolver_and_the_task_joins_it() {
        let mut t = Task::new("t1", "s1", Default::default());
        t.slot = Some(1);
        let (exposed, bindings) = crate::docker::port_bindings(&[serde_json::from_value(serde_json::json!({
            "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"
        }))
        .unwrap()]);
        let mut body = ContainerCreateBody {
            hostname: Some("h1".into()),
            exposed_ports: Some(exposed.clone()),
            host_config: Some(HostConfig {
                extra_hosts: Some(vec!["db:10.0.0.1".into()]),
                port_bindings: Some(bindings.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sb = sandbox_config(&t, "n1", "busybox:latest", "gw1", Some([10, 0, 1, 2].into()), &body);
        let hc = sb.host_config.clone().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("gw1"));
        assert_eq!(hc.dns, Some(vec!["10.0.1.2".to_string()]));
        assert_eq!(hc.dns_search, Some(vec![".".to_string()]));
        assert_eq!(hc.extra_hosts, Some(vec!["db:10.0.0.1".to_string()]));
        assert_eq!(sb.hostname.as_deref(), Some("h1"));
        // The sandbox owns the namespace, so it publishes the task's ports.
        assert_eq!(
            (sb.exposed_ports.clone(), hc.port_bindings),
            (Some(exposed), Some(bindings))
        );
        assert_eq!(sb.labels.unwrap()[LABEL_SANDBOX_FOR], "t1");
        join(&mut body, "abc");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:abc"));
        assert_eq!((body.hostname, hc.extra_hosts, hc.dns), (None, None, None));
        assert_eq!((body.exposed_ports, hc.port_bindings), (None, None));
    }

    #[test]
    fn resolv_conf_as_the_engine_writes_it() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolv_conf(&s(&["10.0.1.254"]), &s(&["."]), &[]),
            "nameserver 10.0.1.254\n"
        );
        assert_eq!(
            resolv_conf(&s(&["1.1.1.1", "8.8.8.8"]), &s(&["a.example", "b"]), &s(&["ndots:2"])),
            "nameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch a.example b\noptions ndots:2\n"
        );
    }

    #[test]
    fn the_gateway_bridge_is_dockers_gwbridge_without_icc_and_masqueraded() {
        let r = gwbridge_request();
        assert_eq!((r.name.as_str(), r.driver.as_deref()), (GWBRIDGE, Some("bridge")));
        let o = r.options.unwrap();
        assert_eq!(o["com.docker.network.bridge.enable_icc"], "false");
        assert_eq!(o["com.docker.network.bridge.enable_ip_masquerade"], "true");
        assert!(r.labels.unwrap().contains_key(LABEL_GWBRIDGE));
        // Nothing forwarded reaches the host's own overlay endpoints.
        assert_eq!(fence_args("-I").join(" "), "-w -I DOCKER-USER 1 -o shlh+ -j DROP");
        assert_eq!(fence_args("-C").join(" "), "-w -C DOCKER-USER -o shlh+ -j DROP");
    }
}
