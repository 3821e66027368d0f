//! The host's devices through netlink (rtnetlink): reading what of ours
//! exists ([`Netlink::observe`]), performing one [`Op`] of a plan, and
//! attaching a task's network namespace to a bridge with a veth pair.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};

use super::plan::{self, Mac, Observed, Op, VxlanState};

/// A netlink connection in the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn name_of(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -17)
}

fn is_missing(e: &rtnetlink::Error) -> bool {
    // ENOENT, ENODEV, ESRCH, EADDRNOTAVAIL: already gone.
    matches!(e, rtnetlink::Error::NetlinkError(m) if [-2, -19, -3, -99].contains(&m.raw_code()))
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace; its
    /// driver runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink, String> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err("netlink", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The rtnetlink handle (tests, diagnostics).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, String> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing links", e))
    }

    /// The index of a device, if it exists.
    pub async fn index(&self, name: &str) -> Option<u32> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        s.try_next().await.ok().flatten().map(|l| l.header.index)
    }

    async fn must_index(&self, name: &str) -> Result<u32, String> {
        self.index(name).await.ok_or_else(|| format!("no device {name}"))
    }

    /// Every device of ours (named with [`plan::PREFIX`]).
    pub async fn our_links(&self) -> Result<Vec<String>, String> {
        Ok(self
            .links()
            .await?
            .iter()
            .filter_map(name_of)
            .filter(|n| n.starts_with(plan::PREFIX))
            .map(str::to_string)
            .collect())
    }

    /// Our bridges (with their IPv4 addresses) and VXLAN devices (with their
    /// permanent FDB and neighbour entries).
    pub async fn observe(&self) -> Result<Observed, String> {
        let links = self.links().await?;
        let names: BTreeMap<u32, String> = links
            .iter()
            .filter_map(|l| Some((l.header.index, name_of(l)?.to_string())))
            .collect();
        let mut have = Observed::default();
        let mut vx_index: BTreeMap<u32, String> = BTreeMap::new();
        let mut host_index: BTreeMap<u32, String> = BTreeMap::new();
        for l in &links {
            let Some(name) = name_of(l) else { continue };
            if plan::is_bridge(name) {
                have.bridges.insert(name.to_string());
            } else if plan::is_host_link(name) {
                have.host_links.insert(name.to_string(), BTreeSet::new());
                host_index.insert(l.header.index, name.to_string());
            } else if plan::is_vxlan(name) {
                let mut v = VxlanState::default();
                for a in &l.attributes {
                    match a {
                        LinkAttribute::Controller(m) => v.master = names.get(m).cloned(),
                        LinkAttribute::LinkInfo(infos) => {
                            for i in infos {
                                if let LinkInfo::Data(InfoData::Vxlan(d)) = i {
                                    for x in d {
                                        match x {
                                            InfoVxlan::Id(id) => v.vni = *id,
                                            InfoVxlan::Local(ip) => v.local = Some(*ip),
                                            InfoVxlan::Port(p) => v.port = *p,
                                            _ => {}
                                        }
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                have.vxlans.insert(name.to_string(), v);
                vx_index.insert(l.header.index, name.to_string());
            }
        }
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing addresses", e))?;
        for a in addrs {
            let Some(host) = host_index.get(&a.header.index) else {
                continue;
            };
            for attr in &a.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                    if let Some(set) = have.host_links.get_mut(host) {
                        set.insert((*ip, a.header.prefix_len));
                    }
                }
            }
        }
        for family in [AddressFamily::Bridge, AddressFamily::Inet] {
            let neigh: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(|e| err("listing neighbours", e))?;
            for n in neigh {
                let Some(dev) = vx_index.get(&n.header.ifindex) else {
                    continue;
                };
                if n.header.state != NeighbourState::Permanent {
                    continue;
                }
                let mac = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                        let mut out = [0u8; 6];
                        out.copy_from_slice(m);
                        Some(out)
                    }
                    _ => None,
                });
                let dst = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    // An FDB entry's remote comes undecoded (family bridge).
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                    _ => None,
                });
                let (Some(mac), Some(dst), Some(v)) = (mac, dst, have.vxlans.get_mut(dev)) else {
                    continue;
                };
                if family == AddressFamily::Bridge {
                    if n.header.flags.contains(NeighbourFlags::Own) {
                        v.fdb.insert((mac, dst));
                    }
                } else {
                    v.neigh.insert((dst, mac));
                }
            }
        }
        Ok(have)
    }

    /// Deletes a device; one already gone is fine.
    pub async fn del_link(&self, name: &str) -> Result<(), String> {
        let Some(idx) = self.index(name).await else {
            return Ok(());
        };
        match self.handle.link().del(idx).execute().await {
            Err(e) if !is_missing(&e) => Err(err(&format!("deleting {name}"), e)),
            _ => Ok(()),
        }
    }

    fn fdb_request(&self, idx: u32, mac: &Mac, vtep: Ipv4Addr) -> rtnetlink::NeighbourAddRequest {
        self.handle
            .neighbours()
            .add_bridge(idx, mac)
            .destination(IpAddr::V4(vtep))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
    }

    fn neigh_request(&self, idx: u32, ip: Ipv4Addr, mac: &Mac) -> rtnetlink::NeighbourAddRequest {
        self.handle
            .neighbours()
            .add(idx, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
    }

    async fn del_neighbour(&self, mut req: rtnetlink::NeighbourAddRequest) -> Result<(), String> {
        let msg = req.message_mut().clone();
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if !is_missing(&e) => Err(err("deleting an entry", e)),
            _ => Ok(()),
        }
    }

    /// Performs one step of a plan; `self` works in the overlay namespace
    /// (`ovl_ns`), `host` in the host's.
    pub async fn apply(&self, host: &Netlink, ovl_ns: &std::fs::File, op: &Op) -> Result<(), String> {
        let h = &self.handle;
        match op {
            Op::AddBridge { name, mtu } => {
                let b = LinkBridge::new(name).mtu(*mtu).up();
                match h.link().add(b.build()).execute().await {
                    Err(e) if !is_exists(&e) => return Err(err(&format!("creating bridge {name}"), e)),
                    _ => {}
                }
            }
            Op::AddHostLink {
                name,
                peer,
                bridge,
                mtu,
                mac,
            } => {
                let br = self.must_index(bridge).await?;
                host.del_link(name).await?;
                host.del_link(peer).await?;
                let hh = &host.handle;
                hh.link()
                    .add(LinkVeth::new(name, peer).mtu(*mtu).build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("creating {name}"), e))?;
                let p = host.must_index(peer).await?;
                hh.link()
                    .set(LinkUnspec::new_with_index(p).setns_by_fd(ovl_ns.as_raw_fd()).build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("moving {peer} to the overlay namespace"), e))?;
                let i = host.must_index(name).await?;
                hh.link()
                    .set(LinkUnspec::new_with_index(i).address(mac.to_vec()).up().build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("bringing {name} up"), e))?;
                let p = self.must_index(peer).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(p).controller(br).mtu(*mtu).up().build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("putting {peer} on {bridge}"), e))?;
            }
            Op::AddAddr { dev, addr, prefix } => {
                let idx = host.must_index(dev).await?;
                match host
                    .handle
                    .address()
                    .add(idx, IpAddr::V4(*addr), *prefix)
                    .execute()
                    .await
                {
                    Err(e) if !is_exists(&e) => return Err(err(&format!("adding {addr}/{prefix} to {dev}"), e)),
                    _ => {}
                }
            }
            Op::AddVxlan {
                name,
                vni,
                local,
                mtu,
                master,
            } => {
                let br = self.must_index(master).await?;
                // Made in the host's namespace, where its UDP socket stays.
                host.del_link(name).await?;
                let mut v = LinkVxlan::new(name, *vni)
                    .port(shoal_shared::netview::VXLAN_PORT)
                    .learning(false)
                    .append_info_data(InfoVxlan::Proxy(true))
                    .mtu(*mtu);
                if let Some(local) = local {
                    v = v.local(*local);
                }
                host.handle
                    .link()
                    .add(v.build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("creating VXLAN device {name} (VNI {vni})"), e))?;
                let idx = host.must_index(name).await?;
                host.handle
                    .link()
                    .set(LinkUnspec::new_with_index(idx).setns_by_fd(ovl_ns.as_raw_fd()).build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("moving {name} to the overlay namespace"), e))?;
                let idx = self.must_index(name).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(idx).controller(br).up().build())
                    .execute()
                    .await
                    .map_err(|e| err(&format!("enslaving {name} to {master}"), e))?;
            }
            Op::DelHostLink { name } => host.del_link(name).await?,
            Op::DelLink { name } => self.del_link(name).await?,
            Op::AddFdb { dev, mac, vtep } => {
                let idx = self.must_index(dev).await?;
                self.fdb_request(idx, mac, *vtep)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| err(&format!("adding an FDB entry to {dev}"), e))?;
            }
            Op::DelFdb { dev, mac, vtep } => {
                let idx = self.must_index(dev).await?;
                self.del_neighbour(self.fdb_request(idx, mac, *vtep)).await?;
            }
            Op::AddNeigh { dev, ip, mac } => {
                let idx = self.must_index(dev).await?;
                self.neigh_request(idx, *ip, mac)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| err(&format!("adding a neighbour entry to {dev}"), e))?;
            }
            Op::DelNeigh { dev, ip, mac } => {
                let idx = self.must_index(dev).await?;
                self.del_neighbour(self.neigh_request(idx, *ip, mac)).await?;
            }
        }
        Ok(())
    }

    /// Attaches the network namespace at `netns` to `bridge`: a veth pair,
    /// `host_end` on the bridge, the other end moved into the namespace and
    /// set up there as `ifname` with `addr/prefix`, its MAC and `mtu`.
    pub async fn attach(&self, netns: &Path, a: &Attachment) -> Result<(), String> {
        let h = &self.handle;
        let peer = format!("{}p", &a.host_end[..a.host_end.len().min(14)]);
        self.del_link(&a.host_end).await?;
        self.del_link(&peer).await?;
        let br = self.must_index(&a.bridge).await?;
        h.link()
            .add(LinkVeth::new(&a.host_end, &peer).mtu(a.mtu).build())
            .execute()
            .await
            .map_err(|e| err(&format!("creating veth {}", a.host_end), e))?;
        let work = async {
            let host = self.must_index(&a.host_end).await?;
            h.link()
                .set(LinkUnspec::new_with_index(host).controller(br).mtu(a.mtu).up().build())
                .execute()
                .await
                .map_err(|e| err(&format!("putting {} on {}", a.host_end, a.bridge), e))?;
            let file = std::fs::File::open(netns).map_err(|e| err(&format!("opening {}", netns.display()), e))?;
            let p = self.must_index(&peer).await?;
            h.link()
                .set(LinkUnspec::new_with_index(p).setns_by_fd(file.as_raw_fd()).build())
                .execute()
                .await
                .map_err(|e| err("moving the veth into the task's namespace", e))?;
            let (peer, a2) = (peer.clone(), a.clone());
            super::netns::run_in(netns, move |nl| async move { nl.configure_inside(&peer, &a2).await }).await?
        };
        let res = work.await;
        if res.is_err() {
            let _ = self.del_link(&a.host_end).await;
        }
        res
    }

    /// Inside the task's namespace: the moved end becomes `ifname`, gets its
    /// MAC, address and MTU, and comes up (with `lo`).
    async fn configure_inside(&self, peer: &str, a: &Attachment) -> Result<(), String> {
        let h = &self.handle;
        let idx = self.must_index(peer).await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .name(a.ifname.clone())
                    .address(a.mac.to_vec())
                    .mtu(a.mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| err(&format!("naming {}", a.ifname), e))?;
        match h.address().add(idx, IpAddr::V4(a.addr), a.prefix).execute().await {
            Err(e) if !is_exists(&e) => return Err(err(&format!("adding {}/{}", a.addr, a.prefix), e)),
            _ => {}
        }
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| err(&format!("bringing {} up", a.ifname), e))?;
        if let Some(lo) = self.index("lo").await {
            let _ = h
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await;
        }
        Ok(())
    }

    /// The names of the devices in this namespace with their IPv4 addresses
    /// (tests and diagnostics).
    pub async fn addresses(&self) -> Result<Vec<(String, Ipv4Addr, u8)>, String> {
        let names: BTreeMap<u32, String> = self
            .links()
            .await?
            .iter()
            .filter_map(|l| Some((l.header.index, name_of(l)?.to_string())))
            .collect();
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing addresses", e))?;
        let mut out = Vec::new();
        for a in addrs {
            for attr in &a.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                    let name = names.get(&a.header.index).cloned().unwrap_or_default();
                    out.push((name, *ip, a.header.prefix_len));
                }
            }
        }
        Ok(out)
    }
}

/// One network interface of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub bridge: String,
    pub host_end: String,
    /// `eth0`, `eth1`, ... in the task's namespace.
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub mac: Mac,
    pub mtu: u32,
}
