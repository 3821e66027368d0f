//! Where shoal-dns listens: UDP and TCP on each of this host's own network
//! addresses (port `--port`, 53), re-bound as the view changes, plus the
//! `--listen` addresses. Sockets are bound with `IP_FREEBIND`, so an address
//! can be served before the agent has put it on the host's bridge. One
//! hickory [`Server`] per address: its handler knows the address queries
//! arrive on, and it is shut down alone when the address leaves the view.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};

use crate::server::{Handler, Shared};

/// A TCP client that sends nothing for this long is dropped.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    freebind(&s)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Sets `IP_FREEBIND` (Linux; for IPv6 sockets too): bind to an address the
/// host does not have (yet).
fn freebind(s: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of the given size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_FREEBIND,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A UDP socket bound to `addr` (which need not be on the host yet).
pub fn udp(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    tokio::net::UdpSocket::from_std(socket(addr, Type::DGRAM, Protocol::UDP)?.into())
}

/// A TCP listener on `addr` (which need not be on the host yet).
pub fn tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(1024)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// The servers of every address served.
pub struct Listeners {
    shared: Arc<Shared>,
    servers: HashMap<SocketAddr, Server<Handler>>,
    /// `--listen` addresses: kept whatever the view says.
    fixed: BTreeSet<SocketAddr>,
}

impl Listeners {
    pub fn new(shared: Arc<Shared>) -> Listeners {
        Listeners {
            shared,
            servers: HashMap::new(),
            fixed: BTreeSet::new(),
        }
    }

    /// Serves `addr` for as long as the process runs.
    pub fn serve_fixed(&mut self, addr: SocketAddr) -> io::Result<()> {
        self.fixed.insert(addr);
        self.serve(addr)
    }

    fn serve(&mut self, addr: SocketAddr) -> io::Result<()> {
        if self.servers.contains_key(&addr) {
            return Ok(());
        }
        let udp = udp(addr)?;
        let tcp = tcp(addr)?;
        let mut server = Server::new(Handler {
            shared: self.shared.clone(),
            local: addr.ip(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, 64);
        tracing::info!(%addr, "serving DNS");
        self.servers.insert(addr, server);
        Ok(())
    }

    /// Serves exactly `wanted` (plus the fixed addresses): binds what is
    /// new, shuts down what is gone. A bind that fails is logged and tried
    /// again on the next call.
    pub async fn sync(&mut self, wanted: &BTreeSet<SocketAddr>) {
        let gone: Vec<SocketAddr> = self
            .servers
            .keys()
            .filter(|a| !wanted.contains(a) && !self.fixed.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(mut s) = self.servers.remove(&addr) {
                tracing::info!(%addr, "no longer serving DNS (the address left this host's view)");
                s.shutdown_token().cancel();
                tokio::spawn(async move {
                    let _ = s.block_until_done().await;
                });
            }
        }
        for &addr in wanted {
            if let Err(e) = self.serve(addr) {
                tracing::warn!(%addr, error = %e, "cannot serve DNS on this address yet");
            }
        }
    }

    /// The addresses served now.
    pub fn addrs(&self) -> BTreeSet<SocketAddr> {
        self.servers.keys().copied().collect()
    }
}
