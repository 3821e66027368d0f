//! UDP through the mesh: each client address is a flow with a socket of its
//! own connected to one task (round robin at the flow's first datagram);
//! the task's answers go back to the client from the published port. A
//! flow with no datagram either way for `--udp-idle-ms` is forgotten; an
//! ICMP refusal from the task ends the flow so the client's next datagram
//! picks another task. Flows live in their own tasks: a flow survives its
//! task leaving the view (and its port closing) until it goes idle.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::mesh::{bind_retrying, Shared};
use crate::metrics::{bytes, connection, metrics};
use crate::routes::Proto;

struct Flow {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    /// The PROXY v2 header sent before each datagram, when opted in.
    header: Option<Arc<Vec<u8>>>,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

pub async fn listen(addr: SocketAddr, shared: Arc<Shared>) {
    let sock = Arc::new(bind_retrying(addr, Proto::Udp, || UdpSocket::bind(addr)).await);
    let flows: Flows = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "udp receive failed");
                continue;
            }
        };
        let now = epoch.elapsed().as_millis() as u64;
        let existing = flows.lock().unwrap_or_else(|p| p.into_inner()).get(&client).map(|f| {
            f.last.store(now, Ordering::Relaxed);
            (f.upstream.clone(), f.header.clone())
        });
        let (upstream, header) = match existing {
            Some(f) => f,
            None => match open(&sock, client, &shared, &flows, epoch).await {
                Some(f) => f,
                None => continue,
            },
        };
        let sent = match &header {
            Some(h) => {
                let mut d = Vec::with_capacity(h.len() + n);
                d.extend_from_slice(h);
                d.extend_from_slice(&buf[..n]);
                upstream.send(&d).await
            }
            None => upstream.send(&buf[..n]).await,
        };
        match sent {
            Ok(k) => bytes("to_task", k as u64),
            Err(e) => tracing::debug!(%client, error = %e, "udp send to task failed"),
        }
    }
}

/// Opens a flow for `client`: a socket connected to the next task.
async fn open(
    sock: &Arc<UdpSocket>,
    client: SocketAddr,
    shared: &Arc<Shared>,
    flows: &Flows,
    epoch: Instant,
) -> Option<(Arc<UdpSocket>, Option<Arc<Vec<u8>>>)> {
    let (route, order) = shared.pick();
    let Some(backend) = order.first().copied() else {
        connection("udp", "no_backend");
        return None;
    };
    let any: IpAddr = if backend.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let upstream = match UdpSocket::bind((any, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a udp socket toward a task");
            return None;
        }
    };
    if let Err(e) = upstream.connect(backend).await {
        tracing::debug!(%backend, error = %e, "udp connect to task failed");
        connection("udp", "no_backend");
        return None;
    }
    connection("udp", "forwarded");
    let header = if route.proxy_protocol {
        let local = sock.local_addr().unwrap_or(client);
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Datagram,
            (client, local),
        )
        .build()
        .ok()
        .map(Arc::new)
    } else {
        None
    };
    let upstream = Arc::new(upstream);
    let last = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    flows.lock().unwrap_or_else(|p| p.into_inner()).insert(
        client,
        Flow {
            upstream: upstream.clone(),
            last: last.clone(),
            header: header.clone(),
        },
    );
    metrics().active.inc();
    tokio::spawn(answers(
        sock.clone(),
        upstream.clone(),
        client,
        last,
        flows.clone(),
        shared.clone(),
        epoch,
    ));
    Some((upstream, header))
}

/// Carries the task's answers back to the client until the flow is idle.
async fn answers(
    sock: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    flows: Flows,
    shared: Arc<Shared>,
    epoch: Instant,
) {
    let idle = shared.opts.udp_idle;
    let mut buf = vec![0u8; 65_536];
    loop {
        match tokio::time::timeout(idle, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                match sock.send_to(&buf[..n], client).await {
                    Ok(k) => bytes("to_client", k as u64),
                    Err(e) => tracing::debug!(%client, error = %e, "udp send to client failed"),
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "task refused the flow; forgetting it");
                break;
            }
            Err(_) => {
                let since = epoch.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if since >= idle.as_millis() as u64 {
                    break;
                }
            }
        }
    }
    let mut map = flows.lock().unwrap_or_else(|p| p.into_inner());
    if map.get(&client).is_some_and(|f| Arc::ptr_eq(&f.upstream, &upstream)) {
        map.remove(&client);
    }
    metrics().active.dec();
}
