//! The routing mesh (issue 11 §3) as a real `shoal-ingress` process, fed by
//! a scripted network view: the test answers `shoal.net.req` and publishes
//! on `shoal.net.node.<id>` as the acting dispatcher does, with task
//! endpoints on loopback addresses (127.0.0.x) where it runs its own
//! backends (until the overlay lands, the host reaches tasks this way).
//!
//! Everything started (nats-server, shoal-ingress, backends, the view
//! answerer) stops when its guard drops, also when a test fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_shared::envelope::{encode, Reply};
use shoal_shared::model::{EndpointMode, PortConfig, PortProtocol};
use shoal_shared::netview::{EndpointOwner, EndpointView, NetView, NetworkView, NodeView, ServiceView};
use shoal_shared::subjects;
use shoal_tests::{bin, eventually, free_port, Nats, Proc};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

const NODE: &str = "node1";
const WAIT: Duration = Duration::from_secs(10);

/// Aborts a spawned task when dropped.
struct Aborting(JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// nats-server, a scripted view and one shoal-ingress publishing on 127.0.0.1.
struct Mesh {
    dir: tempfile::TempDir,
    nats: async_nats::Client,
    view: Arc<Mutex<NetView>>,
    metrics_port: u16,
    _answerer: Aborting,
    _ingress: Proc,
    _nats_server: Nats,
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats_server = Nats::start(dir.path());
        let nats = nats_server.client().await;
        let view = Arc::new(Mutex::new(NetView {
            node_id: NODE.into(),
            version: 1,
            networks: vec![NetworkView {
                id: "ingress-id".into(),
                name: "ingress".into(),
                subnet: "127.0.0.0/8".into(),
                gateway: "127.0.0.1".into(),
                vni: 4096,
                ingress: true,
                internal: false,
                attachable: false,
                mtu: 1450,
            }],
            endpoints: vec![],
            services: vec![],
            nodes: vec![NodeView {
                id: NODE.into(),
                addr: "127.0.0.1".into(),
                ready: true,
            }],
        }));
        let mut requests = nats.subscribe(subjects::net_requests()).await.expect("subscribe");
        let (answer_nats, answer_view) = (nats.clone(), view.clone());
        let answerer = Aborting(tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let v = answer_view.lock().unwrap().clone();
                if let Some(reply) = msg.reply {
                    let _ = answer_nats.publish(reply, encode(&Reply::Ok(v))).await;
                }
            }
        }));
        nats.flush().await.expect("flush");
        let metrics_port = free_port();
        let mut cmd = std::process::Command::new(bin("shoal-ingress"));
        cmd.args([
            "--node-id",
            NODE,
            "--publish-addr",
            "127.0.0.1",
            "--udp-idle-ms",
            "3000",
        ])
        .arg("--nats-url")
        .arg(nats_server.url())
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "shoal_ingress=debug,info");
        let ingress = Proc::spawn("shoal-ingress", cmd, &dir.path().join("ingress.log"));
        Mesh {
            dir,
            nats,
            view,
            metrics_port,
            _answerer: answerer,
            _ingress: ingress,
            _nats_server: nats_server,
        }
    }

    /// Changes the view and publishes it, as the dispatcher does on a change.
    async fn set(&self, change: impl FnOnce(&mut NetView)) {
        let v = {
            let mut v = self.view.lock().unwrap();
            change(&mut v);
            v.version += 1;
            v.clone()
        };
        self.nats
            .publish(subjects::net_view(NODE), encode(&v))
            .await
            .expect("publish");
        self.nats.flush().await.expect("flush");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ingress.log")).unwrap_or_default()
    }

    /// The sum of a metric's samples whose line contains every `needle`.
    async fn metric(&self, name: &str, needles: &[&str]) -> f64 {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .output()
            .await
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- shoal-ingress log ---\n{}", self.log());
        }
    }
}

fn service(id: &str, ports: &[(u16, u16, PortProtocol)], proxy_protocol: bool) -> ServiceView {
    ServiceView {
        id: id.into(),
        name: id.into(),
        endpoint_mode: EndpointMode::Vip,
        vips: vec![],
        ports: ports
            .iter()
            .map(|&(published, target, protocol)| PortConfig {
                name: String::new(),
                protocol: Some(protocol),
                target_port: target.into(),
                published_port: published.into(),
                publish_mode: None,
            })
            .collect(),
        proxy_protocol,
    }
}

/// A task of `service` at `ip` on the ingress network.
fn task(service: &str, ip: &str, serving: bool) -> EndpointView {
    EndpointView {
        network_id: "ingress-id".into(),
        addr: format!("{ip}/8"),
        mac: String::new(),
        node_id: NODE.into(),
        owner: EndpointOwner::Task {
            task_id: format!("task-{ip}"),
            service_id: service.into(),
            service_name: service.into(),
            task_name: format!("{service}.1.task-{ip}"),
            slot: Some(1),
            aliases: vec![],
            serving,
        },
    }
}

/// What each connection to a backend sent it, in accept order.
type Conns = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A TCP task: greets each connection with its name and a newline, then
/// echoes; records every byte each connection sent it.
struct Backend {
    conns: Conns,
    _task: Aborting,
}

impl Backend {
    async fn start(name: &str, ip: &str, port: u16) -> Backend {
        let listener = TcpListener::bind((ip, port))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
        let conns: Conns = Arc::default();
        let (name, all) = (name.to_string(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let record = Arc::new(Mutex::new(Vec::new()));
                all.lock().unwrap().push(record.clone());
                let greeting = format!("{name}\n");
                tokio::spawn(async move {
                    if s.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Backend {
            conns,
            _task: Aborting(task),
        }
    }

    fn accepted(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    fn received(&self, i: usize) -> Vec<u8> {
        self.conns.lock().unwrap()[i].lock().unwrap().clone()
    }
}

/// Connects to the published port and reads the task's greeting.
async fn hello(port: u16) -> Result<(String, BufReader<TcpStream>), String> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(3), r.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => Ok((line.trim().to_string(), r)),
        Ok(Ok(_)) => Err("closed without a greeting".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no greeting within 3 s".into()),
    }
}

async fn name_of(port: u16) -> Result<String, String> {
    hello(port).await.map(|(n, _)| n)
}

/// Sends a line on a forwarded connection and reads the echo.
async fn echo(conn: &mut BufReader<TcpStream>, line: &str) -> String {
    conn.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut back = String::new();
    tokio::time::timeout(Duration::from_secs(3), conn.read_line(&mut back))
        .await
        .expect("echo within 3 s")
        .expect("read echo");
    back.trim().to_string()
}

#[tokio::test]
async fn a_connection_to_the_published_port_reaches_a_task() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let _b = Backend::start("b2", "127.0.0.2", target).await;
    mesh.set(|v| {
        v.services
            .push(service("web", &[(published, target, PortProtocol::Tcp)], false));
        v.endpoints.push(task("web", "127.0.0.2", true));
    })
    .await;
    let name = eventually(WAIT, "the published port to reach the task", || name_of(published)).await;
    assert_eq!(name, "b2");
    let (_, mut conn) = hello(published).await.expect("second connection");
    assert_eq!(echo(&mut conn, "ping").await, "ping");
}

#[tokio::test]
async fn connections_spread_over_serving_tasks_only() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let backends = [
        Backend::start("b2", "127.0.0.2", target).await,
        Backend::start("b3", "127.0.0.3", target).await,
        Backend::start("b4", "127.0.0.4", target).await,
    ];
    let not_serving = Backend::start("b5", "127.0.0.5", target).await;
    mesh.set(|v| {
        v.services
            .push(service("web", &[(published, target, PortProtocol::Tcp)], false));
        for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
            v.endpoints.push(task("web", ip, true));
        }
        v.endpoints.push(task("web", "127.0.0.5", false));
    })
    .await;
    eventually(WAIT, "the published port to answer", || name_of(published)).await;
    for _ in 0..12 {
        name_of(published).await.expect("a forwarded connection");
    }
    let counts: Vec<usize> = backends.iter().map(Backend::accepted).collect();
    assert!(
        counts.iter().all(|&c| c >= 3),
        "round robin over three tasks: {counts:?}"
    );
    assert_eq!(not_serving.accepted(), 0, "a task that does not serve got connections");
    let forwarded = mesh
        .metric(
            "shoal_ingress_connections_total",
            &["protocol=\"tcp\"", "outcome=\"forwarded\""],
        )
        .await;
    assert!(
        forwarded >= 13.0,
        "shoal_ingress_connections_total forwarded = {forwarded}"
    );
}

#[tokio::test]
async fn a_task_leaving_the_view_drains_while_new_connections_go_elsewhere() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let _b2 = Backend::start("b2", "127.0.0.2", target).await;
    let _b3 = Backend::start("b3", "127.0.0.3", target).await;
    mesh.set(|v| {
        v.services
            .push(service("web", &[(published, target, PortProtocol::Tcp)], false));
        v.endpoints.push(task("web", "127.0.0.2", true));
        v.endpoints.push(task("web", "127.0.0.3", true));
    })
    .await;
    let mut on_b2 = eventually(WAIT, "a connection to land on b2", || async {
        match hello(published).await? {
            (n, conn) if n == "b2" => Ok(conn),
            (n, _) => Err(format!("landed on {n}")),
        }
    })
    .await;
    mesh.set(|v| v.endpoints.retain(|e| e.ip() != Some([127, 0, 0, 2].into())))
        .await;
    eventually(WAIT, "new connections to avoid the removed task", || async {
        for _ in 0..4 {
            let n = name_of(published).await?;
            if n != "b3" {
                return Err(format!("a new connection landed on {n}"));
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(
        echo(&mut on_b2, "still here").await,
        "still here",
        "the open connection was cut"
    );
}

#[tokio::test]
async fn a_refusing_task_is_skipped() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let b2 = Backend::start("b2", "127.0.0.2", target).await;
    // 127.0.0.9 serves in the view, but nothing listens there: connects are refused.
    mesh.set(|v| {
        v.services
            .push(service("web", &[(published, target, PortProtocol::Tcp)], false));
        v.endpoints.push(task("web", "127.0.0.9", true));
        v.endpoints.push(task("web", "127.0.0.2", true));
    })
    .await;
    eventually(WAIT, "the published port to answer", || name_of(published)).await;
    for i in 0..6 {
        let n = name_of(published)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(n, "b2");
    }
    assert_eq!(b2.accepted(), 7);
}

#[tokio::test]
async fn udp_datagrams_reach_a_task_and_its_answers_come_back() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let mut tasks = Vec::new();
    for (name, ip) in [("u2", "127.0.0.2"), ("u3", "127.0.0.3")] {
        let sock = UdpSocket::bind((ip, target)).await.expect("bind udp task");
        tasks.push(Aborting(tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let answer = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                let _ = sock.send_to(answer.as_bytes(), from).await;
            }
        })));
    }
    mesh.set(|v| {
        v.services
            .push(service("dns", &[(published, target, PortProtocol::Udp)], false));
        v.endpoints.push(task("dns", "127.0.0.2", true));
        v.endpoints.push(task("dns", "127.0.0.3", true));
    })
    .await;
    async fn ask(sock: &UdpSocket, q: &str) -> Result<String, String> {
        sock.send(q.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2048];
        match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".into()),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client.connect(("127.0.0.1", published)).await.expect("connect");
        let first = eventually(WAIT, "a UDP answer through the mesh", || ask(&client, "q1")).await;
        let (task_name, rest) = first.split_once(':').expect("name:payload");
        assert_eq!(rest, "q1");
        // One client address is one flow: it stays on its task.
        for q in ["q2", "q3"] {
            assert_eq!(ask(&client, q).await.expect("answer"), format!("{task_name}:{q}"));
        }
        seen.insert(task_name.to_string());
    }
    assert_eq!(seen.len(), 2, "two clients' flows went to the same task: {seen:?}");
    let flows = mesh
        .metric(
            "shoal_ingress_connections_total",
            &["protocol=\"udp\"", "outcome=\"forwarded\""],
        )
        .await;
    assert_eq!(flows, 2.0);
}

#[tokio::test]
async fn proxy_protocol_v2_carries_the_client_address_only_when_opted_in() {
    let mesh = Mesh::start().await;
    let (with_pp, without_pp, target) = (free_port(), free_port(), free_port());
    let b = Backend::start("b2", "127.0.0.2", target).await;
    mesh.set(|v| {
        v.services
            .push(service("pp", &[(with_pp, target, PortProtocol::Tcp)], true));
        v.services
            .push(service("plain", &[(without_pp, target, PortProtocol::Tcp)], false));
        v.endpoints.push(task("pp", "127.0.0.2", true));
        v.endpoints.push(task("plain", "127.0.0.2", true));
    })
    .await;
    for (port, opted_in) in [(with_pp, true), (without_pp, false)] {
        let (_, mut conn) = eventually(WAIT, "the published port to answer", || hello(port)).await;
        let client_addr = conn.get_ref().local_addr().expect("local addr");
        let at = b.accepted() - 1;
        conn.get_mut().write_all(b"hello\n").await.expect("write");
        let all = eventually(WAIT, "the task to receive the client's bytes", || async {
            let got = b.received(at);
            if got.ends_with(b"hello\n") {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        })
        .await;
        if opted_in {
            let header = ppp::v2::Header::try_from(all.as_slice()).expect("a PROXY v2 header first");
            assert_eq!(header.command, ppp::v2::Command::Proxy);
            let want: ppp::v2::Addresses = (client_addr, SocketAddr::from(([127, 0, 0, 1], port))).into();
            assert_eq!(header.addresses, want);
            assert_eq!(&all[header.len()..], b"hello\n");
        } else {
            assert_eq!(all, b"hello\n", "bytes before the client's own");
        }
    }
}

#[tokio::test]
async fn the_port_closes_when_the_service_leaves_the_view_and_open_connections_finish() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let _b = Backend::start("b2", "127.0.0.2", target).await;
    mesh.set(|v| {
        v.services
            .push(service("web", &[(published, target, PortProtocol::Tcp)], false));
        v.endpoints.push(task("web", "127.0.0.2", true));
    })
    .await;
    let (_, mut open) = eventually(WAIT, "the published port to answer", || hello(published)).await;
    mesh.set(|v| {
        v.services.clear();
        v.endpoints.clear();
    })
    .await;
    eventually(WAIT, "the published port to close", || async {
        match TcpStream::connect(("127.0.0.1", published)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(echo(&mut open, "after").await, "after", "the open connection was cut");
}

#[tokio::test]
async fn a_port_held_by_another_process_is_retried_not_fatal() {
    let mesh = Mesh::start().await;
    let (published, target) = (free_port(), free_port());
    let holder = std::net::TcpListener::bind(("127.0.0.1", published)).expect("hold the port");
    let _b = Backend::start("b2", "127.0.0.2", target).await;
    mesh.set(|v| {
        v.services
            .push(service("web", &[(published, target, PortProtocol::Tcp)], false));
        v.endpoints.push(task("web", "127.0.0.2", true));
    })
    .await;
    eventually(WAIT, "the mesh to log the held port", || async {
        if mesh.log().contains("cannot listen on a published port") {
            Ok(())
        } else {
            Err("not logged yet".to_string())
        }
    })
    .await;
    drop(holder);
    let name = eventually(WAIT, "the port to be bound once free", || name_of(published)).await;
    assert_eq!(name, "b2");
}
