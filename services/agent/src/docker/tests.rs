use super::*;
use shoal_shared::model::{Annotations, ContainerSpec, Mount as ModelMount, MountType, TaskSpec};

fn task() -> Task {
    let mut t = Task::new(
        "t0000000000000000000000001",
        "s1",
        TaskSpec {
            container_spec: Some(ContainerSpec {
                image: "busybox".into(),
                command: vec!["ping".into()],
                args: vec!["127.0.0.1".into()],
                hosts: vec!["10.0.0.1 db cache".into()],
                mounts: vec![ModelMount {
                    kind: MountType::Volume,
                    source: "data".into(),
                    target: "/data".into(),
                    read_only: true,
                    ..serde_json::from_value(json!({"Type": "volume"})).unwrap()
                }],
                ..ContainerSpec::default()
            }),
            ..TaskSpec::default()
        },
    );
    t.slot = Some(3);
    t.service_annotations = Some(Annotations {
        name: "web".into(),
        ..Annotations::default()
    });
    t
}

#[test]
fn containers_are_named_and_labelled_as_swarm_does() {
    let t = task();
    assert_eq!(container_name(&t), "web.3.t0000000000000000000000001");
    let mut g = t.clone();
    g.slot = None;
    g.node_id = "n1".into();
    assert_eq!(container_name(&g), "web.n1.t0000000000000000000000001");
    let body = container_config(&t, "n1", "busybox").unwrap();
    let labels = body.labels.unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_TASK_NAME], "web.3.t0000000000000000000000001");
    assert_eq!(labels[LABEL_NODE_ID], "n1");
    assert_eq!(body.entrypoint, Some(vec!["ping".to_string()]));
    assert_eq!(body.cmd, Some(vec!["127.0.0.1".to_string()]));
    let hc = body.host_config.unwrap();
    assert_eq!(
        hc.extra_hosts,
        Some(vec!["db:10.0.0.1".to_string(), "cache:10.0.0.1".to_string()])
    );
    let m = &hc.mounts.unwrap()[0];
    assert_eq!(m.typ, Some(bollard::models::MountType::VOLUME));
    assert_eq!((m.source.as_deref(), m.read_only), (Some("data"), Some(true)));
}

#[test]
fn security_and_kernel_fields_reach_the_container() {
    let mut t = task();
    let spec: ContainerSpec = serde_json::from_value(json!({
        "Image": "busybox", "CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["CAP_MKNOD"],
        "Sysctls": {"net.core.somaxconn": "1024"}, "Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 20}],
        "OomScoreAdj": 7,
        "Privileges": {"NoNewPrivileges": true, "Seccomp": {"Mode": "custom", "Profile": "eyJhIjoxfQ=="},
                       "AppArmor": {"Mode": "disabled"}, "SELinuxContext": {"User": "u", "Level": "s0"}}
    }))
    .unwrap();
    t.spec.container_spec = Some(spec);
    t.spec.resources = serde_json::from_value(json!({"Limits": {"Pids": 50}})).unwrap();
    let hc = container_config(&t, "n1", "busybox").unwrap().host_config.unwrap();
    assert_eq!(hc.cap_add, Some(vec!["CAP_NET_ADMIN".to_string()]));
    assert_eq!(hc.cap_drop, Some(vec!["CAP_MKNOD".to_string()]));
    assert_eq!(hc.sysctls.unwrap()["net.core.somaxconn"], "1024");
    let u = &hc.ulimits.unwrap()[0];
    assert_eq!(
        (u.name.as_deref(), u.soft, u.hard),
        (Some("nofile"), Some(10), Some(20))
    );
    assert_eq!((hc.oom_score_adj, hc.pids_limit), (Some(7), Some(50)));
    assert_eq!(
        hc.security_opt.unwrap(),
        [
            "no-new-privileges=true",
            "label=user:u",
            "label=level:s0",
            r#"seccomp={"a":1}"#,
            "apparmor=unconfined"
        ]
    );
}

/// Removes the named containers when dropped (also when the test fails).
struct Remove(Vec<String>);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&self.0)
            .env_remove("DOCKER_HOST")
            .output();
    }
}

/// Two nodes on one engine (as the dev cluster's node containers are):
/// each executor finds only its own node's task containers, so a
/// restarted agent never adopts or removes another node's task. Needs
/// the machine's engine and the local busybox image (ops/build-image).
#[tokio::test]
async fn an_executor_finds_only_its_own_nodes_containers_on_a_shared_engine() {
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        eprintln!("SKIPPED: no Docker Engine at /var/run/docker.sock");
        return;
    }
    let run = std::process::id();
    let nodes = [format!("adopt-a-{run}"), format!("adopt-b-{run}")];
    let tasks = [format!("ta{run}"), format!("tb{run}")];
    let names: Vec<String> = tasks.iter().map(|t| format!("adopt-test-{t}")).collect();
    let _cleanup = Remove(names.clone());
    let mut executors = Vec::new();
    for ((node, task_id), name) in nodes.iter().zip(&tasks).zip(&names) {
        let exec = DockerExecutor::connect(
            node,
            Arc::new(Files::new(std::env::temp_dir().join(format!("shoal-files-{node}")))),
        )
        .await
        .expect("engine");
        let mut t = task();
        t.meta.id = task_id.clone();
        t.node_id = node.clone();
        let body = container_config(&t, node, "busybox:latest").unwrap();
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        exec.docker
            .create_container(Some(options), body)
            .await
            .unwrap_or_else(|e| panic!("create {name} (busybox:latest built? ops/build-image): {e}"));
        executors.push(exec);
    }
    for (exec, task_id) in executors.iter().zip(&tasks) {
        let found = exec.own_containers().await.expect("list");
        let ids: Vec<&str> = found.iter().map(|f| f.task_id.as_str()).collect();
        assert_eq!(
            ids,
            [task_id.as_str()],
            "node {}'s executor found {ids:?}",
            exec.node_id
        );
    }
}

#[test]
fn host_mode_ports_are_published_on_the_container_and_read_back_for_the_status() {
    let port = |mode: &str, proto: &str, target: u32, published: u32| -> PortConfig {
        serde_json::from_value(json!({
            "Protocol": proto, "TargetPort": target, "PublishedPort": published, "PublishMode": mode
        }))
        .unwrap()
    };
    let mut t = task();
    // The service's ingress ports are the routing mesh's, not the container's.
    t.endpoint = Some(shoal_shared::model::Endpoint {
        ports: vec![
            port("host", "tcp", 80, 8080),
            port("ingress", "tcp", 443, 30443),
            port("host", "udp", 53, 0),
        ],
        ..Default::default()
    });
    let body = container_config(&t, "n1", "busybox").unwrap();
    assert_eq!(
        body.exposed_ports,
        Some(vec!["80/tcp".to_string(), "53/udp".to_string()])
    );
    let bindings = body.host_config.unwrap().port_bindings.unwrap();
    let host_port = |k: &str| bindings[k].as_ref().unwrap()[0].host_port.clone();
    assert_eq!(bindings.len(), 2);
    assert_eq!(host_port("80/tcp").as_deref(), Some("8080"));
    // 0: the engine picks the host's port.
    assert_eq!(host_port("53/udp").as_deref(), Some(""));
    // Without host-mode ports nothing is published.
    t.endpoint = None;
    let body = container_config(&t, "n1", "busybox").unwrap();
    assert_eq!(
        (body.exposed_ports, body.host_config.unwrap().port_bindings),
        (None, None)
    );

    // What the engine bound (IPv4 and IPv6 apart) is the task's PortStatus.
    let bound: PortMap = serde_json::from_value(json!({
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}],
        "9000/tcp": null
    }))
    .unwrap();
    assert_eq!(
        port_status(&bound),
        [port("host", "udp", 53, 49153), port("host", "tcp", 80, 8080)]
    );
}
