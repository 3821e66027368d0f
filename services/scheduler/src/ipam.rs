//! Address management for overlay networks, as libnetwork's default IPAM
//! does it for Swarm: subnets carved from the cluster's default address pools
//! (`10.0.0.0/8` in /24s unless `swarm init` said otherwise), and within a
//! subnet one address per service VIP and per task, never the subnet's
//! network or broadcast address nor its gateway.
//!
//! No I/O and no state of its own: what is taken is read from the store's
//! objects on every pass (networks' `IPAMOptions`, services'
//! `Endpoint.VirtualIPs`, tasks' `NetworksAttachments`), so a scheduler that
//! starts, or takes over as leader, continues without handing out an address
//! twice. IPv4 only.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use shoal_shared::model::IpamConfig;

/// First VXLAN network identifier given to an overlay network (as Swarm's
/// overlay driver starts at 4096; `ingress` gets it).
pub const VXLAN_ID_START: u32 = 4096;
/// Last VXLAN ID (24 bits).
pub const VXLAN_ID_END: u32 = (1 << 24) - 1;
/// The driver option that carries a network's VXLAN ID (as Docker shows it).
pub const VXLAN_ID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// Parses `a.b.c.d/n`, masking host bits off (`10.0.0.7/24` -> `10.0.0.0/24`).
pub fn parse_subnet(s: &str) -> Option<Ipv4Net> {
    s.parse::<Ipv4Net>().ok().map(|n| n.trunc())
}

/// The address part of a CIDR address (`10.0.1.3/24` -> `10.0.1.3`).
pub fn parse_addr(s: &str) -> Option<Ipv4Addr> {
    s.split_once('/').map_or(s, |(a, _)| a).parse().ok()
}

/// Whether two prefixes share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first subnet of `/size` in `pools` (in order) that overlaps none of
/// `taken`, as libnetwork walks its predefined pools.
pub fn carve(pools: &[Ipv4Net], size: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    pools
        .iter()
        .filter(|p| size >= p.prefix_len())
        .find_map(|pool| pool.subnets(size).ok()?.find(|s| !taken.iter().any(|t| overlaps(s, t))))
}

/// The lowest VXLAN ID from [`VXLAN_ID_START`] not in `used`.
pub fn next_vxlan_id(used: &BTreeSet<u32>) -> Option<u32> {
    (VXLAN_ID_START..=VXLAN_ID_END).find(|v| !used.contains(v))
}

/// One network's pool of addresses and what is taken in it.
#[derive(Debug, Clone)]
pub struct Pool {
    pub subnet: Ipv4Net,
    /// Where addresses are handed out from (`--ip-range`, else the subnet).
    range: Ipv4Net,
    gateway: Ipv4Addr,
    taken: BTreeSet<Ipv4Addr>,
    /// Every address below this one was taken when last looked at, so a
    /// pass handing out many addresses does not rescan them.
    cursor: u32,
}

impl Pool {
    /// The pool of an allocated IPAM config (its gateway is set).
    pub fn of(c: &IpamConfig) -> Option<Pool> {
        let subnet = parse_subnet(&c.subnet)?;
        let range = match c.range.as_str() {
            "" => subnet,
            r => parse_subnet(r).filter(|r| subnet.contains(r))?,
        };
        let gateway = match c.gateway.as_str() {
            "" => first_host(&subnet)?,
            g => g.parse().ok()?,
        };
        Some(Pool {
            subnet,
            range,
            gateway,
            taken: BTreeSet::new(),
            cursor: u32::from(range.network()),
        })
    }

    /// Marks an address taken (an existing VIP or task address).
    pub fn take(&mut self, a: Ipv4Addr) {
        self.taken.insert(a);
    }

    /// Gives an address back (within a pass: a task that could not get all its networks).
    pub fn release(&mut self, a: Ipv4Addr) {
        if self.taken.remove(&a) {
            self.cursor = self.cursor.min(u32::from(a));
        }
    }

    /// The lowest free address of the range, never the subnet's network or
    /// broadcast address or the gateway; `None` when the range is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let (first, last) = (u32::from(self.range.network()), u32::from(self.range.broadcast()));
        let (net, bcast) = (u32::from(self.subnet.network()), u32::from(self.subnet.broadcast()));
        let start = self.cursor.max(first);
        for n in start..=last {
            let a = Ipv4Addr::from(n);
            if n == net || n == bcast || a == self.gateway || self.taken.contains(&a) {
                continue;
            }
            self.taken.insert(a);
            self.cursor = n;
            return Some(a);
        }
        self.cursor = last;
        None
    }

    /// The highest free address of the range (hosts' own addresses are
    /// taken from the top, so services and tasks keep the low ones, first
    /// free, and a host's address is told apart at a glance).
    pub fn allocate_high(&mut self) -> Option<Ipv4Addr> {
        let (first, last) = (u32::from(self.range.network()), u32::from(self.range.broadcast()));
        let (net, bcast) = (u32::from(self.subnet.network()), u32::from(self.subnet.broadcast()));
        let a = (first..=last).rev().map(Ipv4Addr::from).find(|a| {
            let n = u32::from(*a);
            n != net && n != bcast && *a != self.gateway && !self.taken.contains(a)
        })?;
        self.taken.insert(a);
        Some(a)
    }

    /// `a` in CIDR form with the subnet's prefix length (`10.0.1.3/24`), as Docker writes addresses.
    pub fn cidr(&self, a: Ipv4Addr) -> String {
        format!("{a}/{}", self.subnet.prefix_len())
    }
}

/// The first host address of a subnet (its default gateway, as libnetwork picks it).
pub fn first_host(subnet: &Ipv4Net) -> Option<Ipv4Addr> {
    match subnet.prefix_len() {
        32 => Some(subnet.network()),
        31 => Some(subnet.network()),
        _ => Some(Ipv4Addr::from(u32::from(subnet.network()) + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_are_carved_in_order_skipping_taken_and_overlapping_ones() {
        let pools = [net("10.0.0.0/8")];
        assert_eq!(carve(&pools, 24, &[]), Some(net("10.0.0.0/24")));
        let taken = [net("10.0.0.0/24"), net("10.0.2.0/23")];
        assert_eq!(carve(&pools, 24, &taken), Some(net("10.0.1.0/24")));
        let taken = [net("10.0.0.0/24"), net("10.0.1.0/24"), net("10.0.2.128/25")];
        assert_eq!(carve(&pools, 24, &taken), Some(net("10.0.3.0/24")));
        // A second pool is used when the first is full; a size wider than a pool skips it.
        let pools = [net("192.168.0.0/23"), net("172.20.0.0/16")];
        let taken = [net("192.168.0.0/24"), net("192.168.1.0/24")];
        assert_eq!(carve(&pools, 24, &taken), Some(net("172.20.0.0/24")));
        assert_eq!(carve(&pools, 16, &[]), Some(net("172.20.0.0/16")));
        assert_eq!(carve(&[net("10.0.0.0/30")], 24, &[]), None);
    }

    #[test]
    fn addresses_skip_network_broadcast_and_gateway_and_run_out() {
        let c = IpamConfig {
            subnet: "10.0.1.0/29".into(),
            gateway: "10.0.1.1".into(),
            ..IpamConfig::default()
        };
        let mut p = Pool::of(&c).unwrap();
        p.take("10.0.1.3".parse().unwrap());
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| p.allocate()).collect();
        let got: Vec<String> = got.into_iter().map(|a| p.cidr(a)).collect();
        // .0 network, .1 gateway, .3 taken, .7 broadcast.
        assert_eq!(got, ["10.0.1.2/29", "10.0.1.4/29", "10.0.1.5/29", "10.0.1.6/29"]);
        assert_eq!(p.allocate(), None);
        p.release("10.0.1.4".parse().unwrap());
        assert_eq!(p.allocate(), Some("10.0.1.4".parse().unwrap()));
        assert_eq!(p.allocate(), None);
    }

    #[test]
    fn an_ip_range_limits_where_addresses_come_from() {
        let c = IpamConfig {
            subnet: "10.9.0.0/24".into(),
            range: "10.9.0.128/30".into(),
            gateway: String::new(),
        };
        let mut p = Pool::of(&c).unwrap();
        let got: Vec<Ipv4Addr> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(
            got,
            ["10.9.0.128", "10.9.0.129", "10.9.0.130", "10.9.0.131"].map(|a| a.parse::<Ipv4Addr>().unwrap())
        );
        assert!(Pool::of(&IpamConfig {
            subnet: "10.9.0.0/24".into(),
            range: "10.8.0.0/30".into(),
            gateway: String::new(),
        })
        .is_none());
    }

    #[test]
    fn vxlan_ids_start_at_4096_and_fill_gaps() {
        assert_eq!(next_vxlan_id(&BTreeSet::new()), Some(4096));
        assert_eq!(next_vxlan_id(&BTreeSet::from([4096, 4098])), Some(4097));
        assert_eq!(parse_addr("10.0.0.7/24"), Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(parse_subnet("10.0.0.7/24"), Some(net("10.0.0.0/24")));
    }
}
