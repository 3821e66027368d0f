//! `shoal load ingress`: starts one `shoal-ingress` of its own on this
//! machine (a node ID of its own, publishing on 127.0.0.1), runs
//! `--backends` small keep-alive HTTP servers as a service's tasks on
//! loopback addresses (127.0.0.2, .3, ...; the scripted view puts them on
//! `ingress`, as tests/tests/ingress.rs does), and drives `--connections`
//! keep-alive HTTP/1.1 clients for `--seconds` twice: straight to the tasks,
//! then through the published port. Every response must be whole
//! (`--size` bytes of body); a broken connection counts as failed and is
//! made again. The summary compares the two (the routing mesh's cost).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_shared::model::{EndpointMode, PortConfig, PortProtocol};
use shoal_shared::netview::{EndpointOwner, EndpointView, NetView, NetworkView, NodeView, ServiceView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::view::{free_tcp_port, ScriptedView, Sibling};
use super::{progress, Ctx, Stats};

/// Reads up to the end of one HTTP head (`\r\n\r\n`), leaving the rest in
/// `buf`; the head's length, or `None` at the end of the stream.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut scanned = 0;
    loop {
        if let Some(end) = buf[scanned..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(scanned + end + 4);
        }
        scanned = buf.len().saturating_sub(3);
        let mut chunk = [0u8; 16_384];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A task: answers every request on a connection with `size` bytes.
async fn backend(listener: TcpListener, size: usize) {
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: text/plain\r\n\r\n").into_bytes();
    response.extend(std::iter::repeat_n(b'x', size));
    let response = Arc::new(response);
    while let Ok((mut s, _)) = listener.accept().await {
        let _ = s.set_nodelay(true);
        let response = response.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(head) = read_head(&mut s, &mut buf).await {
                buf.drain(..head);
                if s.write_all(&response).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads one response whose body must be `size` bytes.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, size: usize) -> Result<(), String> {
    let head = read_head(s, buf).await.ok_or("connection closed")?;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no content-length")?;
    if len != size {
        return Err(format!("a body of {len} bytes, not {size}"));
    }
    let total = head + len;
    while buf.len() < total {
        let mut chunk = vec![0u8; 65_536];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed mid-body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..total);
    Ok(())
}

/// `connections` keep-alive clients for `ctx.seconds`, client `i` against `targets[i % len]`.
async fn drive(ctx: &Ctx, what: &'static str, targets: &[SocketAddr], connections: usize, size: usize) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let ticker = progress(what, stats.clone());
    let until = Instant::now() + ctx.duration();
    let clients: Vec<_> = (0..connections)
        .map(|i| {
            let (stats, addr) = (stats.clone(), targets[i % targets.len()]);
            tokio::spawn(async move {
                let req = b"GET / HTTP/1.1\r\nHost: shoal-load\r\n\r\n";
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => match TcpStream::connect(addr).await {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                buf.clear();
                                conn.insert(s)
                            }
                            Err(_) => {
                                stats.failed();
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    let done = match s.write_all(req).await {
                        Ok(()) => read_response(s, &mut buf, size).await,
                        Err(e) => Err(e.to_string()),
                    };
                    match done {
                        Ok(()) => stats.ok(t.elapsed()),
                        Err(_) => {
                            stats.failed();
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.await;
    }
    ticker.abort();
    stats
}

/// The view: one service publishing `published` -> `target` in ingress mode, its tasks at `tasks`.
fn script(node_id: &str, tasks: &[Ipv4Addr], published: u16, target: u16) -> NetView {
    let net = "load-ingress";
    NetView {
        node_id: node_id.into(),
        version: 1,
        networks: vec![NetworkView {
            id: net.into(),
            name: "ingress".into(),
            subnet: "127.0.0.0/8".into(),
            gateway: "127.0.0.1".into(),
            vni: 4096,
            ingress: true,
            internal: false,
            attachable: false,
            mtu: 1450,
        }],
        endpoints: tasks
            .iter()
            .enumerate()
            .map(|(i, ip)| EndpointView {
                network_id: net.into(),
                addr: format!("{ip}/8"),
                mac: String::new(),
                node_id: node_id.into(),
                owner: EndpointOwner::Task {
                    task_id: format!("load-task-{i}"),
                    service_id: "load-svc".into(),
                    service_name: "load".into(),
                    task_name: format!("load.{}.load-task-{i}", i + 1),
                    slot: Some(i as u64 + 1),
                    aliases: vec![],
                    serving: true,
                },
            })
            .collect(),
        services: vec![ServiceView {
            id: "load-svc".into(),
            name: "load".into(),
            endpoint_mode: EndpointMode::Vip,
            vips: vec![],
            ports: vec![PortConfig {
                name: String::new(),
                protocol: Some(PortProtocol::Tcp),
                target_port: target.into(),
                published_port: published.into(),
                publish_mode: None,
            }],
            proxy_protocol: false,
        }],
        nodes: vec![NodeView {
            id: node_id.into(),
            addr: "127.0.0.1".into(),
            ready: true,
        }],
    }
}

pub async fn run(ctx: &Arc<Ctx>, connections: usize, backends: usize, size: usize) -> Result<String, String> {
    if connections == 0 || backends == 0 || backends > 200 {
        return Err("--connections must be at least 1, --backends from 1 to 200".into());
    }
    let tasks: Vec<Ipv4Addr> = (0..backends).map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8)).collect();
    // One target port free on every task address.
    let target = loop {
        let p = free_tcp_port(IpAddr::V4(tasks[0]))?;
        if tasks.iter().all(|ip| std::net::TcpListener::bind((*ip, p)).is_ok()) {
            break p;
        }
    };
    let mut servers = Vec::new();
    for ip in &tasks {
        let l = TcpListener::bind((*ip, target))
            .await
            .map_err(|e| format!("a task on {ip}:{target}: {e}"))?;
        servers.push(tokio::spawn(backend(l, size)));
    }
    let _servers = AbortOnDrop(servers);
    let node_id = shoal_shared::id::new_id();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let published = free_tcp_port(loopback)?;
    let _script = ScriptedView::serve(ctx, script(&node_id, &tasks, published, target)).await?;
    let mut ingress = Sibling::start(
        ctx,
        "shoal-ingress",
        &node_id,
        &["--publish-addr".into(), "127.0.0.1".into()],
    )?;
    println!(
        "ingress: started shoal-ingress as node {node_id}, publishing {published} -> {backends} task(s) on 127.0.0.2..:{target}, log in {}",
        ingress.dir.display()
    );
    let mesh = SocketAddr::new(loopback, published);
    let ready_by = Instant::now() + Duration::from_secs(20);
    loop {
        ingress.check_alive()?;
        if let Ok(mut s) = TcpStream::connect(mesh).await {
            let mut buf = Vec::new();
            let asked = s.write_all(b"GET / HTTP/1.1\r\nHost: shoal-load\r\n\r\n").await;
            if asked.is_ok() && read_response(&mut s, &mut buf, size).await.is_ok() {
                break;
            }
        }
        if Instant::now() >= ready_by {
            return Err(format!("shoal-ingress did not serve port {published} within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!(
        "ingress: {connections} keep-alive connections, {size}-byte responses, {:.0} s direct then {:.0} s through the mesh",
        ctx.seconds, ctx.seconds
    );
    let direct_targets: Vec<SocketAddr> = tasks
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(*ip), target))
        .collect();
    let direct = drive(ctx, "direct", &direct_targets, connections, size).await;
    let through = drive(ctx, "ingress", &[mesh], connections, size).await;
    ingress.check_alive()?;
    ingress.stop().await;
    let secs = ctx.duration().as_secs_f64();
    let (rps, direct_rps) = (through.count() as f64 / secs, direct.count() as f64 / secs);
    let (p99, direct_p99) = (through.percentile_ms(99.0), direct.percentile_ms(99.0));
    for (name, s, r) in [("direct", &direct, direct_rps), ("ingress", &through, rps)] {
        println!(
            "{name}: {r:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} failed",
            s.percentile_ms(50.0),
            s.percentile_ms(99.0),
            s.failures()
        );
    }
    Ok(format!(
        "load ingress connections={connections} backends={backends} size={size} rps={rps:.0} p50_ms={:.3} p99_ms={p99:.3} direct_rps={direct_rps:.0} direct_p99_ms={direct_p99:.3} ratio_rps={:.2} p99_added_us={:.0} failed={}",
        through.percentile_ms(50.0),
        rps / direct_rps.max(1.0),
        ((p99 - direct_p99) * 1000.0).max(0.0),
        through.failures() + direct.failures(),
    ))
}

/// The task servers stop with the run.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
