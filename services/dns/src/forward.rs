//! Names that are not the cluster's go to the host's upstream resolvers, as
//! Docker's embedded server forwards them: over the protocol the client used,
//! to each upstream in turn; SERVFAIL, REFUSED, another error code, a
//! non-authoritative NXDOMAIN or no answer in time moves on to the next; the
//! first other response (or the last one got) is relayed. Built on
//! hickory-net's UDP and TCP client streams.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::net::xfer::{DnsExchange, DnsHandle, FirstAnswer};
use hickory_server::proto::op::{DnsRequest, DnsRequestOptions, Message, Query, ResponseCode};

pub struct Forwarder {
    upstreams: Vec<Upstream>,
    timeout: Duration,
}

struct Upstream {
    addr: SocketAddr,
    udp: DnsExchange<TokioRuntimeProvider>,
}

impl Forwarder {
    /// Must be called inside a tokio runtime (each UDP exchange runs a task).
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        let upstreams = upstreams
            .into_iter()
            .map(|addr| Upstream {
                addr,
                udp: UdpClientStream::builder(addr, TokioRuntimeProvider::new())
                    .with_timeout(Some(timeout))
                    .with_max_retries(0)
                    .exchange(),
            })
            .collect();
        Forwarder { upstreams, timeout }
    }

    pub fn upstreams(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.upstreams.iter().map(|u| u.addr)
    }

    /// Asks the upstreams `query`; `None` when none answered.
    pub async fn ask(&self, query: Query, recursion_desired: bool, tcp: bool) -> Option<Message> {
        let mut last = None;
        for up in &self.upstreams {
            let mut msg = Message::query();
            msg.queries.push(query.clone());
            msg.metadata.recursion_desired = recursion_desired;
            let mut options = DnsRequestOptions::default();
            options.recursion_desired = recursion_desired;
            let request = DnsRequest::new(msg, options);
            let got = if tcp {
                match TcpClientStream::exchange(up.addr, None, self.timeout, Some(1), TokioRuntimeProvider::new()).await
                {
                    Ok(x) => x.send(request).first_answer().await,
                    Err(e) => Err(e),
                }
            } else {
                up.udp.send(request).first_answer().await
            };
            let resp = match got {
                Ok(r) => r.into_message(),
                Err(e) => {
                    tracing::debug!(upstream = %up.addr, name = %query.name(), error = %e, "upstream did not answer");
                    continue;
                }
            };
            let code = resp.metadata.response_code;
            let done = code == ResponseCode::NoError || (code == ResponseCode::NXDomain && resp.metadata.authoritative);
            last = Some(resp);
            if done {
                break;
            }
        }
        last
    }
}
