//! Swarm networks as the store keeps them.
//!
//! The store holds a network the way SwarmKit does and the way Docker prints
//! it inside a task's `NetworksAttachments`: `ID`/`Version`/times, a `Spec`
//! (`Name`, `Labels`, `DriverConfiguration`, `IPAMOptions`, flags, `Scope`),
//! the allocator's `DriverState` and the allocated `IPAMOptions`. Docker's
//! `/networks` endpoints use a different, flatter shape; the API layer
//! renders that from this one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::is_false;
use crate::store::Meta;

/// The driver shoal uses for every swarm-scoped network.
pub const OVERLAY_DRIVER: &str = "overlay";

/// A driver name with its options; Docker's `Driver` (used for network
/// drivers, IPAM drivers, log drivers and volume drivers alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Driver {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl Driver {
    pub fn named(name: impl Into<String>) -> Driver {
        Driver {
            name: name.into(),
            options: BTreeMap::new(),
        }
    }
}

/// One IPAM pool: `Subnet`, optional `Range`, `Gateway`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub range: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

/// `IPAMOptions`: the IPAM driver (always written, possibly `{}`) and its pools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamOptions {
    pub driver: Driver,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<IpamConfig>,
}

/// What a user asks for when creating a swarm network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The network driver and its options (`docker network create -d overlay -o k=v`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_configuration: Option<Driver>,
    #[serde(rename = "IPv6Enabled", skip_serializing_if = "is_false")]
    pub ipv6_enabled: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub attachable: bool,
    /// The routing-mesh network (`ingress`).
    #[serde(skip_serializing_if = "is_false")]
    pub ingress: bool,
    #[serde(rename = "IPAMOptions", skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<IpamOptions>,
    /// `swarm` for every network shoal manages.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl NetworkSpec {
    /// A swarm-scoped overlay network spec with this name.
    pub fn overlay(name: impl Into<String>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver_configuration: Some(Driver::named(OVERLAY_DRIVER)),
            scope: "swarm".into(),
            ..NetworkSpec::default()
        }
    }

    /// The driver's name, `overlay` when the spec names none.
    pub fn driver_name(&self) -> &str {
        match &self.driver_configuration {
            Some(d) if !d.name.is_empty() => &d.name,
            _ => OVERLAY_DRIVER,
        }
    }

    /// The driver's options (`DriverOpts` in Docker's `/networks` API).
    pub fn driver_opts(&self) -> BTreeMap<String, String> {
        self.driver_configuration
            .as_ref()
            .map(|d| d.options.clone())
            .unwrap_or_default()
    }
}

/// A swarm network in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "Spec", default)]
    pub spec: NetworkSpec,
    /// The driver state the allocator chose (e.g. the VXLAN ID list).
    #[serde(rename = "DriverState", default)]
    pub driver_state: Driver,
    /// The IPAM configuration the allocator settled on.
    #[serde(rename = "IPAMOptions", default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<IpamOptions>,
    /// Node ID -> that host's own address on the network (CIDR), given by
    /// the allocator to every node that takes part (every node for
    /// `ingress`, else the nodes running its tasks): the address of the
    /// host's bridge, from which it reaches tasks on other hosts and on
    /// which its `shoal-dns` listens (libnetwork's per-node load-balancer
    /// endpoint). Not a Docker field; never copied into a task's attachment.
    #[serde(rename = "NodeAddresses", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_addresses: BTreeMap<String, String>,
}

impl Network {
    pub fn new(id: impl Into<String>, spec: NetworkSpec) -> Network {
        Network {
            meta: Meta::new(id),
            spec,
            driver_state: Driver::default(),
            ipam_options: None,
            node_addresses: BTreeMap::new(),
        }
    }

    pub fn is_ingress(&self) -> bool {
        self.spec.ingress
    }
}

store_object!(Network, Network, spec_named);

/// The MAC address of a task's interface on an overlay network, derived from
/// its address as libnetwork does (`02:42` then the four IPv4 bytes), so every
/// host computes the same one without it being stored.
pub fn mac_for_ip(ip: std::net::Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{Kind, StoreObject};

    #[test]
    fn overlay_spec_serializes_with_docker_names_and_record_carries_name_and_labels() {
        let mut spec = NetworkSpec::overlay("backend");
        spec.labels.insert("tier".into(), "db".into());
        spec.attachable = true;
        spec.ipam_options = Some(IpamOptions {
            driver: Driver::default(),
            configs: vec![IpamConfig {
                subnet: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                ..IpamConfig::default()
            }],
        });
        let net = Network::new("n1", spec);
        let v = serde_json::to_value(&net).unwrap();
        assert_eq!(
            v["Spec"],
            json!({
                "Name": "backend",
                "Labels": {"tier": "db"},
                "DriverConfiguration": {"Name": "overlay"},
                "Attachable": true,
                "IPAMOptions": {"Driver": {}, "Configs": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
                "Scope": "swarm"
            })
        );
        assert_eq!(v["DriverState"], json!({}));
        assert_eq!(v["ID"], "n1");

        let rec = net.to_record().unwrap();
        assert_eq!(rec.kind, Kind::Network);
        assert_eq!(rec.name.as_deref(), Some("backend"));
        assert_eq!(rec.labels.get("tier").map(String::as_str), Some("db"));
        let back = Network::from_record(&rec).unwrap();
        assert_eq!(back, net);
    }

    #[test]
    fn mac_is_derived_from_the_address() {
        assert_eq!(mac_for_ip("10.0.1.3".parse().unwrap()), "02:42:0a:00:01:03");
    }

    #[test]
    fn driver_name_defaults_to_overlay() {
        let mut spec = NetworkSpec::default();
        assert_eq!(spec.driver_name(), "overlay");
        assert!(spec.driver_opts().is_empty());
        let mut d = Driver::named("macvlan");
        d.options.insert("parent".into(), "eth0".into());
        spec.driver_configuration = Some(d);
        assert_eq!(spec.driver_name(), "macvlan");
        assert_eq!(spec.driver_opts().get("parent").map(String::as_str), Some("eth0"));
    }
}
