//! Tasks: the table `service ps` and `node ps` print (Docker has no `task`
//! command of its own), from the model's [`Task`]s.

use std::collections::BTreeMap;

use shoal_shared::model::{Node, Service, Task};

use super::{image_name, query_filters, short, Out};
use crate::client::Client;
use crate::format::{self, ago};

/// The tasks `filters` select: IDs (`-q`) or the tasks table, newest first
/// within a slot, older tasks of a slot shown as ` \_ name`.
pub(crate) fn table(c: &Client, filters: &[String], quiet: bool) -> Out {
    let q = query_filters(filters)?;
    let mut tasks: Vec<Task> = c.get(&format!("/tasks?filters={q}"))?;
    let services: Vec<Service> = c.get("/services")?;
    let nodes: Vec<Node> = c.get("/nodes")?;
    let svc_name: BTreeMap<&str, &str> = services
        .iter()
        .map(|s| (s.meta.id.as_str(), s.spec.name.as_str()))
        .collect();
    let host: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.meta.id.as_str(), n.description.hostname.as_str()))
        .collect();
    // `<service>.<slot>`, or `<service>.<node>` for a global service's task.
    let name_of = |t: &Task| {
        let svc = svc_name.get(t.service_id.as_str()).copied().unwrap_or_default();
        match t.slot {
            Some(slot) => format!("{svc}.{slot}"),
            None => format!("{svc}.{}", t.node_id),
        }
    };
    tasks.sort_by(|a, b| {
        name_of(a)
            .cmp(&name_of(b))
            .then_with(|| b.status.timestamp.cmp(&a.status.timestamp))
    });
    if quiet {
        return Ok(tasks.iter().map(|t| format!("{}\n", t.meta.id)).collect());
    }
    let mut rows = Vec::new();
    let mut prev = String::new();
    for t in &tasks {
        let name = name_of(t);
        let shown = if name == prev {
            format!(" \\_ {name}")
        } else {
            name.clone()
        };
        prev = name;
        let image = t
            .spec
            .container_spec
            .as_ref()
            .map(|cs| cs.image.as_str())
            .unwrap_or_default();
        let err = &t.status.err;
        rows.push(vec![
            short(&t.meta.id),
            shown,
            image_name(image),
            host.get(t.node_id.as_str()).copied().unwrap_or_default().to_string(),
            t.desired_state.as_docker_display().to_string(),
            format!("{} {}", t.status.state.as_docker_display(), ago(t.status.timestamp)),
            if err.is_empty() {
                String::new()
            } else {
                format!("\"{err}\"")
            },
            String::new(),
        ]);
    }
    Ok(format::table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ],
        &rows,
    ))
}
