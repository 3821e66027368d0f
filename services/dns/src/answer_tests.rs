use super::*;
use shoal_shared::netview::{EndpointView, NetworkView, ServiceView};

const ME: &str = "node1";

fn net(id: &str, name: &str, third: u8, ingress: bool) -> NetworkView {
    NetworkView {
        id: id.into(),
        name: name.into(),
        subnet: format!("10.0.{third}.0/24"),
        gateway: format!("10.0.{third}.1"),
        vni: 4096 + third as u32,
        ingress,
        internal: false,
        attachable: false,
        mtu: 1450,
    }
}

fn svc(id: &str, name: &str, mode: EndpointMode, vips: &[(&str, &str)]) -> ServiceView {
    ServiceView {
        id: id.into(),
        name: name.into(),
        endpoint_mode: mode,
        vips: vips.iter().map(|(n, a)| (n.to_string(), a.to_string())).collect(),
        ports: vec![],
        proxy_protocol: false,
    }
}

/// A task endpoint: `(network, addr, task, service id, service name, slot, aliases, serving)`.
#[allow(clippy::too_many_arguments)]
fn task(
    net: &str,
    addr: &str,
    task: &str,
    sid: &str,
    sname: &str,
    slot: u64,
    aliases: &[&str],
    serving: bool,
) -> EndpointView {
    EndpointView {
        network_id: net.into(),
        addr: format!("{addr}/24"),
        mac: String::new(),
        node_id: "node2".into(),
        owner: EndpointOwner::Task {
            task_id: task.into(),
            service_id: sid.into(),
            service_name: sname.into(),
            task_name: format!("{sname}.{slot}.{task}"),
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

/// Networks `front` (10.0.1/24), `back` (10.0.2/24) and `ingress` (10.0.0/24).
/// - web: vip (10.0.1.2 on front), tasks w1 (10.0.1.10), w2 (10.0.1.11), w3 not serving (10.0.1.12), alias www;
/// - db: dnsrr on back, tasks d1 (10.0.2.10), d2 (10.0.2.11);
/// - api: vip on ingress (10.0.0.2) and front (10.0.1.3), task a1 on ingress (10.0.0.10) then front (10.0.1.20);
/// - idle: vip on front (10.0.1.4), its only task not serving (10.0.1.30);
/// - client task c1 on front (10.0.1.50) only; task x1 of db also on front and back (10.0.1.60, 10.0.2.60).
///
/// This host: 10.0.1.254 (front), 10.0.2.254 (back); another host 10.0.1.253.
fn view() -> NetView {
    NetView {
        node_id: ME.into(),
        version: 7,
        networks: vec![
            net("ing", "ingress", 0, true),
            net("nf", "front", 1, false),
            net("nb", "Back", 2, false),
        ],
        endpoints: vec![
            task("ing", "10.0.0.10", "a1", "sa", "api", 1, &[], true),
            task("nf", "10.0.1.10", "w1", "sw", "web", 1, &["www"], true),
            task("nf", "10.0.1.11", "w2", "sw", "web", 2, &["www"], true),
            task("nf", "10.0.1.12", "w3", "sw", "web", 3, &["www"], false),
            task("nb", "10.0.2.10", "d1", "sd", "db", 1, &[], true),
            task("nb", "10.0.2.11", "d2", "sd", "db", 2, &[], true),
            task("nf", "10.0.1.20", "a1", "sa", "api", 1, &[], true),
            task("nf", "10.0.1.30", "i1", "si", "idle", 1, &[], false),
            task("nf", "10.0.1.50", "c1", "sc", "client", 1, &[], true),
            task("nf", "10.0.1.60", "x1", "sx", "both", 1, &[], true),
            task("nb", "10.0.2.60", "x1", "sx", "both", 1, &[], true),
            host("nf", "10.0.1.254", ME),
            host("nb", "10.0.2.254", ME),
            host("nf", "10.0.1.253", "node2"),
        ],
        services: vec![
            svc("sw", "web", EndpointMode::Vip, &[("nf", "10.0.1.2/24")]),
            svc("sd", "db", EndpointMode::Dnsrr, &[]),
            svc(
                "sa",
                "api",
                EndpointMode::Vip,
                &[("ing", "10.0.0.2/24"), ("nf", "10.0.1.3/24")],
            ),
            svc("si", "idle", EndpointMode::Vip, &[("nf", "10.0.1.4/24")]),
            svc("sc", "client", EndpointMode::Vip, &[]),
            svc("sx", "both", EndpointMode::Dnsrr, &[]),
        ],
        nodes: vec![],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What a query from `src` asked on `local` gets.
fn ask(index: &Index, src: &str, local: &str, name: &str, kind: Kind) -> Answer {
    index.resolve(index.scope(ip(src), ip(local)), name, kind)
}

fn a(addrs: &[&str], ttl: u32) -> Answer {
    Answer::A {
        addrs: addrs.iter().map(|s| s.parse().unwrap()).collect(),
        ttl,
    }
}

const FROM_CLIENT: &str = "10.0.1.50";
const ON_FRONT: &str = "10.0.1.254";

#[test]
fn a_vip_service_answers_its_vip() {
    let i = Index::build(&view());
    assert_eq!(i.version, 7);
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "web", Kind::A),
        a(&["10.0.1.2"], VIP_TTL)
    );
}

#[test]
fn a_dnsrr_service_answers_every_serving_task() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, "10.0.2.60", "10.0.2.254", "db", Kind::A),
        a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
    );
}

#[test]
fn tasks_dot_service_answers_every_serving_task_not_the_vip() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "tasks.web", Kind::A),
        a(&["10.0.1.10", "10.0.1.11"], TASK_TTL)
    );
    assert_eq!(
        ask(&i, "10.0.2.60", "10.0.2.254", "tasks.db", Kind::A),
        a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
    );
}

#[test]
fn a_task_name_answers_that_task() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "web.2.w2", Kind::A),
        a(&["10.0.1.11"], TASK_TTL)
    );
    // Not serving: not a name any more (asked upstream).
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web.3.w3", Kind::A), Answer::Forward);
    // `<service>.<slot>` alone is no name in Docker either.
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web.2", Kind::A), Answer::Forward);
}

#[test]
fn network_aliases_answer_as_the_service() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "www", Kind::A),
        a(&["10.0.1.2"], VIP_TTL)
    );
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "tasks.www", Kind::A),
        a(&["10.0.1.10", "10.0.1.11"], TASK_TTL)
    );
}

#[test]
fn a_known_name_has_no_ipv6_or_mx_and_other_types_go_upstream() {
    let i = Index::build(&view());
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web", Kind::Aaaa), Answer::NoData);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "tasks.web", Kind::Aaaa), Answer::NoData);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web", Kind::Mx), Answer::NoData);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web", Kind::Other), Answer::Forward);
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "example.com", Kind::Aaaa),
        Answer::Forward
    );
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "example.com", Kind::A), Answer::Forward);
}

#[test]
fn names_are_scoped_to_the_askers_networks() {
    let i = Index::build(&view());
    // The client is on front only: db (back) is not its name.
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "db", Kind::A), Answer::Forward);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "tasks.db", Kind::A), Answer::Forward);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "db", Kind::Aaaa), Answer::Forward);
    // Asked on back's address, the client still is the client.
    assert_eq!(ask(&i, FROM_CLIENT, "10.0.2.254", "db", Kind::A), Answer::Forward);
    // x1 is on both: from either of its addresses it sees both networks.
    for src in ["10.0.1.60", "10.0.2.60"] {
        assert_eq!(ask(&i, src, ON_FRONT, "web", Kind::A), a(&["10.0.1.2"], VIP_TTL));
        assert_eq!(
            ask(&i, src, ON_FRONT, "db", Kind::A),
            a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
        );
    }
}

#[test]
fn an_unknown_source_sees_the_network_it_asked_on() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, "10.0.2.99", "10.0.2.254", "db", Kind::A),
        a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
    );
    assert_eq!(ask(&i, "10.0.2.99", "10.0.2.254", "web", Kind::A), Answer::Forward);
    assert_eq!(
        ask(&i, "10.0.1.99", ON_FRONT, "web", Kind::A),
        a(&["10.0.1.2"], VIP_TTL)
    );
    assert_eq!(ask(&i, "10.0.1.99", ON_FRONT, "db", Kind::A), Answer::Forward);
    // Another host's address on front is not this host's: not a local.
    assert_eq!(i.own_addrs().count(), 2);
    // On an address that is none of the view's (--listen): every network.
    assert_eq!(
        ask(&i, "127.0.0.1", "127.0.0.1", "web", Kind::A),
        a(&["10.0.1.2"], VIP_TTL)
    );
    assert_eq!(
        ask(&i, "127.0.0.1", "127.0.0.1", "db", Kind::A),
        a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
    );
}

#[test]
fn a_name_with_a_network_suffix_is_looked_up_on_that_network() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "web.front", Kind::A),
        a(&["10.0.1.2"], VIP_TTL)
    );
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "tasks.web.front", Kind::A),
        a(&["10.0.1.10", "10.0.1.11"], TASK_TTL)
    );
    // Network names compare without case; not a network of the asker: upstream.
    assert_eq!(
        ask(&i, "10.0.2.60", ON_FRONT, "db.back", Kind::A),
        a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
    );
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "db.back", Kind::A), Answer::Forward);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web.back", Kind::A), Answer::Forward);
}

#[test]
fn a_stopped_task_is_gone_from_the_next_views_answers() {
    let mut v = view();
    let i = Index::build(&v);
    assert_eq!(
        ask(&i, "10.0.2.60", "10.0.2.254", "db", Kind::A),
        a(&["10.0.2.10", "10.0.2.11"], TASK_TTL)
    );
    for e in &mut v.endpoints {
        if let EndpointOwner::Task { task_id, serving, .. } = &mut e.owner {
            if task_id == "d2" {
                *serving = false;
            }
        }
    }
    v.version = 8;
    let i = Index::build(&v);
    assert_eq!(i.version, 8);
    assert_eq!(
        ask(&i, "10.0.2.60", "10.0.2.254", "db", Kind::A),
        a(&["10.0.2.10"], TASK_TTL)
    );
    assert_eq!(
        ask(&i, "10.0.2.60", "10.0.2.254", "tasks.db", Kind::A),
        a(&["10.0.2.10"], TASK_TTL)
    );
    assert_eq!(ask(&i, "10.0.2.60", "10.0.2.254", "db.2.d2", Kind::A), Answer::Forward);
    // Its endpoint gone from the view altogether: the same.
    v.endpoints.retain(|e| !e.addr.starts_with("10.0.2.11/"));
    let i = Index::build(&v);
    assert_eq!(
        ask(&i, "10.0.2.60", "10.0.2.254", "db", Kind::A),
        a(&["10.0.2.10"], TASK_TTL)
    );
}

#[test]
fn a_vip_service_without_a_serving_task_is_no_name() {
    let i = Index::build(&view());
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "idle", Kind::A), Answer::Forward);
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "tasks.idle", Kind::A), Answer::Forward);
}

#[test]
fn ingress_comes_last() {
    let i = Index::build(&view());
    // a1 is on ingress (listed first) and front: its own service's name is front's VIP.
    assert_eq!(
        ask(&i, "10.0.0.10", ON_FRONT, "api", Kind::A),
        a(&["10.0.1.3"], VIP_TTL)
    );
    assert_eq!(
        ask(&i, "10.0.0.10", ON_FRONT, "api.ingress", Kind::A),
        a(&["10.0.0.2"], VIP_TTL)
    );
    assert_eq!(
        ask(&i, "127.0.0.1", "127.0.0.1", "api", Kind::A),
        a(&["10.0.1.3"], VIP_TTL)
    );
}

#[test]
fn a_task_address_has_a_reverse_name() {
    let i = Index::build(&view());
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "11.1.0.10.in-addr.arpa", Kind::Ptr),
        Answer::Ptr {
            name: "web.2.w2.front".into(),
            ttl: TASK_TTL
        }
    );
    // Out of scope, unknown, or not an address: upstream.
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "10.2.0.10.in-addr.arpa", Kind::Ptr),
        Answer::Forward
    );
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "99.1.0.10.in-addr.arpa", Kind::Ptr),
        Answer::Forward
    );
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "1.0.10.in-addr.arpa", Kind::Ptr),
        Answer::Forward
    );
}

#[test]
fn names_compare_without_case() {
    let mut v = view();
    for e in &mut v.endpoints {
        if let EndpointOwner::Task { service_name, .. } = &mut e.owner {
            if service_name == "web" {
                *service_name = "Web".into();
            }
        }
    }
    let i = Index::build(&v);
    assert_eq!(
        ask(&i, FROM_CLIENT, ON_FRONT, "web", Kind::A),
        a(&["10.0.1.2"], VIP_TTL)
    );
}

#[test]
fn an_empty_view_answers_nothing() {
    let i = Index::default();
    assert_eq!(ask(&i, FROM_CLIENT, ON_FRONT, "web", Kind::A), Answer::Forward);
    assert_eq!(i.own_addrs().count(), 0);
}
