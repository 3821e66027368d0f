//! shoal-dns as a real process: a real nats-server, a scripted peer in the
//! dispatcher's place (answers `shoal.net.req`, publishes views on
//! `shoal.net.node.<id>`), a tiny upstream DNS server, and queries sent from
//! chosen loopback source addresses (the "containers") with hickory-proto
//! messages over UDP and TCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_shared::envelope::{self, Reply};
use shoal_shared::model::EndpointMode;
use shoal_shared::netview::{EndpointOwner, EndpointView, NetView, NetworkView, ServiceView};
use shoal_shared::subjects;
use shoal_tests::{bin, eventually, free_port, Nats, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn net(id: &str, name: &str, third: u8) -> NetworkView {
    NetworkView {
        id: id.into(),
        name: name.into(),
        subnet: format!("127.77.{third}.0/24"),
        gateway: format!("127.77.{third}.1"),
        vni: 4096 + third as u32,
        ingress: false,
        internal: false,
        attachable: false,
        mtu: 1450,
    }
}

fn task(net: &str, addr: &str, id: &str, svc: &str, slot: u64, aliases: &[&str], serving: bool) -> EndpointView {
    EndpointView {
        network_id: net.into(),
        addr: format!("{addr}/24"),
        mac: String::new(),
        node_id: "other-node".into(),
        owner: EndpointOwner::Task {
            task_id: id.into(),
            service_id: format!("id-{svc}"),
            service_name: svc.into(),
            task_name: format!("{svc}.{slot}.{id}"),
            slot: Some(slot),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            serving,
        },
    }
}

fn host(net: &str, addr: &str, node: &str) -> EndpointView {
    EndpointView {
        network_id: net.into(),
        addr: format!("{addr}/24"),
        mac: String::new(),
        node_id: node.into(),
        owner: EndpointOwner::Node,
    }
}

/// `front` (127.77.1/24): web (vip 127.77.1.2, tasks w1 .10, w2 .11, alias
/// www), the client c1 (.50); `back` (127.77.2/24): db (dnsrr, tasks d1 .10,
/// d2 .11). This host's own addresses: 127.77.1.254 and 127.77.2.254.
fn view(node: &str, version: u64) -> NetView {
    NetView {
        node_id: node.into(),
        version,
        networks: vec![net("nf", "front", 1), net("nb", "back", 2)],
        endpoints: vec![
            task("nf", "127.77.1.10", "w1", "web", 1, &["www"], true),
            task("nf", "127.77.1.11", "w2", "web", 2, &["www"], true),
            task("nf", "127.77.1.50", "c1", "client", 1, &[], true),
            task("nb", "127.77.2.10", "d1", "db", 1, &[], true),
            task("nb", "127.77.2.11", "d2", "db", 2, &[], true),
            host("nf", "127.77.1.254", node),
            host("nb", "127.77.2.254", node),
        ],
        services: vec![
            ServiceView {
                id: "id-web".into(),
                name: "web".into(),
                endpoint_mode: EndpointMode::Vip,
                vips: vec![("nf".into(), "127.77.1.2/24".into())],
                ports: vec![],
                proxy_protocol: false,
            },
            ServiceView {
                id: "id-db".into(),
                name: "db".into(),
                endpoint_mode: EndpointMode::Dnsrr,
                vips: vec![],
                ports: vec![],
                proxy_protocol: false,
            },
            ServiceView {
                id: "id-client".into(),
                name: "client".into(),
                endpoint_mode: EndpointMode::Vip,
                vips: vec![],
                ports: vec![],
                proxy_protocol: false,
            },
        ],
        nodes: vec![],
    }
}

/// A tiny upstream: `outside.example` A 192.0.2.7; every other name NXDOMAIN (authoritative).
async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_available = true;
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            r.add_query(query.clone());
            if query.name().to_ascii() == "outside.example." && query.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A::new(192, 0, 2, 7)),
                ));
            } else {
                r.metadata.response_code = ResponseCode::NXDomain;
                r.metadata.authoritative = true;
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    (addr, task)
}

/// A query for `name`.
fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}

/// Asks `server` over UDP from `src` (a loopback address: the asking "container").
async fn ask_udp(src: &str, server: SocketAddr, name: &str, t: RecordType) -> Result<Message, String> {
    let sock = tokio::net::UdpSocket::bind((src.parse::<IpAddr>().unwrap(), 0))
        .await
        .map_err(|e| e.to_string())?;
    let q = query(name, t);
    sock.send_to(&q.to_vec().unwrap(), server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
        .await
        .map_err(|_| format!("no answer from {server} for {name}"))?
        .map_err(|e| e.to_string())?;
    let r = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.metadata.message_type, MessageType::Response);
    Ok(r)
}

/// Asks over TCP (two-byte length framing, RFC 1035 4.2.2).
async fn ask_tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    let q = query(name, t).to_vec().unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The A addresses of an answer, sorted.
fn addrs(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn ips(s: &[&str]) -> Vec<Ipv4Addr> {
    s.iter().map(|a| a.parse().unwrap()).collect()
}

/// nats-server, the view peer, the upstream and shoal-dns.
struct Fixture {
    _dir: tempfile::TempDir,
    _nats: Nats,
    nats: async_nats::Client,
    node: String,
    /// What the peer answers view requests with.
    current: Arc<Mutex<NetView>>,
    /// `--listen` address.
    listen: SocketAddr,
    /// `--port`, served on the host's own addresses.
    port: u16,
    _dns: Proc,
    _peer: tokio::task::JoinHandle<()>,
    _upstream: tokio::task::JoinHandle<()>,
}

impl Fixture {
    /// `upstream_alive`: false points shoal-dns at a port where nothing answers.
    async fn start(upstream_alive: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let nats_server = Nats::start(dir.path());
        let nats = nats_server.client().await;
        let node = shoal_shared::id::new_id();
        let current = Arc::new(Mutex::new(view(&node, 5)));
        let mut reqs = nats.subscribe(subjects::net_requests()).await.unwrap();
        let (c, n) = (current.clone(), nats.clone());
        let peer = tokio::spawn(async move {
            while let Some(msg) = reqs.next().await {
                let v = c.lock().unwrap().clone();
                envelope::respond(&n, &msg, &Reply::Ok(v)).await;
            }
        });
        let (up, up_task) = upstream().await;
        let up = if upstream_alive {
            up
        } else {
            SocketAddr::from(([127, 0, 0, 1], free_port()))
        };
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let port = free_port();
        let mut cmd = Command::new(bin("shoal-dns"));
        cmd.args(["--nats-url", &nats_server.url(), "--node-id", &node])
            .args(["--listen", &listen.to_string(), "--port", &port.to_string()])
            .args(["--upstream", &up.to_string(), "--upstream-timeout-ms", "300"])
            .env("RUST_LOG", "shoal_dns=debug,info");
        let dns = Proc::spawn("shoal-dns", cmd, &dir.path().join("dns.log"));
        let f = Fixture {
            _dir: dir,
            _nats: nats_server,
            nats,
            node,
            current,
            listen,
            port,
            _dns: dns,
            _peer: peer,
            _upstream: up_task,
        };
        // The view asked for at start is taken: web resolves.
        eventually(T, "shoal-dns to take the view it asked for", || async {
            let r = ask_udp("127.77.1.50", f.listen, "web.", RecordType::A).await?;
            (addrs(&r) == ips(&["127.77.1.2"]))
                .then_some(())
                .ok_or(format!("{r:?}"))
        })
        .await;
        f
    }

    fn on(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), self.port)
    }

    async fn publish(&self, v: &NetView) {
        self.nats
            .publish(subjects::net_view(&self.node), envelope::encode(v))
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
    }
}

const CLIENT: &str = "127.77.1.50";

#[tokio::test]
async fn answers_services_tasks_task_names_and_aliases_as_docker_does() {
    let f = Fixture::start(true).await;
    let front = f.on("127.77.1.254");
    let back = f.on("127.77.2.254");
    // vip mode: the VIP, Docker's TTL; recursion available, not authoritative.
    let r = ask_udp(CLIENT, front, "web.", RecordType::A).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.recursion_available && !r.metadata.authoritative);
    assert_eq!(addrs(&r), ips(&["127.77.1.2"]));
    assert_eq!(r.answers[0].ttl, 600);
    // tasks.<service>: every serving task, not cached.
    let r = ask_udp(CLIENT, front, "tasks.web.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.10", "127.77.1.11"]));
    assert!(r.answers.iter().all(|a| a.ttl == 0));
    // dnsrr: every task (asked by an unknown source on back's address).
    let r = ask_udp("127.77.2.99", back, "db.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.2.10", "127.77.2.11"]));
    // A task's name; a network alias and tasks.<alias>.
    let r = ask_udp(CLIENT, front, "web.2.w2.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.11"]));
    let r = ask_udp(CLIENT, front, "www.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.2"]));
    let r = ask_udp(CLIENT, front, "tasks.www.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.10", "127.77.1.11"]));
    // Names are not case sensitive.
    let r = ask_udp(CLIENT, front, "WEB.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.2"]));
    // AAAA of a cluster name: empty NOERROR (not asked upstream, which would say NXDOMAIN).
    let r = ask_udp(CLIENT, front, "web.", RecordType::AAAA).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    // Reverse: a task's address names the task on its network.
    let r = ask_udp(CLIENT, front, "10.1.77.127.in-addr.arpa.", RecordType::PTR)
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 1, "{r:?}");
    assert_eq!(r.answers[0].data.to_string(), "web.1.w1.front.");
    // Over TCP too.
    let r = ask_tcp(front, "tasks.web.", RecordType::A).await;
    assert_eq!(addrs(&r), ips(&["127.77.1.10", "127.77.1.11"]));
}

#[tokio::test]
async fn scopes_names_to_the_networks_the_asker_shares() {
    let f = Fixture::start(true).await;
    let front = f.on("127.77.1.254");
    let back = f.on("127.77.2.254");
    // The client is on front only: db is not its name, wherever it asks.
    for on in [front, back, f.listen] {
        let r = ask_udp(CLIENT, on, "db.", RecordType::A).await.unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "asked on {on}: {r:?}");
        assert!(r.answers.is_empty());
    }
    // An unknown source sees the network it asked on.
    let r = ask_udp("127.77.2.99", back, "web.", RecordType::A).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask_udp("127.77.1.99", front, "web.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.2"]));
    // A task on back sees db, not web.
    let r = ask_udp("127.77.2.10", front, "db.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.2.10", "127.77.2.11"]));
    let r = ask_udp("127.77.2.10", front, "web.", RecordType::A).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn forwards_other_names_to_the_upstream() {
    let f = Fixture::start(true).await;
    let r = ask_udp(CLIENT, f.listen, "outside.example.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&r), ips(&["192.0.2.7"]));
    let r = ask_udp(CLIENT, f.listen, "nowhere.example.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // AAAA of a name that is not the cluster's goes upstream.
    let r = ask_udp(CLIENT, f.listen, "web.example.", RecordType::AAAA)
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn answers_servfail_when_no_upstream_answers() {
    let f = Fixture::start(false).await;
    let r = ask_udp(CLIENT, f.listen, "outside.example.", RecordType::A)
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // Cluster names still answer.
    let r = ask_udp(CLIENT, f.listen, "web.", RecordType::A).await.unwrap();
    assert_eq!(addrs(&r), ips(&["127.77.1.2"]));
}

#[tokio::test]
async fn a_stopped_task_is_gone_once_the_next_view_says_so() {
    let f = Fixture::start(true).await;
    let mut v = view(&f.node, 6);
    for e in &mut v.endpoints {
        if let EndpointOwner::Task { task_id, serving, .. } = &mut e.owner {
            if task_id == "w2" {
                *serving = false;
            }
        }
    }
    f.publish(&v).await;
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(1), "w2 to leave tasks.web", || async {
        let r = ask_udp(CLIENT, f.listen, "tasks.web.", RecordType::A).await?;
        (addrs(&r) == ips(&["127.77.1.10"]))
            .then_some(())
            .ok_or(format!("{:?}", addrs(&r)))
    })
    .await;
    eprintln!("gone after {:?}", started.elapsed());
    let r = ask_udp(CLIENT, f.listen, "web.2.w2.", RecordType::A).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    *f.current.lock().unwrap() = v.clone();
    // A newer view is taken...
    let mut v7 = v.clone();
    v7.version = 7;
    v7.endpoints.retain(|e| !e.addr.starts_with("127.77.2.11/"));
    f.publish(&v7).await;
    eventually(T, "view 7", || async {
        let r = ask_udp("127.77.2.10", f.listen, "tasks.db.", RecordType::A).await?;
        (addrs(&r) == ips(&["127.77.2.10"]))
            .then_some(())
            .ok_or(format!("{:?}", addrs(&r)))
    })
    .await;
    // ...and an older one published after it (a late message) is not: w2 and
    // d2 stay gone (checked for a second).
    f.publish(&view(&f.node, 5)).await;
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        let r = ask_udp(CLIENT, f.listen, "tasks.web.", RecordType::A).await.unwrap();
        assert_eq!(addrs(&r), ips(&["127.77.1.10"]), "the older view 5 was taken");
        let r = ask_udp("127.77.2.10", f.listen, "tasks.db.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(addrs(&r), ips(&["127.77.2.10"]), "the older view 5 was taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serves_the_hosts_own_addresses_as_the_view_has_them() {
    let f = Fixture::start(true).await;
    let back = f.on("127.77.2.254");
    ask_udp("127.77.2.99", back, "db.", RecordType::A).await.unwrap();
    // back leaves this host's view: its address is no longer served.
    let mut v = view(&f.node, 6);
    v.endpoints.retain(|e| e.addr != "127.77.2.254/24");
    // And a new own address appears on front.
    v.endpoints.push(host("nf", "127.77.1.253", &f.node));
    f.publish(&v).await;
    eventually(T, "127.77.1.253 served", || async {
        ask_udp(CLIENT, f.on("127.77.1.253"), "web.", RecordType::A)
            .await
            .map(|_| ())
    })
    .await;
    eventually(T, "127.77.2.254 no longer served", || async {
        match ask_udp("127.77.2.99", back, "db.", RecordType::A).await {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still answered: {r:?}")),
        }
    })
    .await;
    // A host address that is not on this host at all is bound (IP_FREEBIND).
    let mut v = view(&f.node, 7);
    v.endpoints.push(host("nf", "10.254.254.254", &f.node));
    f.publish(&v).await;
    let want = format!("10.254.254.254:{}", f.port);
    eventually(T, "a UDP socket on 10.254.254.254", || async {
        let out = Command::new("ss").args(["-Hlun"]).output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains(&want).then_some(()).ok_or(text)
    })
    .await;
}

/// End to end with the real publisher: `shoal up` (process executor), an
/// overlay network and a service on it; a shoal-dns of the test's own
/// (`--listen` on loopback, the node's ID, up's NATS) answers from the views
/// the acting dispatcher publishes, and follows a scale-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_the_dispatchers_views_under_shoal_up() {
    use shoal_tests::up::{temp_home, Up, CONVERGE};
    let home = temp_home();
    let data = home.path().join("data");
    let mut up = Up::start(home.path(), "dns-e2e", &data, free_port(), "process", &["--no-init"]);
    up.ready().await;
    up.docker(&["swarm", "init"]).ok();
    let node = up.node_ids().into_iter().next().expect("one node");
    up.docker(&["network", "create", "-d", "overlay", "backend"]).ok();
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "--network",
        "backend",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(bin("shoal-dns"));
    cmd.args(["--nats-url", &up.nats_url(), "--node-id", &node])
        .args(["--listen", &listen.to_string(), "--port", &free_port().to_string()])
        .args(["--upstream", "127.0.0.1:9", "--upstream-timeout-ms", "200"]);
    let _dns = Proc::spawn("shoal-dns", cmd, &home.path().join("dns-e2e.log"));
    let vip = eventually(CONVERGE, "web's VIP from shoal-dns", || async {
        let r = ask_udp("127.0.0.1", listen, "web.", RecordType::A).await?;
        match addrs(&r)[..] {
            [vip] => Ok(vip),
            _ => Err(format!("{r:?}")),
        }
    })
    .await;
    assert_eq!(vip.octets()[..2], [10, 0], "{vip}");
    let tasks = eventually(CONVERGE, "two task addresses", || async {
        let r = ask_udp("127.0.0.1", listen, "tasks.web.", RecordType::A).await?;
        let a = addrs(&r);
        (a.len() == 2 && !a.contains(&vip))
            .then_some(a.clone())
            .ok_or(format!("{a:?}"))
    })
    .await;
    up.docker(&["service", "scale", "-d", "web=1"]).ok();
    eventually(CONVERGE, "one task address after the scale-down", || async {
        let r = ask_udp("127.0.0.1", listen, "tasks.web.", RecordType::A).await?;
        let a = addrs(&r);
        (a.len() == 1 && tasks.contains(&a[0]))
            .then_some(())
            .ok_or(format!("{a:?}"))
    })
    .await;
    up.terminate().await;
}
