//! Network sandboxes of docker tasks on overlay networks (the k8s "pause"
//! design): a task with `NetworksAttachments` first gets a small container
//! of its own, `<task container>.sandbox`, created with `NetworkMode: none`
//! and started (`sleep` of `--sandbox-image`), whose namespace (its
//! `NetworkSettings.SandboxKey`) the agent attaches to the task's networks;
//! only then is the task container created, joining it with
//! `NetworkMode: container:<sandbox>`. So the task's process never starts
//! before its interfaces exist. The sandbox carries what the engine refuses
//! on a container that joins another's namespace: the hostname, `/etc/hosts`
//! entries and resolv.conf (`Dns` = this host's own address on the task's
//! first network, where `shoal-dns` listens; no search domains).
//!
//! The sandbox goes when its task's container ends (the waiter removes it),
//! when the task is removed, and, after an agent restart, when no container
//! of its task is found.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, CreateImageOptions, ListContainersOptions};
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

pub fn sandbox_name(task: &Task) -> String {
    format!("{}.sandbox", container_name(task))
}

/// The sandbox's container: no network of the engine's, the task's
/// hostname, hosts and resolver settings, sleeping forever.
pub fn sandbox_config(
    task: &Task,
    node_id: &str,
    image: &str,
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
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
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
    let name = sandbox_name(task);
    remove(docker, &name).await;
    net.detach(&task.meta.id).await;
    let body = sandbox_config(task, node_id, image, net.dns_for(task), task_body);
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
        let key = info
            .network_settings
            .and_then(|n| n.sandbox_key)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ExecError::Failed("the network sandbox has no namespace (SandboxKey)".into()))?;
        net.attach(task, std::path::Path::new(&key)).await
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
        let mut body = ContainerCreateBody {
            hostname: Some("h1".into()),
            host_config: Some(HostConfig {
                extra_hosts: Some(vec!["db:10.0.0.1".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sb = sandbox_config(&t, "n1", "busybox:latest", Some([10, 0, 1, 2].into()), &body);
        let hc = sb.host_config.clone().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.dns, Some(vec!["10.0.1.2".to_string()]));
        assert_eq!(hc.dns_search, Some(vec![".".to_string()]));
        assert_eq!(hc.extra_hosts, Some(vec!["db:10.0.0.1".to_string()]));
        assert_eq!(sb.hostname.as_deref(), Some("h1"));
        assert_eq!(sb.labels.unwrap()[LABEL_SANDBOX_FOR], "t1");
        join(&mut body, "abc");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:abc"));
        assert_eq!((body.hostname, hc.extra_hosts, hc.dns), (None, None, None));
    }
}
