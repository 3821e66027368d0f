//! TCP through the mesh: accept, connect to a serving task (the next in
//! round robin; on failure the one after), optionally send a PROXY protocol
//! v2 header, then copy both ways until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::mesh::{bind_retrying, Shared};
use crate::metrics::{bytes, connection, metrics};
use crate::routes::Proto;

/// Buffer per direction: large enough that 64 KiB responses move in few
/// system calls.
const COPY_BUF: usize = 64 * 1024;

pub async fn listen(addr: SocketAddr, shared: Arc<Shared>) {
    let listener = bind_retrying(addr, Proto::Tcp, || TcpListener::bind(addr)).await;
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(serve(client, peer, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: back off a little.
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(mut client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let (route, order) = shared.pick();
    let mut upstream = None;
    for backend in order {
        let t0 = Instant::now();
        match tokio::time::timeout(shared.opts.connect_timeout, TcpStream::connect(backend)).await {
            Ok(Ok(s)) => {
                metrics().connect_seconds.observe(t0.elapsed().as_secs_f64());
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(service = %route.service_name, %backend, error = %e, "task refused; trying the next");
            }
            Err(_) => {
                tracing::debug!(service = %route.service_name, %backend, "connect timed out; trying the next");
            }
        }
    }
    let Some(mut upstream) = upstream else {
        connection("tcp", "no_backend");
        tracing::debug!(service = %route.service_name, %peer, "no task to forward to; closing");
        return;
    };
    connection("tcp", "forwarded");
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if route.proxy_protocol {
        let local = client.local_addr().unwrap_or(peer);
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (peer, local),
        )
        .build();
        match header {
            Ok(h) => {
                if let Err(e) = upstream.write_all(&h).await {
                    tracing::debug!(error = %e, "PROXY header not sent");
                    return;
                }
                bytes("to_task", h.len() as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a PROXY header");
                return;
            }
        }
    }
    metrics().active.inc();
    let done = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF).await;
    metrics().active.dec();
    match done {
        Ok((to_task, to_client)) => {
            bytes("to_task", to_task);
            bytes("to_client", to_client);
        }
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}
