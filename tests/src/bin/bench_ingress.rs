//! Routing mesh benchmark: HTTP/1.1 keep-alive requests from one load
//! generator (this program) to a small HTTP server, once directly and once
//! through a real `shoal-ingress` (its published port, the server as the
//! service's only task), same client, same run, with a 1 KiB and a 64 KiB
//! response. Until the overlay lands the task is on loopback (127.0.0.2);
//! the view is scripted as in tests/tests/ingress.rs. Prints figures;
//! asserts nothing. Run by `ops/bench/ingress`.
//!
//! `BENCH_SECONDS` (default 10) per measurement, `BENCH_CONNECTIONS`
//! (default 32) concurrent connections.
//! Last line: `bench ingress ratio_rps=<mesh/direct> p99_added_us=<n> ratio_rps_64k=<n>`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_shared::envelope::{encode, Reply};
use shoal_shared::model::{EndpointMode, PortConfig, PortProtocol};
use shoal_shared::netview::{EndpointOwner, EndpointView, NetView, NetworkView, NodeView, ServiceView};
use shoal_shared::subjects;
use shoal_tests::{bin, free_port, Nats, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NODE: &str = "bench-node";
const TASK_IP: &str = "127.0.0.2";

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Reads one request head (up to the blank line); false at end of stream.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A keep-alive HTTP/1.1 server answering every request with `size` bytes.
async fn server(listener: TcpListener, size: usize) {
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: text/plain\r\n\r\n").into_bytes();
    response.extend(std::iter::repeat_n(b'x', size));
    let response = Arc::new(response);
    while let Ok((mut s, _)) = listener.accept().await {
        let _ = s.set_nodelay(true);
        let response = response.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while read_head(&mut s, &mut buf).await {
                if s.write_all(&response).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads one response with a Content-Length body.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = vec![0u8; 65_536];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Some(());
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `connections` keep-alive clients against `addr` for `secs`.
async fn load(addr: SocketAddr, connections: u64, secs: u64) -> Figures {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let _ = s.set_nodelay(true);
            let mut buf = Vec::new();
            let req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
            while Instant::now() < until {
                let t0 = Instant::now();
                s.write_all(req).await.expect("write");
                read_response(&mut s, &mut buf).await.expect("response");
                lat.push(t0.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.expect("client"));
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Figures {
        rps: all.len() as f64 / secs as f64,
        p50_us: q(0.50),
        p99_us: q(0.99),
    }
}

fn view(ports: &[(u16, u16)]) -> NetView {
    NetView {
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
        endpoints: vec![EndpointView {
            network_id: "ingress-id".into(),
            addr: format!("{TASK_IP}/8"),
            mac: String::new(),
            node_id: NODE.into(),
            owner: EndpointOwner::Task {
                task_id: "bench-task".into(),
                service_id: "bench".into(),
                service_name: "bench".into(),
                task_name: "bench.1.bench-task".into(),
                slot: Some(1),
                aliases: vec![],
                serving: true,
            },
        }],
        services: vec![ServiceView {
            id: "bench".into(),
            name: "bench".into(),
            endpoint_mode: EndpointMode::Vip,
            vips: vec![],
            ports: ports
                .iter()
                .map(|&(published, target)| PortConfig {
                    name: String::new(),
                    protocol: Some(PortProtocol::Tcp),
                    target_port: target.into(),
                    published_port: published.into(),
                    publish_mode: None,
                })
                .collect(),
            proxy_protocol: false,
        }],
        nodes: vec![NodeView {
            id: NODE.into(),
            addr: "127.0.0.1".into(),
            ready: true,
        }],
    }
}

#[tokio::main]
async fn main() {
    let secs = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let dir = tempfile::tempdir().expect("temp dir");
    let nats_server = Nats::start(dir.path());
    let nats = nats_server.client().await;

    // Two tasks' ports: one answering 1 KiB, one 64 KiB; each published.
    let (t1k, t64k, p1k, p64k) = (free_port(), free_port(), free_port(), free_port());
    for (port, size) in [(t1k, 1024), (t64k, 65_536)] {
        let l = TcpListener::bind((TASK_IP, port)).await.expect("bind task");
        tokio::spawn(server(l, size));
    }
    let the_view = Arc::new(Mutex::new(view(&[(p1k, t1k), (p64k, t64k)])));
    let mut requests = nats.subscribe(subjects::net_requests()).await.expect("subscribe");
    let (answer_nats, answer_view) = (nats.clone(), the_view.clone());
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let v = answer_view.lock().unwrap().clone();
            if let Some(reply) = msg.reply {
                let _ = answer_nats.publish(reply, encode(&Reply::Ok(v))).await;
            }
        }
    });
    nats.flush().await.expect("flush");
    let mut cmd = std::process::Command::new(bin("shoal-ingress"));
    cmd.args(["--node-id", NODE, "--publish-addr", "127.0.0.1"])
        .arg("--nats-url")
        .arg(nats_server.url());
    let _ingress = Proc::spawn("shoal-ingress", cmd, &dir.path().join("ingress.log"));
    let deadline = Instant::now() + Duration::from_secs(15);
    for p in [p1k, p64k] {
        while TcpStream::connect(("127.0.0.1", p)).await.is_err() {
            assert!(Instant::now() < deadline, "the mesh did not publish port {p}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    println!("bench ingress: {connections} keep-alive connections, {secs} s per measurement, task on {TASK_IP}");
    let mut out = Vec::new();
    for (label, task, published) in [("1k", t1k, p1k), ("64k", t64k, p64k)] {
        let direct = load(SocketAddr::new(TASK_IP.parse().unwrap(), task), connections, secs).await;
        let mesh = load(SocketAddr::from(([127, 0, 0, 1], published)), connections, secs).await;
        for (name, f) in [("direct", &direct), ("mesh", &mesh)] {
            println!(
                "  {label:>3} {name:<6} {:>10.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us",
                f.rps, f.p50_us, f.p99_us
            );
        }
        out.push((direct, mesh));
    }
    let ratio = out[0].1.rps / out[0].0.rps.max(1.0);
    let added = (out[0].1.p99_us - out[0].0.p99_us).max(0.0);
    let ratio64 = out[1].1.rps / out[1].0.rps.max(1.0);
    println!("bench ingress ratio_rps={ratio:.2} p99_added_us={added:.0} ratio_rps_64k={ratio64:.2}");
}
