//! `shoal load dns`: starts one `shoal-dns` of its own on this machine (a
//! node ID of its own, serving on a loopback port), scripts its network view
//! (one network, `--services` services with a VIP and `--tasks` serving tasks
//! each), and queries it from `--concurrency` clients for `--seconds`:
//! `svcN` (the VIP) and `tasks.svcN` (every task), in turn. Every answer is
//! checked; one with the wrong addresses, an error code or none within a
//! second counts as failed. The clients ask from an address that is no
//! task's on an address that is none of the host's, so every network of the
//! view is in scope, as for a query on `--listen`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_shared::model::EndpointMode;
use shoal_shared::netview::{EndpointOwner, EndpointView, NetView, NetworkView, ServiceView};

use super::view::{free_udp_port, ScriptedView, Sibling};
use super::{progress, Ctx, Stats};

/// One name to ask and the addresses its answer must hold.
struct Expect {
    name: Name,
    addrs: BTreeSet<Ipv4Addr>,
}

/// The `i`th address of the script's network (10.99.0.0/16, .0 and .1 left out).
fn addr(i: usize) -> Ipv4Addr {
    let n = i + 2;
    Ipv4Addr::new(10, 99, (n / 256) as u8, (n % 256) as u8)
}

/// The view of `services` services with `tasks` tasks each, and the queries it answers.
fn script(node_id: &str, services: usize, tasks: usize) -> (NetView, Vec<Expect>) {
    let net = "load-net";
    let mut view = NetView {
        node_id: node_id.into(),
        version: 1,
        networks: vec![NetworkView {
            id: net.into(),
            name: "load".into(),
            subnet: "10.99.0.0/16".into(),
            gateway: "10.99.0.1".into(),
            vni: 4199,
            ingress: false,
            internal: false,
            attachable: false,
            mtu: 1450,
        }],
        endpoints: Vec::new(),
        services: Vec::new(),
        nodes: Vec::new(),
    };
    let mut expect = Vec::new();
    let mut next = 0;
    for s in 0..services {
        let (id, name) = (format!("load-svc-{s}"), format!("svc{s}"));
        let vip = addr(next);
        next += 1;
        view.services.push(ServiceView {
            id: id.clone(),
            name: name.clone(),
            endpoint_mode: EndpointMode::Vip,
            vips: vec![(net.into(), format!("{vip}/16"))],
            ports: vec![],
            proxy_protocol: false,
        });
        let mut task_addrs = BTreeSet::new();
        for t in 0..tasks {
            let a = addr(next);
            next += 1;
            task_addrs.insert(a);
            let task_id = format!("load-task-{s}-{t}");
            view.endpoints.push(EndpointView {
                network_id: net.into(),
                addr: format!("{a}/16"),
                mac: String::new(),
                node_id: "load-other-node".into(),
                owner: EndpointOwner::Task {
                    task_name: format!("{name}.{}.{task_id}", t + 1),
                    task_id,
                    service_id: id.clone(),
                    service_name: name.clone(),
                    slot: Some(t as u64 + 1),
                    aliases: vec![],
                    serving: true,
                },
            });
        }
        let fqdn = |n: &str| Name::from_ascii(format!("{n}.")).expect("a valid name");
        expect.push(Expect {
            name: fqdn(&name),
            addrs: [vip].into(),
        });
        if tasks > 0 {
            expect.push(Expect {
                name: fqdn(&format!("tasks.{name}")),
                addrs: task_addrs,
            });
        }
    }
    (view, expect)
}

/// Asks `name` A over `sock` (connected to the server); the addresses answered.
async fn ask(sock: &tokio::net::UdpSocket, id: u16, name: &Name, buf: &mut [u8]) -> Result<BTreeSet<Ipv4Addr>, String> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), RecordType::A));
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    sock.send(&bytes).await.map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let n = sock.recv(buf).await.map_err(|e| e.to_string())?;
            match Message::from_vec(&buf[..n]) {
                // A late answer to an earlier query that timed out: skip it.
                Ok(r) if r.metadata.id != id => continue,
                Ok(r) => return Ok(r),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no answer within 1 s".to_string())??;
    if answer.metadata.response_code != ResponseCode::NoError {
        return Err(format!("{name}: {}", answer.metadata.response_code));
    }
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

pub async fn run(ctx: &Arc<Ctx>, services: usize, tasks: usize, concurrency: usize) -> Result<String, String> {
    if services == 0 || concurrency == 0 {
        return Err("--services and --concurrency must be at least 1".into());
    }
    if services * (tasks + 1) > 65_000 {
        return Err("--services x (--tasks + 1) must stay under 65,000 (one /16)".into());
    }
    let node_id = shoal_shared::id::new_id();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let server = SocketAddr::new(loopback, free_udp_port(loopback)?);
    let (view, expect) = script(&node_id, services, tasks);
    let _script = ScriptedView::serve(ctx, view).await?;
    let mut dns = Sibling::start(
        ctx,
        "shoal-dns",
        &node_id,
        &[
            "--listen".into(),
            server.to_string(),
            // Nothing outside the cluster is asked; port 9 (discard) answers nothing.
            "--upstream".into(),
            "127.0.0.1:9".into(),
        ],
    )?;
    println!(
        "dns: started shoal-dns as node {node_id} on {server}, log in {}",
        dns.dir.display()
    );
    let expect = Arc::new(expect);

    // Ready: the first name answers as the script says.
    let sock = tokio::net::UdpSocket::bind((loopback, 0))
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    let ready_by = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    loop {
        dns.check_alive()?;
        match ask(&sock, 1, &expect[0].name, &mut buf).await {
            Ok(a) if a == expect[0].addrs => break,
            other if Instant::now() >= ready_by => {
                return Err(format!(
                    "shoal-dns did not answer {} as scripted: {other:?}",
                    expect[0].name
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    println!(
        "dns: {concurrency} clients asking {} names ({services} services, {tasks} tasks each) for {:.0} s",
        expect.len(),
        ctx.seconds
    );
    let stats = Arc::new(Stats::default());
    let ticker = progress("dns", stats.clone());
    let until = Instant::now() + ctx.duration();
    let wrong = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for c in 0..concurrency {
        let (stats, expect, wrong) = (stats.clone(), expect.clone(), wrong.clone());
        workers.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind((loopback, 0))
                .await
                .map_err(|e| e.to_string())?;
            sock.connect(server).await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 65_536];
            let mut i = c * 7919;
            let mut id = 0u16;
            while Instant::now() < until {
                let e = &expect[i % expect.len()];
                i += 1;
                id = id.wrapping_add(1);
                let t = Instant::now();
                match ask(&sock, id, &e.name, &mut buf).await {
                    Ok(a) if a == e.addrs => stats.ok(t.elapsed()),
                    Ok(_) => {
                        wrong.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        stats.failed();
                    }
                    Err(_) => stats.failed(),
                }
            }
            Ok::<(), String>(())
        }));
    }
    let started = Instant::now();
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    ticker.abort();
    let secs = started.elapsed().as_secs_f64();
    dns.check_alive()?;
    dns.stop().await;
    let (n, failed) = (stats.count(), stats.failures());
    let wrong = wrong.load(std::sync::atomic::Ordering::Relaxed);
    println!("dns: {n} answers in {secs:.1} s, {failed} failed ({wrong} with wrong addresses)");
    Ok(format!(
        "load dns services={services} tasks={tasks} concurrency={concurrency} queries={n} qps={:.0} p50_ms={:.2} p99_ms={:.2} failed={failed}",
        n as f64 / secs,
        stats.percentile_ms(50.0),
        stats.percentile_ms(99.0),
    ))
}
