//! The host side of overlay networks (issue 11 §1) on one host: `shoal up`
//! with the docker executor and `SHOAL_OVERLAY=true`, two overlay networks,
//! tasks attached through their network sandboxes, the node's network view
//! published by the real dispatcher.
//!
//! The host's own links are made in this machine's network namespace (the
//! bridges in the agent's overlay namespace); a guard removes them and the
//! namespace, also on failure.

use std::time::Duration;

use shoal_shared::netview::NetView;
use shoal_shared::{envelope, subjects};
use shoal_tests::free_port;
use shoal_tests::up::{engine, temp_home, until, Up};

/// `ip -o link` of this machine's namespace.
fn links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Deletes the devices named with any of these fragments, and unmounts
/// the agent's overlay namespace, when dropped (declared before the `Up`,
/// so after its agent is gone).
struct Devices(std::sync::Mutex<Vec<String>>, std::path::PathBuf);
impl Drop for Devices {
    fn drop(&mut self) {
        let fragments = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if mounted(&self.1) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.1).output();
        }
        for line in links().lines() {
            let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else {
                continue;
            };
            if fragments.iter().any(|f| name.contains(f.as_str())) {
                let _ = std::process::Command::new("ip").args(["link", "del", name]).output();
            }
        }
    }
}

/// `shoal up` with the docker executor and overlay networks on, in a swarm;
/// its devices and the agent's overlay namespace are removed when dropped
/// (fields drop in order: `shoal up` first, then the devices, then its home).
struct OverlayHost {
    up: Up,
    devices: Devices,
    ovl_ns: std::path::PathBuf,
    _home: tempfile::TempDir,
}

impl OverlayHost {
    /// `None` unless this test runs as root (it makes links and namespaces).
    async fn start(name: &str) -> Option<OverlayHost> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        if !root {
            return None;
        }
        let home = temp_home();
        let data = home.path().join("data");
        let ovl_ns = data.join("agent").join("netns").join("overlay");
        let devices = Devices(Default::default(), ovl_ns.clone());
        let mut up = Up::start_with_env(
            home.path(),
            name,
            &data,
            free_port(),
            "docker",
            &["--no-init"],
            &[("SHOAL_OVERLAY", "true")],
        );
        up.ready().await;
        up.docker(&["swarm", "init"]).ok();
        let host = OverlayHost {
            up,
            devices,
            ovl_ns,
            _home: home,
        };
        let ingress = host.up.docker(&["network", "inspect", "-f", "{{.Id}}", "ingress"]).ok();
        host.watch([ingress.stdout.trim()[..10].to_lowercase()]);
        Some(host)
    }

    /// Removes the devices named with these fragments (network ID prefixes) at the end.
    fn watch<const N: usize>(&self, fragments: [String; N]) {
        self.devices
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(fragments);
    }
}

/// Whether something is mounted at `path`.
fn mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

/// `GET /` of `ip:80` from inside a container, with busybox `nc` (its
/// static `wget` crashes on this machine): the body's last line.
fn http_get(container: &str, ip: &str) -> Result<String, String> {
    http_get_path(container, ip, "/")
}

/// `GET <path>` of `ip:80` from inside a container: the body's last line.
fn http_get_path(container: &str, ip: &str, path: &str) -> Result<String, String> {
    let r = engine(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 80"),
    ]);
    match r.code {
        0 => Ok(r.stdout.lines().last().unwrap_or_default().trim().to_string()),
        c => Err(format!("exit {c}: {}{}", r.stdout, r.stderr)),
    }
}

/// The running task containers of a service: (container name, task address).
fn web_containers(service: &str) -> Result<Vec<(String, String)>, String> {
    let r = engine(&[
        "ps",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut out = Vec::new();
    for name in r.lines() {
        let a = engine(&["exec", name, "ip", "-o", "-4", "addr", "show", "eth0"]);
        let ip = a
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .ok_or_else(|| format!("{name} has no eth0 yet: {}{}", a.stdout, a.stderr))?;
        out.push((name.trim().to_string(), ip.split('/').next().unwrap().to_string()));
    }
    out.sort();
    Ok(out)
}

/// This host's own address on a network, from the dispatcher's view.
async fn host_address(nats_url: &str, node: &str, network: &str) -> String {
    let nats = async_nats::connect(nats_url).await.expect("NATS");
    let req = shoal_shared::netview::NetViewRequest { node_id: node.into() };
    let view: NetView = envelope::request(&nats, subjects::net_requests(), &req, Duration::from_secs(5))
        .await
        .expect("the node's view");
    let own = view
        .own_endpoint(network)
        .expect("the host's own address on the network");
    own.ip().expect("an address").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_one_host_reach_each_other_over_the_bridge_and_leave_nothing_behind() {
    let Some(host) = OverlayHost::start("overlay").await else {
        eprintln!("SKIPPED: needs root");
        return;
    };
    let (up, ovl_ns) = (&host.up, host.ovl_ns.clone());
    let nats_url = up.nats_url();
    let node = up.node_ids()[0].clone();
    let r = std::process::id() % 200 + 20;
    let (sub_a, sub_b) = (format!("10.213.{r}.0/24"), format!("10.214.{r}.0/24"));
    let net_a = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub_a, "ovla"])
        .ok();
    let net_b = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub_b, "ovlb"])
        .ok();
    let (net_a, net_b) = (net_a.stdout.trim().to_string(), net_b.stdout.trim().to_string());
    host.watch([net_a[..10].to_lowercase(), net_b[..10].to_lowercase()]);

    let httpd = "echo hi > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--network",
        "ovla",
        "--replicas",
        "2",
        "busybox:latest",
        "sh",
        "-c",
        httpd,
    ])
    .ok();
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "other",
        "--network",
        "ovlb",
        "busybox:latest",
        "sleep",
        "3600",
    ])
    .ok();
    let web = until("two web tasks with their addresses", || {
        let w = web_containers("web")?;
        match w.len() {
            2 => Ok(w),
            n => Err(format!("{n} web containers")),
        }
    })
    .await;
    let other = until("the other task with its address", || {
        web_containers("other")?
            .pop()
            .ok_or_else(|| "no other container".to_string())
    })
    .await;
    let ((c1, ip1), (c2, ip2)) = (web[0].clone(), web[1].clone());
    assert!(
        ip1.starts_with(&sub_a[..sub_a.len() - 4]) && ip2.starts_with(&sub_a[..sub_a.len() - 4]),
        "{web:?}"
    );

    // Over the bridge, both ways; the other network's task cannot.
    assert_eq!(http_get(&c1, &ip2), Ok("hi".to_string()), "{c1} -> {ip2}");
    assert_eq!(http_get(&c2, &ip1), Ok("hi".to_string()), "{c2} -> {ip1}");
    let off = http_get(&other.0, &ip2);
    assert!(off.is_err(), "a task of another network reached {ip2}: {off:?}");
    // Interface and resolver as attached: eth0, MTU 1450, the host's address as DNS.
    let link = engine(&["exec", &c1, "ip", "-o", "link", "show", "eth0"]).stdout;
    assert!(link.contains("mtu 1450"), "{link}");
    let resolv = engine(&["exec", &c1, "cat", "/etc/resolv.conf"]).stdout;
    let own = host_address(&nats_url, &node, &net_a).await;
    assert!(resolv.contains(&format!("nameserver {own}")), "{resolv}");
    assert!(!resolv.contains("search"), "{resolv}");

    // An agent restart keeps a connection open across it.
    engine(&["exec", "-d", &c2, "sh", "-c", "sleep 120 | nc -l -p 81 > /tmp/got"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine(&[
        "exec",
        "-d",
        &c1,
        "sh",
        "-c",
        &format!("(echo one; sleep 6; echo two) | nc {ip2} 81"),
    ]);
    up.kill_agent().await;
    until("both lines through the connection", || {
        let got = engine(&["exec", &c2, "cat", "/tmp/got"]).stdout;
        match got.as_str() {
            "one\ntwo\n" => Ok(()),
            _ => Err(format!("got {got:?}")),
        }
    })
    .await;
    assert_eq!(
        web_containers("web").unwrap(),
        web,
        "the same containers, addresses kept"
    );

    // Removing the services leaves no device of their networks, sandbox or
    // task veth (the overlay namespace stays: every host is on ingress).
    up.docker(&["service", "rm", "web", "other"]).ok();
    until("no shoal devices of the test left", || {
        let l = links();
        let left: Vec<&str> = l
            .lines()
            .filter(|line| {
                [&net_a[..10], &net_b[..10]]
                    .iter()
                    .any(|f| line.contains(&f.to_lowercase()))
                    || line.contains(": shlt")
            })
            .collect();
        let sandboxes = up.containers("{{.Names}}");
        let ns = mounted(&ovl_ns);
        match (left.is_empty(), sandboxes.is_empty(), ns) {
            (true, true, true) => Ok(()),
            _ => Err(format!(
                "devices {left:?}, containers {sandboxes:?}, overlay namespace mounted: {ns}"
            )),
        }
    })
    .await;
    up.docker(&["network", "rm", "ovla", "ovlb"]).ok();
}

/// The seed's routing mesh on one host: a port published with
/// `--publish-add` reaches the service's tasks on their `ingress` interface
/// through `shoal-ingress`, every task in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_reaches_every_task_through_the_routing_mesh() {
    let Some(host) = OverlayHost::start("mesh").await else {
        eprintln!("SKIPPED: needs root");
        return;
    };
    let up = &host.up;
    let r = std::process::id() % 200 + 20;
    let sub = format!("10.215.{r}.0/24");
    let net = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub, "meshnet"])
        .ok();
    host.watch([net.stdout.trim()[..10].to_lowercase()]);
    let httpd = "hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "meshweb",
        "--network",
        "meshnet",
        "--replicas",
        "2",
        "busybox:latest",
        "sh",
        "-c",
        httpd,
    ])
    .ok();
    until("two web tasks", || match web_containers("meshweb")?.len() {
        2 => Ok(()),
        n => Err(format!("{n} containers")),
    })
    .await;
    let port = free_port();
    let publish = format!("{port}:80");
    up.docker(&["service", "update", "-d", "--publish-add", &publish, "meshweb"])
        .ok();
    // Each rolled task has three interfaces: ingress (eth0), its network's
    // (eth1), the gateway bridge (eth2); before, the network's and the bridge.
    let names = until("two web tasks on both networks", || {
        let ps = engine(&[
            "ps",
            "--filter",
            "label=com.docker.swarm.service.name=meshweb",
            "--format",
            "{{.Names}}",
        ]);
        let names: Vec<String> = ps.lines().iter().map(|s| s.to_string()).collect();
        let with_two = names
            .iter()
            .filter(|n| engine(&["exec", n, "ip", "-o", "-4", "addr", "show", "eth2"]).code == 0)
            .count();
        match (names.len(), with_two) {
            (2, 2) => Ok(names),
            (n, w) => Err(format!("{n} containers, {w} with eth2")),
        }
    })
    .await;
    // Every task answers through the published port on this host.
    let hosts: Vec<String> = names
        .iter()
        .map(|n| engine(&["exec", n, "hostname"]).stdout.trim().to_string())
        .collect();
    let answered = until("both tasks through the mesh", || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(shoal_tests::http_get_last_line(&format!("127.0.0.1:{port}"))?);
        }
        match seen.len() {
            2 => Ok(seen),
            _ => Err(format!("answers {seen:?}")),
        }
    })
    .await;
    assert_eq!(answered, hosts.into_iter().collect::<std::collections::BTreeSet<_>>());
    up.docker(&["service", "rm", "meshweb"]).ok();
    until("the published port closes", || {
        match shoal_tests::http_get_last_line(&format!("127.0.0.1:{port}")) {
            Err(_) => Ok(()),
            Ok(a) => Err(format!("still answers {a}")),
        }
    })
    .await;
    up.docker(&["network", "rm", "meshnet"]).ok();
}

/// A service's address on a network, from `docker service inspect` (the
/// scheduler allocates it in a pass after the create).
fn vip_of(up: &Up, service: &str, network_id: &str) -> Result<String, String> {
    let r = up.docker(&[
        "service",
        "inspect",
        "-f",
        "{{range .Endpoint.VirtualIPs}}{{.NetworkID}} {{.Addr}}\n{{end}}",
        service,
    ]);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with(network_id))
        .ok_or_else(|| format!("{service} has no VIP on {network_id}: {}{}", r.stdout, r.stderr))?;
    let addr = line.split_whitespace().nth(1).unwrap_or_default();
    Ok(addr.split('/').next().unwrap_or_default().to_string())
}

/// The hostnames of a service's running tasks.
fn hostnames(service: &str) -> Result<std::collections::BTreeSet<String>, String> {
    web_containers(service)?
        .iter()
        .map(|(name, _)| {
            let r = engine(&["exec", name, "hostname"]);
            match r.code {
                0 => Ok(r.stdout.trim().to_string()),
                c => Err(format!("{name}: exit {c}")),
            }
        })
        .collect()
}

/// Connections from a task to a service's VIP reach the service's serving
/// tasks, each in turn, from the client's own address (issue 11): through
/// the nftables table the agent keeps in each task's sandbox. A task of
/// another network cannot reach the VIP; a replica added joins; after an
/// agent restart the table still follows; with no task left it refuses at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_vip_reaches_every_serving_task_and_keeps_the_clients_address() {
    let Some(host) = OverlayHost::start("vip").await else {
        eprintln!("SKIPPED: needs root");
        return;
    };
    let up = &host.up;
    let r = std::process::id() % 200 + 20;
    let (sub_a, sub_b) = (format!("10.216.{r}.0/24"), format!("10.217.{r}.0/24"));
    let net_a = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub_a, "vipa"])
        .ok();
    let net_b = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub_b, "vipb"])
        .ok();
    let (net_a, net_b) = (net_a.stdout.trim().to_string(), net_b.stdout.trim().to_string());
    host.watch([net_a[..10].to_lowercase(), net_b[..10].to_lowercase()]);

    // `/` answers the task's hostname, `/cgi-bin/peer` the client's address.
    let httpd = "mkdir -p /tmp/cgi-bin; \
        printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /tmp/cgi-bin/peer; \
        chmod +x /tmp/cgi-bin/peer; hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--network",
        "vipa",
        "--replicas",
        "2",
        "busybox:latest",
        "sh",
        "-c",
        httpd,
    ])
    .ok();
    for (name, net) in [("client", "vipa"), ("other", "vipb")] {
        up.docker(&[
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "busybox:latest",
            "sleep",
            "3600",
        ])
        .ok();
    }
    let vip = until("web's VIP on the network", || vip_of(up, "web", &net_a)).await;
    assert!(vip.starts_with(&sub_a[..sub_a.len() - 4]), "{vip}");
    let (client, client_ip) = until("the client task with its address", || {
        web_containers("client")?
            .pop()
            .ok_or_else(|| "no client container".to_string())
    })
    .await;
    let other = until("the other task", || {
        web_containers("other")?
            .pop()
            .ok_or_else(|| "no other container".to_string())
    })
    .await;

    // Every replica answers through the VIP, in turn.
    let through_vip = |want: usize| {
        let (client, vip) = (client.clone(), vip.clone());
        move || {
            let hosts = hostnames("web")?;
            if hosts.len() != want {
                return Err(format!("{} web tasks", hosts.len()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..2 * want {
                seen.insert(http_get(&client, &vip)?);
            }
            match seen == hosts {
                true => Ok(seen),
                false => Err(format!("answers {seen:?}, tasks {hosts:?}")),
            }
        }
    };
    until("both web tasks through the VIP", through_vip(2)).await;
    // The server sees the client task's own address.
    // (busybox httpd listens on IPv6 too: `[::ffff:10.0.1.5]`.)
    let peer = http_get_path(&client, &vip, "/cgi-bin/peer").unwrap();
    assert_eq!(
        peer.trim_matches(['[', ']']).trim_start_matches("::ffff:"),
        client_ip,
        "the server saw {peer}, the client is {client_ip}"
    );
    // A task on another network has no way to the VIP.
    let off = http_get(&other.0, &vip);
    assert!(off.is_err(), "a task of another network reached {vip}: {off:?}");

    // A new replica joins the answers.
    up.docker(&["service", "scale", "-d", "web=3"]).ok();
    until("three web tasks through the VIP", through_vip(3)).await;

    // A restarted agent takes the sandboxes over again: the client's table
    // still follows the service after it.
    up.kill_agent().await;

    // No task left: the VIP refuses at once (no hang until a timeout).
    up.docker(&["service", "scale", "-d", "web=0"]).ok();
    let took = until("the VIP to refuse", || {
        let started = std::time::Instant::now();
        match http_get(&client, &vip) {
            Err(e) if e.contains("refused") => Ok(started.elapsed()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(took < Duration::from_secs(2), "refused after {took:?}");

    up.docker(&["service", "rm", "web", "client", "other"]).ok();
    until("no task containers left", || match up.containers("{{.Names}}") {
        c if c.is_empty() => Ok(()),
        c => Err(format!("{c:?}")),
    })
    .await;
    up.docker(&["network", "rm", "vipa", "vipb"]).ok();
}

/// This machine's own address on its way out (not loopback, not a bridge
/// of the engine's): what another machine would connect to.
fn machine_addr() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "route", "get", "192.0.2.254"])
        .output()
        .expect("ip route get");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .unwrap_or_else(|| panic!("no source address in {text:?}"))
        .to_string()
}

/// An HTTP server outside the cluster: on every address of this machine,
/// answering `body` to each connection, until the test ends.
fn outside_server(body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.read(&mut [0u8; 1024]);
            let _ = c.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{body}\n").as_bytes());
        }
    });
    port
}

/// `GET /` of `ip:port` from inside a container (busybox `nc`).
fn http_get_port(container: &str, ip: &str, port: u16) -> Result<String, String> {
    let r = engine(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {port}"),
    ]);
    match r.code {
        0 if !r.stdout.trim().is_empty() => Ok(r.stdout.lines().last().unwrap_or_default().trim().to_string()),
        c => Err(format!("exit {c}: {}{}", r.stdout, r.stderr)),
    }
}

/// Issue 11: every task sandbox is also on the engine's gateway bridge
/// (`shoal_gwbridge`, as Docker's `docker_gwbridge`), last: a task on an
/// overlay network reaches a server outside the cluster through the
/// bridge's default route, its peer still over the overlay (on `eth0`),
/// and not its peer through the gateway bridge (ICC off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_an_overlay_network_reaches_the_outside_world_through_the_gateway_bridge() {
    let Some(host) = OverlayHost::start("gwbridge").await else {
        eprintln!("SKIPPED: needs root");
        return;
    };
    let outside = outside_server("outside");
    let me = machine_addr();
    let up = &host.up;
    let r = std::process::id() % 200 + 20;
    let sub = format!("10.216.{r}.0/24");
    let net = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub, "gwnet"])
        .ok();
    host.watch([net.stdout.trim()[..10].to_lowercase()]);
    let httpd = "echo hi > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "gwweb",
        "--network",
        "gwnet",
        "--replicas",
        "2",
        "busybox:latest",
        "sh",
        "-c",
        httpd,
    ])
    .ok();
    let web = until("two tasks with their overlay addresses", || {
        let w = web_containers("gwweb")?;
        match w.len() {
            2 => Ok(w),
            n => Err(format!("{n} containers")),
        }
    })
    .await;
    let ((c1, ip1), (c2, ip2)) = (web[0].clone(), web[1].clone());
    // eth0 is the overlay's, the gateway bridge comes last and has the default route.
    let prefix = &sub[..sub.len() - 4];
    assert!(ip1.starts_with(prefix) && ip2.starts_with(prefix), "{web:?}");
    let routes = engine(&["exec", &c1, "ip", "-4", "route"]).stdout;
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default via") && l.contains("dev eth1")),
        "{routes}"
    );
    assert!(routes.contains(&format!("{sub} dev eth0")), "{routes}");
    let sb = engine(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}{{end}}",
        &format!("{c2}.sandbox"),
    ])
    .stdout;
    let (bridge, gw_ip2) = sb.trim().split_once(' ').unwrap_or_else(|| panic!("{sb:?}"));
    assert_eq!(bridge, "shoal_gwbridge");
    let opts = engine(&["network", "inspect", "-f", "{{json .Options}}", "shoal_gwbridge"]).stdout;
    assert!(
        opts.contains(r#""com.docker.network.bridge.enable_icc":"false""#),
        "{opts}"
    );

    // Out through the gateway bridge, to this machine's own address.
    assert_eq!(
        http_get_port(&c1, &me, outside),
        Ok("outside".to_string()),
        "{c1} -> {me}:{outside}"
    );
    // The peer over the overlay, not through the gateway bridge.
    assert_eq!(http_get(&c1, &ip2), Ok("hi".to_string()), "{c1} -> {ip2}");
    let icc = http_get(&c1, gw_ip2);
    assert!(
        icc.is_err(),
        "{c1} reached its peer's gateway address {gw_ip2}: {icc:?}"
    );
    // The resolver is still the host's shoal-dns.
    let resolv = engine(&["exec", &c1, "cat", "/etc/resolv.conf"]).stdout;
    let own = host_address(&up.nats_url(), &up.node_ids()[0], net.stdout.trim()).await;
    assert!(resolv.contains(&format!("nameserver {own}")), "{resolv}");

    up.docker(&["service", "rm", "gwweb"]).ok();
    until("the sandboxes gone", || match up.containers("{{.Names}}") {
        c if c.is_empty() => Ok(()),
        c => Err(format!("{c:?}")),
    })
    .await;
    up.docker(&["network", "rm", "gwnet"]).ok();
}

/// `docker service ps`'s PORTS column of a service's running task.
fn ps_ports(up: &Up, service: &str) -> Result<String, String> {
    let ps = up.docker(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}|{{.Ports}}",
        service,
    ]);
    let line = ps.stdout.lines().next().unwrap_or_default().to_string();
    match line.split_once('|') {
        Some((state, ports)) if state.starts_with("Running") && !ports.is_empty() => Ok(ports.to_string()),
        _ => Err(format!("service ps: {}{}", ps.stdout, ps.stderr)),
    }
}

/// Issue 11: `--publish mode=host` binds the port on the task's own host:
/// on its network sandbox for a task on an overlay network, on its
/// container otherwise; a published port of 0 is the engine's choice, and
/// `docker service ps` and the task's `Status.PortStatus` show the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_published_in_host_mode_answers_on_the_tasks_host() {
    let Some(host) = OverlayHost::start("hostmode").await else {
        eprintln!("SKIPPED: needs root");
        return;
    };
    let me = machine_addr();
    let up = &host.up;
    let r = std::process::id() % 200 + 20;
    let sub = format!("10.217.{r}.0/24");
    let net = up
        .docker(&["network", "create", "-d", "overlay", "--subnet", &sub, "hostnet"])
        .ok();
    host.watch([net.stdout.trim()[..10].to_lowercase()]);
    let httpd = |body: &str| format!("echo {body} > /tmp/index.html; exec httpd -f -p 80 -h /tmp");
    let port = free_port();
    let publish = format!("mode=host,target=80,published={port}");
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "hostweb",
        "--network",
        "hostnet",
        "--publish",
        &publish,
        "busybox:latest",
        "sh",
        "-c",
        &httpd("overlay"),
    ])
    .ok();
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "anyport",
        "--publish",
        "mode=host,target=80",
        "busybox:latest",
        "sh",
        "-c",
        &httpd("plain"),
    ])
    .ok();

    // The given port, on this machine's address (the task is on an overlay network).
    let shown = until("hostweb's port in service ps", || ps_ports(up, "hostweb")).await;
    assert_eq!(shown, format!("*:{port}->80/tcp"));
    let got = until("hostweb through its host-mode port", || {
        shoal_tests::http_get_last_line(&format!("{me}:{port}"))
    })
    .await;
    assert_eq!(got, "overlay");
    // The engine's port: the same in service ps, the task's PortStatus and on the wire.
    let shown = until("anyport's port in service ps", || ps_ports(up, "anyport")).await;
    let picked: u16 = shown
        .strip_prefix("*:")
        .and_then(|s| s.strip_suffix("->80/tcp"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("service ps shows {shown:?}"));
    assert_ne!(picked, 0);
    let task = up
        .docker(&["service", "ps", "-q", "--filter", "desired-state=running", "anyport"])
        .ok();
    let status = up
        .docker(&["inspect", "-f", "{{json .Status.PortStatus}}", task.stdout.trim()])
        .ok();
    let want =
        format!(r#"{{"Ports":[{{"Protocol":"tcp","TargetPort":80,"PublishedPort":{picked},"PublishMode":"host"}}]}}"#);
    assert_eq!(status.stdout.trim(), want);
    let raw = up.docker(&["inspect", task.stdout.trim()]).ok();
    assert!(!raw.stdout.contains("\"Endpoint\""), "{}", raw.stdout);
    let got = until("anyport through the engine's port", || {
        shoal_tests::http_get_last_line(&format!("{me}:{picked}"))
    })
    .await;
    assert_eq!(got, "plain");

    up.docker(&["service", "rm", "hostweb", "anyport"]).ok();
    until("the ports close", || {
        match (
            shoal_tests::http_get_last_line(&format!("{me}:{port}")),
            shoal_tests::http_get_last_line(&format!("{me}:{picked}")),
        ) {
            (Err(_), Err(_)) => Ok(()),
            other => Err(format!("still answering: {other:?}")),
        }
    })
    .await;
    up.docker(&["network", "rm", "hostnet"]).ok();
}
