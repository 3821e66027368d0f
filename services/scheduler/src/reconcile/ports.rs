//! Published ports (the allocator's part of a pass, before orchestration):
//! every ingress-published port without a number gets one from
//! [`PORT_RANGE_START`]..=[`PORT_RANGE_END`], unique in the cluster, kept
//! across spec changes that keep the same target and protocol.

use std::collections::BTreeSet;

use shoal_shared::model::{Endpoint, PortConfig, PortProtocol, PublishMode};

use super::plan::ServiceChange;
use super::work::Work;
use super::{PORT_RANGE_END, PORT_RANGE_START};

/// An ingress port published without a number (the allocator picks one).
fn needs_number(p: &PortConfig) -> bool {
    p.published_port == 0 && p.publish_mode != Some(PublishMode::Host)
}

/// The same published port of a service: target and protocol (TCP when unset).
fn same_port(a: &PortConfig, b: &PortConfig) -> bool {
    let proto = |p: &PortConfig| p.protocol.unwrap_or(PortProtocol::Tcp);
    a.target_port == b.target_port && proto(a) == proto(b)
}

/// Gives every ingress-published port without a number one from
/// [`PORT_RANGE_START`]..=[`PORT_RANGE_END`], unique in the cluster.
pub(super) fn allocate_ports(w: &mut Work) {
    let mut used: BTreeSet<u32> = BTreeSet::new();
    for s in w.snap.services.values() {
        for p in s.endpoint.iter().flat_map(|e| e.ports.iter()) {
            used.insert(p.published_port);
        }
        for p in s.spec.endpoint_spec.iter().flat_map(|e| e.ports.iter()) {
            used.insert(p.published_port);
        }
    }
    let mut changed = Vec::new();
    for s in w.snap.services.values() {
        let spec = s.spec.endpoint_spec.clone().unwrap_or_default();
        // Done when the endpoint reflects the spec and every ingress port
        // that asked for a number has one (the API fills what it can).
        let numbered = |e: &Endpoint| {
            spec.ports
                .iter()
                .filter(|p| needs_number(p))
                .all(|p| e.ports.iter().any(|o| same_port(o, p) && o.published_port != 0))
        };
        if s.endpoint.as_ref().is_some_and(|e| e.spec == spec && numbered(e))
            || (s.endpoint.is_none() && spec.ports.is_empty())
        {
            continue;
        }
        let old: Vec<PortConfig> = s.endpoint.as_ref().map(|e| e.ports.clone()).unwrap_or_default();
        let mut ports = Vec::new();
        for p in &spec.ports {
            let mut p = p.clone();
            if needs_number(&p) {
                let reuse = old
                    .iter()
                    .find(|o| same_port(o, &p) && o.published_port != 0)
                    .map(|o| o.published_port);
                let port = reuse.or_else(|| (PORT_RANGE_START..=PORT_RANGE_END).find(|n| !used.contains(n)));
                if let Some(port) = port {
                    used.insert(port);
                    p.published_port = port;
                }
            }
            ports.push(p);
        }
        let endpoint = Endpoint {
            spec,
            ports,
            virtual_ips: s.endpoint.as_ref().map(|e| e.virtual_ips.clone()).unwrap_or_default(),
        };
        changed.push((s.meta.id.clone(), endpoint));
    }
    for (sid, endpoint) in changed {
        w.set_service(&sid, ServiceChange::Endpoint, |s| s.endpoint = Some(endpoint));
    }
}

#[cfg(test)]
mod tests {
    use shoal_shared::model::{EndpointSpec, PortConfig};

    use super::super::testkit::*;
    use super::super::{Intent, ServiceChange, PORT_RANGE_START};

    fn published(k: &Kit, sid: &str) -> Vec<u32> {
        k.snap.services[sid]
            .endpoint
            .as_ref()
            .map(|e| e.ports.iter().map(|p| p.published_port).collect())
            .unwrap_or_default()
    }

    #[test]
    fn published_ports_without_a_number_get_unique_ones_from_the_range() {
        let port = |target: u32, published: u32| -> PortConfig {
            serde_json::from_value(serde_json::json!({
                "Protocol": "tcp", "TargetPort": target, "PublishedPort": published
            }))
            .unwrap()
        };
        let mut a = service("a", Some(0));
        a.spec.endpoint_spec = Some(EndpointSpec {
            ports: vec![port(80, 0), port(443, PORT_RANGE_START)],
            ..EndpointSpec::default()
        });
        let mut b = service("b", Some(0));
        b.spec.endpoint_spec = Some(EndpointSpec {
            ports: vec![port(80, 0)],
            ..EndpointSpec::default()
        });
        let mut k = Kit::new(&["n1"], vec![a, b]);
        let plan = k.pass();
        assert!(plan.intents.contains(&Intent::ServiceStatus {
            service: "a".into(),
            change: ServiceChange::Endpoint
        }));
        let (pa, pb) = (published(&k, "a"), published(&k, "b"));
        assert_eq!(pa, [PORT_RANGE_START + 1, PORT_RANGE_START]);
        assert_eq!(pb, [PORT_RANGE_START + 2]);
        // A pass with nothing new keeps them and changes nothing.
        let plan = k.pass();
        assert!(plan.intents.is_empty(), "{:?}", plan.intents);
        assert_eq!(published(&k, "a"), pa);
    }
}
