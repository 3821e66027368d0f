//! The hickory-server request handler: cluster names from the [`Index`],
//! everything else through the [`Forwarder`].

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, PTR};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use rand::seq::SliceRandom;

use crate::answer::{Answer, Index, Kind};
use crate::forward::Forwarder;
use crate::metrics::{metrics, Outcome};

/// What every listener shares: the current index and the upstreams.
pub struct Shared {
    index: RwLock<Arc<Index>>,
    forwarder: Forwarder,
}

impl Shared {
    pub fn new(forwarder: Forwarder) -> Shared {
        Shared {
            index: RwLock::new(Arc::new(Index::default())),
            forwarder,
        }
    }

    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_index(&self, index: Index) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
    }
}

/// The handler of one listening address (`local`: the address queries arrive on).
#[derive(Clone)]
pub struct Handler {
    pub shared: Arc<Shared>,
    pub local: IpAddr,
}

fn kind(t: RecordType) -> Kind {
    match t {
        RecordType::A => Kind::A,
        RecordType::AAAA => Kind::Aaaa,
        RecordType::MX => Kind::Mx,
        RecordType::PTR => Kind::Ptr,
        _ => Kind::Other,
    }
}

/// An A record's wire size with a compressed name (pointer 2, type 2, class 2, TTL 4, length 2, address 4).
const A_RECORD_BYTES: usize = 16;

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let start = Instant::now();
        let (outcome, sent) = self.answer(request, &mut response).await;
        let m = metrics();
        m.query(outcome);
        m.answer_seconds.observe(start.elapsed().as_secs_f64());
        match sent {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(src = %request.src(), error = %e, "could not send an answer");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

type Sent = Result<ResponseInfo, hickory_server::net::NetError>;

impl Handler {
    async fn answer<R: ResponseHandler>(&self, request: &Request, response: &mut R) -> (Outcome, Sent) {
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = match request.queries.queries() {
            [q] if request.metadata.op_code == OpCode::Query => q,
            [_] => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::NotImp);
                return (Outcome::Refused, response.send_response(msg).await);
            }
            _ => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return (Outcome::Refused, response.send_response(msg).await);
            }
        };
        let resp_edns = request.edns.as_ref().map(|e| {
            let mut r = Edns::new();
            r.set_max_payload(e.max_payload().max(512));
            r
        });
        let mut builder = builder;
        if let Some(e) = &resp_edns {
            builder.edns(e);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;

        let name = query.name().to_string();
        let name = name.strip_suffix('.').unwrap_or(&name);
        let index = self.shared.index();
        let scope = index.scope(request.src().ip(), self.local);
        let qname: Name = query.name().into();
        match index.resolve(scope, name, kind(query.query_type())) {
            Answer::A { mut addrs, ttl } => {
                addrs.shuffle(&mut rand::thread_rng());
                // Trim to what the client can take over UDP (Docker trims and sets TC).
                if request.protocol() == Protocol::Udp {
                    let max = resp_edns.as_ref().map_or(512, |e| e.max_payload() as usize);
                    let fixed = 12 + qname.len() + 1 + 4 + if resp_edns.is_some() { 11 } else { 0 };
                    let fit = max.saturating_sub(fixed) / A_RECORD_BYTES;
                    if addrs.len() > fit {
                        addrs.truncate(fit);
                        metadata.truncation = true;
                    }
                }
                let records: Vec<Record> = addrs
                    .into_iter()
                    .map(|ip| Record::from_rdata(qname.clone(), ttl, RData::A(A(ip))))
                    .collect();
                let msg = builder.build(metadata, records.iter(), [], [], []);
                (Outcome::Answered, response.send_response(msg).await)
            }
            Answer::Ptr { name, ttl } => {
                let Ok(target) = Name::from_ascii(format!("{name}.")) else {
                    let msg = builder.build_no_records(metadata);
                    return (Outcome::NoData, response.send_response(msg).await);
                };
                let records = [Record::from_rdata(qname, ttl, RData::PTR(PTR(target)))];
                let msg = builder.build(metadata, records.iter(), [], [], []);
                (Outcome::Answered, response.send_response(msg).await)
            }
            Answer::NoData => {
                let msg = builder.build_no_records(metadata);
                (Outcome::NoData, response.send_response(msg).await)
            }
            Answer::Forward => {
                let q = Query::query(qname, query.query_type());
                let tcp = request.protocol() != Protocol::Udp;
                let Some(up) = self
                    .shared
                    .forwarder
                    .ask(q, request.metadata.recursion_desired, tcp)
                    .await
                else {
                    metadata.response_code = ResponseCode::ServFail;
                    let msg = builder.build_no_records(metadata);
                    return (Outcome::UpstreamFailed, response.send_response(msg).await);
                };
                metadata.response_code = up.metadata.response_code;
                metadata.authoritative = up.metadata.authoritative;
                metadata.truncation = up.metadata.truncation;
                metadata.recursion_available = up.metadata.recursion_available;
                metadata.authentic_data = up.metadata.authentic_data;
                let msg = builder.build(
                    metadata,
                    up.answers.iter(),
                    up.authorities.iter(),
                    [],
                    up.additionals.iter(),
                );
                (Outcome::Forwarded, response.send_response(msg).await)
            }
        }
    }
}
