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
use super::{netns, plan, realize, teardown};

/// Namespace files, unmounted and removed when dropped (also on failure):
/// the namespaces, and every device in them, go with them.
/// (The directory is held for its removal on drop.)
struct Namespaces(Vec<PathBuf>, #[allow(dead_code)] tempfile::TempDir);
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

/// Realizes `view` on the host whose namespace is `host`, with its overlay
/// namespace at `ovl`.
async fn realize_on(host: &Path, ovl: &Path, view: NetView) -> Vec<plan::Op> {
    let ovl = ovl.to_path_buf();
    netns::run_in(host, move |_| async move {
        let path = ovl.clone();
        netns::run_in_both(&ovl, move |h, o| async move { realize(&h, &o, &path, &view).await }).await
    })
    .await
    .unwrap()
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn tcp_crosses_vxlan_between_two_hosts_and_the_devices_follow_the_view() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return;
    }
    let ns = Namespaces::new(&["host-a", "host-b", "task-a", "task-b", "ovl-a", "ovl-b"]);
    let (host_a, host_b, task_a, task_b) = (&ns.0[0], &ns.0[1], &ns.0[2], &ns.0[3]);
    let (ovl_a, ovl_b) = (&ns.0[4], &ns.0[5]);
    underlay(host_a, host_b).await;
    for (host, ovl, node) in [(host_a, ovl_a, "a"), (host_b, ovl_b, "b")] {
        let ops = realize_on(host, ovl, view(node, true)).await;
        assert!(ops.len() >= 6, "{node}: {ops:?}");
    }
    for (ovl, task, t, ip) in [
        (ovl_a, task_a, "ta", [10, 0, 1, 4]),
        (ovl_b, task_b, "tb", [10, 0, 1, 5]),
    ] {
        let (task, a) = (task.clone(), attachment(t, ip));
        netns::run_in(ovl, move |nl| async move { nl.attach(&task, &a).await })
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
    let again = realize_on(host_a, ovl_a, view("a", true)).await;
    assert_eq!(again, [], "a second realize changes nothing");
    // Task b leaves: its entries go from host A, nothing else changes.
    let gone = realize_on(host_a, ovl_a, view("a", false)).await;
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(matches!(gone[0], plan::Op::DelFdb { .. }) && matches!(gone[1], plan::Op::DelNeigh { .. }));
    let have = netns::run_in(ovl_a, |nl| async move { nl.observe().await })
        .await
        .unwrap()
        .unwrap();
    let vx = &have.vxlans[&plan::vxlan_name(NET)];
    assert_eq!(vx.fdb.len(), 1, "{vx:?}");
    assert_eq!(
        (vx.vni, vx.port, vx.local),
        (4097, 4789, Some(Ipv4Addr::new(192, 0, 2, 1)))
    );

    // The network leaves the view: bridge, VXLAN device and host link go;
    // then the overlay namespace itself.
    let mut none = view("a", false);
    none.networks.clear();
    let ops = realize_on(host_a, ovl_a, none).await;
    assert_eq!(ops.len(), 3, "{ops:?}");
    let ovl = ovl_a.clone();
    netns::run_in(host_a, move |nl| async move { teardown(&nl, &ovl).await })
        .await
        .unwrap()
        .unwrap();
    assert!(!netns::is_mounted(ovl_a), "the overlay namespace is gone");
    let links = netns::run_in(host_a, |nl| async move { nl.our_links().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(links, Vec::<String>::new(), "devices of ours left on host A");
}

/// Bytes/s of one TCP stream of `mb` MiB from inside `from` to `to` (a sink
/// listening in `sink_ns`).
async fn throughput(from: &Path, sink_ns: &Path, to: SocketAddr, mb: usize) -> f64 {
    let l = netns::run_in(
        sink_ns,
        move |_| async move { std::net::TcpListener::bind(to).unwrap() },
    )
    .await
    .unwrap();
    let sink = std::thread::spawn(move || {
        use std::io::Read;
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0usize;
        while let Ok(k) = c.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    let start = std::time::Instant::now();
    netns::run_in(from, move |_| async move {
        let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
        let chunk = vec![7u8; 1 << 16];
        for _ in 0..mb * 16 {
            s.write_all(&chunk).await.unwrap();
        }
        s.shutdown().await.unwrap();
    })
    .await
    .unwrap();
    let got = sink.join().unwrap();
    assert_eq!(got, mb << 20);
    got as f64 / start.elapsed().as_secs_f64()
}

/// `ops/bench/overlay`: TCP throughput between two tasks on two hosts over
/// the overlay (VXLAN) against the two hosts over their underlay, same run.
/// `OVERLAY_BENCH_MB` MiB per stream (default 256). Prints `bench overlay ...`.
#[tokio::test]
#[ignore = "a benchmark: ops/bench/overlay runs it"]
async fn bench_overlay() {
    let mb: usize = std::env::var("OVERLAY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let ns = Namespaces::new(&["host-a", "host-b", "task-a", "task-b", "ovl-a", "ovl-b"]);
    let (host_a, host_b, task_a, task_b) = (&ns.0[0], &ns.0[1], &ns.0[2], &ns.0[3]);
    let (ovl_a, ovl_b) = (&ns.0[4], &ns.0[5]);
    underlay(host_a, host_b).await;
    for (host, ovl, node) in [(host_a, ovl_a, "a"), (host_b, ovl_b, "b")] {
        realize_on(host, ovl, view(node, true)).await;
    }
    for (ovl, task, t, ip) in [
        (ovl_a, task_a, "ta", [10, 0, 1, 4]),
        (ovl_b, task_b, "tb", [10, 0, 1, 5]),
    ] {
        let (task, a) = (task.clone(), attachment(t, ip));
        netns::run_in(ovl, move |nl| async move { nl.attach(&task, &a).await })
            .await
            .unwrap()
            .unwrap();
    }
    let mut over = Vec::new();
    let mut under = Vec::new();
    for round in 0..3 {
        let port = 9000 + round;
        over.push(throughput(task_a, task_b, format!("10.0.1.5:{port}").parse().unwrap(), mb).await);
        under.push(throughput(host_a, host_b, format!("192.0.2.2:{port}").parse().unwrap(), mb).await);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max) * 8.0 / 1e6;
    let (o, u) = (best(&over), best(&under));
    println!(
        "overlay runs (Mbit/s): {:?}",
        over.iter().map(|b| (b * 8.0 / 1e6) as u64).collect::<Vec<_>>()
    );
    println!(
        "underlay runs (Mbit/s): {:?}",
        under.iter().map(|b| (b * 8.0 / 1e6) as u64).collect::<Vec<_>>()
    );
    println!(
        "bench overlay ratio={:.3} overlay_mbps={:.0} underlay_mbps={:.0} mib_per_stream={mb} mtu={OVERLAY_MTU}",
        o / u,
        o,
        u
    );
}

/// A task's VIP table written into a namespace for real: a VIP with two
/// tasks alternates between them, one with a task goes there, one with none
/// refuses at once; writing another table replaces the first whole.
#[tokio::test]
async fn a_vip_table_sends_connections_round_robin_and_refuses_without_tasks() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use super::nft;
    use super::vip::{VipRule, VipTable};
    let ns = Namespaces::new(&["task"]);
    let task = ns.0[0].clone();
    netns::run_in(&task, |nl| async move {
        let lo = nl.index("lo").await.unwrap();
        let h = nl.handle();
        for ip in [[10, 9, 0, 5], [10, 9, 0, 6]] {
            h.address().add(lo, IpAddr::from(ip), 24).execute().await.unwrap();
        }
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .unwrap();
    })
    .await
    .unwrap();
    let at = |ip: [u8; 4]| SocketAddr::from((ip, 80));
    serve(&task, at([10, 9, 0, 5]), 3).await;
    serve(&task, at([10, 9, 0, 6]), 2).await;
    let rule = |vip: [u8; 4], backends: &[[u8; 4]]| VipRule {
        vip: vip.into(),
        backends: backends.iter().map(|b| Ipv4Addr::from(*b)).collect(),
    };
    let table = VipTable {
        rules: vec![
            rule([10, 9, 0, 2], &[[10, 9, 0, 5], [10, 9, 0, 6]]),
            rule([10, 9, 0, 3], &[]),
            rule([10, 9, 0, 4], &[[10, 9, 0, 6]]),
        ],
    };
    nft::apply(&task, &table).await.unwrap();
    // Written twice: the second replaces the first (no duplicate table).
    nft::apply(&task, &table).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(talk(&task, at([10, 9, 0, 2])).await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, vec!["pong from 10.9.0.5:80", "pong from 10.9.0.6:80"]);
    assert_eq!(talk(&task, at([10, 9, 0, 4])).await.unwrap(), "pong from 10.9.0.6:80");
    let started = std::time::Instant::now();
    let refused = talk(&task, at([10, 9, 0, 3])).await.unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Another table: the VIP with no task now has one, the others are gone.
    nft::apply(
        &task,
        &VipTable {
            rules: vec![rule([10, 9, 0, 3], &[[10, 9, 0, 5]])],
        },
    )
    .await
    .unwrap();
    assert_eq!(talk(&task, at([10, 9, 0, 3])).await.unwrap(), "pong from 10.9.0.5:80");
    assert!(talk(&task, at([10, 9, 0, 2])).await.is_err());
}
