//! The data plane for real, between network namespaces made here (no
//! engine, no cluster): two "hosts" joined by a veth underlay, each
//! realizing its view (bridge, VXLAN, FDB and neighbour entries), one task
//! namespace attached on each; TCP crosses the VXLAN both ways, a second
//! realize changes nothing, and a view without the network leaves no device.
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); skipped otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rtnetlink::{LinkUnspec, LinkVeth};
use shoal_shared::netview::{EndpointOwner, EndpointView, NetView, NetworkView, NodeView, OVERLAY_MTU};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::link::{Attachment, Netlink};
use super::{netns, plan, realize};

/// Namespace files, unmounted and removed when dropped (also on failure):
/// the namespaces, and every device in them, go with them.
struct Namespaces(Vec<PathBuf>, tempfile::TempDir);
impl Namespaces {
    fn new(names: &[&str]) -> Namespaces {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
        for p in &paths {
            netns::create(p).unwrap();
        }
        Namespaces(paths, dir)
    }
}
impl Drop for Namespaces {
    fn drop(&mut self) {
        for p in &self.0 {
            netns::remove(p);
        }
    }
}

const NET: &str = "netoverlaytest00000000001";

fn view(node: &str, with_b_task: bool) -> NetView {
    let ep = |addr: &str, node: &str, task: Option<&str>| {
        let ip: Ipv4Addr = addr.split('/').next().unwrap().parse().unwrap();
        EndpointView {
            network_id: NET.into(),
            addr: addr.into(),
            mac: shoal_shared::model::mac_for_ip(ip),
            node_id: node.into(),
            owner: match task {
                None => EndpointOwner::Node,
                Some(t) => EndpointOwner::Task {
                    task_id: t.into(),
                    service_id: "s".into(),
                    service_name: "web".into(),
                    task_name: format!("web.1.{t}"),
                    slot: Some(1),
                    aliases: vec![],
                    serving: true,
                },
            },
        }
    };
    let mut endpoints = vec![
        ep("10.0.1.2/24", "a", None),
        ep("10.0.1.3/24", "b", None),
        ep("10.0.1.4/24", "a", Some("ta")),
    ];
    if with_b_task {
        endpoints.push(ep("10.0.1.5/24", "b", Some("tb")));
    }
    NetView {
        node_id: node.into(),
        version: 1,
        networks: vec![NetworkView {
            id: NET.into(),
            name: "web".into(),
            subnet: "10.0.1.0/24".into(),
            gateway: "10.0.1.1".into(),
            vni: 4097,
            ingress: false,
            internal: false,
            attachable: false,
            mtu: OVERLAY_MTU,
        }],
        endpoints,
        services: vec![],
        nodes: vec![
            NodeView {
                id: "a".into(),
                addr: "192.0.2.1".into(),
                ready: true,
            },
            NodeView {
                id: "b".into(),
                addr: "192.0.2.2".into(),
                ready: true,
            },
        ],
    }
}

fn attachment(task: &str, ip: [u8; 4]) -> Attachment {
    let addr = Ipv4Addr::from(ip);
    Attachment {
        bridge: plan::bridge_name(NET),
        host_end: plan::veth_name(task, 0),
        ifname: "eth0".into(),
        addr,
        prefix: 24,
        mac: plan::mac_of(addr),
        mtu: OVERLAY_MTU,
    }
}

/// Host A's end of the underlay (`ul0`, 192.0.2.1), the other end moved to
/// host B and given 192.0.2.2 there.
async fn underlay(host_a: &Path, host_b: &Path) {
    let b = host_b.to_path_buf();
    netns::run_in(host_a, move |nl| async move {
        let h = nl.handle().clone();
        h.link()
            .add(LinkVeth::new("ul0", "ul1").build())
            .execute()
            .await
            .unwrap();
        let file = std::fs::File::open(&b).unwrap();
        let i1 = nl.index("ul1").await.unwrap();
        use std::os::fd::AsRawFd;
        h.link()
            .set(LinkUnspec::new_with_index(i1).setns_by_fd(file.as_raw_fd()).build())
            .execute()
            .await
            .unwrap();
        up_with(&nl, "ul0", [192, 0, 2, 1]).await;
    })
    .await
    .unwrap();
    netns::run_in(host_b, |nl| async move { up_with(&nl, "ul1", [192, 0, 2, 2]).await })
        .await
        .unwrap();
}

async fn up_with(nl: &Netlink, dev: &str, ip: [u8; 4]) {
    let h = nl.handle();
    let i = nl.index(dev).await.unwrap();
    h.address().add(i, IpAddr::from(ip), 24).execute().await.unwrap();
    h.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .unwrap();
    let lo = nl.index("lo").await.unwrap();
    h.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .unwrap();
}

/// Connects from inside `ns` to `to`, sends a line and returns the answer.
async fn talk(ns: &Path, to: SocketAddr) -> Result<String, String> {
    netns::run_in(ns, move |_| async move {
        let connect = tokio::net::TcpStream::connect(to);
        let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| format!("connecting to {to} timed out"))?
            .map_err(|e| format!("connecting to {to}: {e}"))?;
        s.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .await?
}

/// A listener inside `ns` answering `n` connections with its own address,
/// then closed (a socket holds its namespace).
async fn serve(ns: &Path, at: SocketAddr, n: usize) {
    let l = netns::run_in(ns, move |_| async move { std::net::TcpListener::bind(at).unwrap() })
        .await
        .unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in l.incoming().take(n).flatten() {
            let mut buf = [0u8; 5];
            let _ = c.read(&mut buf);
            let _ = c.write_all(format!("pong from {at}").as_bytes());
        }
    });
}

#[tokio::test]
async fn tcp_crosses_vxlan_between_two_hosts_and_the_devices_follow_the_view() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let ns = Namespaces::new(&["host-a", "host-b", "task-a", "task-b"]);
    let (host_a, host_b, task_a, task_b) = (&ns.0[0], &ns.0[1], &ns.0[2], &ns.0[3]);
    underlay(host_a, host_b).await;
    for (host, node) in [(host_a, "a"), (host_b, "b")] {
        let ops = netns::run_in(host, move |nl| async move { realize(&nl, &view(node, true)).await })
            .await
            .unwrap()
            .unwrap();
        assert!(ops.len() >= 5, "{node}: {ops:?}");
    }
    for (host, task, t, ip) in [
        (host_a, task_a, "ta", [10, 0, 1, 4]),
        (host_b, task_b, "tb", [10, 0, 1, 5]),
    ] {
        let (task, a) = (task.clone(), attachment(t, ip));
        netns::run_in(host, move |nl| async move { nl.attach(&task, &a).await })
            .await
            .unwrap()
            .unwrap();
    }
    serve(task_b, "10.0.1.5:8080".parse().unwrap(), 2).await;
    serve(task_a, "10.0.1.4:8080".parse().unwrap(), 1).await;
    assert_eq!(
        talk(task_a, "10.0.1.5:8080".parse().unwrap()).await.unwrap(),
        "pong from 10.0.1.5:8080",
        "task on host A reaches the task on host B over VXLAN"
    );
    assert_eq!(
        talk(task_b, "10.0.1.4:8080".parse().unwrap()).await.unwrap(),
        "pong from 10.0.1.4:8080"
    );
    assert_eq!(
        talk(host_a, "10.0.1.5:8080".parse().unwrap()).await.unwrap(),
        "pong from 10.0.1.5:8080",
        "host A's own address on the network reaches a remote task"
    );
    // The task inside sees its interface as eth0 with its address.
    let inside = netns::run_in(task_a, |nl| async move { nl.addresses().await })
        .await
        .unwrap()
        .unwrap();
    assert!(
        inside.contains(&("eth0".into(), Ipv4Addr::new(10, 0, 1, 4), 24)),
        "{inside:?}"
    );

    // Again with the same view: nothing changes (an agent restart).
    let again = netns::run_in(host_a, |nl| async move { realize(&nl, &view("a", true)).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, [], "a second realize changes nothing");
    // Task b leaves: its entries go from host A, nothing else changes.
    let gone = netns::run_in(host_a, |nl| async move { realize(&nl, &view("a", false)).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(matches!(gone[0], plan::Op::DelFdb { .. }) && matches!(gone[1], plan::Op::DelNeigh { .. }));
    let have = netns::run_in(host_a, |nl| async move { nl.observe().await })
        .await
        .unwrap()
        .unwrap();
    let vx = &have.vxlans[&plan::vxlan_name(NET)];
    assert_eq!(vx.fdb.len(), 1, "{vx:?}");
    assert_eq!(
        (vx.vni, vx.port, vx.local),
        (4097, 4789, Some(Ipv4Addr::new(192, 0, 2, 1)))
    );

    // The network leaves the view: bridge and VXLAN device go; the task's
    // veth goes with the task's namespace.
    let mut none = view("a", false);
    none.networks.clear();
    netns::run_in(host_a, move |nl| async move { realize(&nl, &none).await })
        .await
        .unwrap()
        .unwrap();
    netns::remove(task_a);
    let left = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let links = netns::run_in(host_a, |nl| async move { nl.our_links().await })
                .await
                .unwrap()
                .unwrap();
            if links.is_empty() {
                return links;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    if left.is_err() {
        let links = netns::run_in(host_a, |nl| async move { nl.our_links().await })
            .await
            .unwrap();
        panic!("devices of ours left on host A: {links:?}");
    }
}
