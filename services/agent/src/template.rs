//! Swarm's per-task placeholders, expanded on the agent before a task's work
//! is prepared, as SwarmKit's agent does: in the container's hostname, the
//! values of its environment, and its mounts' source, target, volume labels
//! and volume driver options. The context is `.Service.ID/.Name/.Labels`,
//! `.Node.ID/.Hostname/.Platform.Architecture/.Platform.OS`, and
//! `.Task.ID/.Name/.Slot` (a global task's slot is its node's ID).

use std::collections::BTreeMap;

use serde_json::json;
use shoal_shared::model::{NodeDescription, Task};
use shoal_shared::template::{expand, to_gtmpl};

/// The context of a task's placeholders and of its templated secrets and
/// configs: `.Service`, `.Node` and `.Task`, as SwarmKit gives them.
pub fn task_context(task: &Task, node: &NodeDescription) -> gtmpl::Value {
    let service = task.service_annotations.clone().unwrap_or_default();
    let name = if service.name.is_empty() {
        task.service_id.clone()
    } else {
        service.name.clone()
    };
    to_gtmpl(&json!({
        "Service": {"ID": task.service_id, "Name": name, "Labels": service.labels},
        "Node": {
            "ID": task.node_id,
            "Hostname": node.hostname,
            "Platform": {"Architecture": node.platform.architecture, "OS": node.platform.os},
        },
        "Task": {
            "ID": task.meta.id,
            "Name": format!("{}.{}", task.name(&name), task.meta.id),
            "Slot": task.slot.map_or_else(|| task.node_id.clone(), |s| s.to_string()),
        },
    }))
}

/// The task with its container spec's placeholders expanded, or why not
/// (in SwarmKit's words: `expanding env failed: ...`).
pub fn expand_task(task: &Task, node: &NodeDescription) -> Result<Task, String> {
    let Some(spec) = task.spec.container_spec.as_ref() else {
        return Ok(task.clone());
    };
    let ctx = task_context(task, node);
    let x = |s: &str| expand(s, &ctx);
    let mut c = spec.clone();
    c.env = c
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => x(v).map(|v| format!("{k}={v}")),
            None => Ok(e.clone()),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("expanding env failed: {e}"))?;
    c.hostname = x(&c.hostname).map_err(|e| format!("expanding hostname failed: {e}"))?;
    let map = |m: &BTreeMap<String, String>| -> Result<BTreeMap<String, String>, String> {
        m.iter().map(|(k, v)| Ok((k.clone(), x(v)?))).collect()
    };
    for m in &mut c.mounts {
        let what = |e: String| format!("expanding mounts failed: {e}");
        m.source = x(&m.source).map_err(what)?;
        m.target = x(&m.target).map_err(what)?;
        if let Some(v) = m.volume_options.as_mut() {
            v.labels = map(&v.labels).map_err(what)?;
            if let Some(d) = v.driver_config.as_mut() {
                d.options = map(&d.options).map_err(what)?;
            }
        }
    }
    let mut out = task.clone();
    out.spec.container_spec = Some(c);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::{Annotations, ContainerSpec, Platform, TaskSpec};

    fn task(slot: Option<u64>) -> Task {
        let mut t = Task::new(
            "t1",
            "s1",
            TaskSpec {
                container_spec: Some(ContainerSpec {
                    hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
                    env: vec![
                        "WHO={{.Node.Hostname}}/{{.Node.Platform.OS}}".into(),
                        "TASK={{.Task.Name}}".into(),
                        "BARE".into(),
                        "PLAIN=x".into(),
                    ],
                    mounts: vec![serde_json::from_value(json!({
                        "Type": "volume", "Source": "data-{{.Task.Slot}}", "Target": "/data",
                        "VolumeOptions": {"Labels": {"svc": "{{.Service.ID}}"},
                                          "DriverConfig": {"Name": "local", "Options": {"o": "{{.Node.ID}}"}}}
                    }))
                    .unwrap()],
                    ..ContainerSpec::default()
                }),
                ..TaskSpec::default()
            },
        );
        t.slot = slot;
        t.node_id = "n1".into();
        t.service_annotations = Some(Annotations {
            name: "web".into(),
            ..Annotations::default()
        });
        t
    }

    fn node() -> NodeDescription {
        NodeDescription {
            hostname: "host-a".into(),
            platform: Platform {
                architecture: "x86_64".into(),
                os: "linux".into(),
            },
            ..NodeDescription::default()
        }
    }

    #[test]
    fn hostname_env_and_mounts_expand_per_task() {
        let t = expand_task(&task(Some(3)), &node()).unwrap();
        let c = t.spec.container_spec.unwrap();
        assert_eq!(c.hostname, "web-3");
        assert_eq!(c.env, ["WHO=host-a/linux", "TASK=web.3.t1", "BARE", "PLAIN=x"]);
        let m = &c.mounts[0];
        assert_eq!((m.source.as_str(), m.target.as_str()), ("data-3", "/data"));
        let v = m.volume_options.as_ref().unwrap();
        assert_eq!(v.labels["svc"], "s1");
        assert_eq!(v.driver_config.as_ref().unwrap().options["o"], "n1");
        // A global task's slot is its node.
        let g = expand_task(&task(None), &node()).unwrap();
        assert_eq!(g.spec.container_spec.unwrap().hostname, "web-n1");
    }

    #[test]
    fn a_broken_template_says_where() {
        let mut t = task(Some(1));
        t.spec.container_spec.as_mut().unwrap().env = vec!["X={{.Nope".into()];
        let e = expand_task(&t, &node()).unwrap_err();
        assert!(e.starts_with("expanding env failed"), "{e}");
    }
}
