//! The seed's network walkthrough across the hosts of the five-host dev
//! cluster (issue 11 §4, the part that exists: overlay data plane and names):
//! an overlay network, a service of 3 replicas spread over three hosts and a
//! client service on the same network. From the client's task, on one host,
//! TCP reaches the web tasks on the other hosts by address (VXLAN between the
//! node containers, which are the hosts' underlay), `tasks.web` resolves to
//! every task's address and `web` to its VIP through the host's `shoal-dns`,
//! a service on no shared network does not resolve, and a dnsrr service
//! resolves to its task's address. Then the routing mesh: after
//! `--publish-add 8080:80`, port 8080 on every host's address answers from
//! the web task wherever it runs, and once web has three replicas, one
//! host's port reaches all three in turn; a drained host's port still
//! answers, from the tasks that moved to the other hosts. `web` by name
//! (its VIP) reaches all three web tasks from the client's host.
//!
//! The cluster is removed when the test ends, also when it fails.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_tests::dev::{all_nodes, poll, DevCluster};
use shoal_tests::up::engine;

const STEP: Duration = Duration::from_secs(180);

/// `docker <args>` on manager1's API until it succeeds.
fn on_manager(c: &DevCluster, args: &[&str]) -> String {
    poll(STEP, &format!("docker {}", args.join(" ")), || {
        let run = c.docker("manager1", args);
        match run.code {
            0 => Ok(run.stdout),
            _ => Err(run.stderr),
        }
    })
}

/// The IPv4 address of `eth0` in a task container.
fn address(container: &str) -> Result<String, String> {
    let a = engine(&["exec", container, "ip", "-o", "-4", "addr", "show", "eth0"]);
    a.stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .ok_or_else(|| format!("{container} has no eth0 address: {}{}", a.stdout, a.stderr))
}

/// `GET /` of `ip:80` from inside a container with busybox `nc`: the body's last line.
fn http_get(container: &str, ip: &str) -> Result<String, String> {
    let r = engine(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 80"),
    ]);
    match r.code {
        0 => Ok(r.stdout.lines().last().unwrap_or_default().trim().to_string()),
        c => Err(format!("exit {c}: {}{}", r.stdout, r.stderr)),
    }
}

/// The addresses busybox `nslookup NAME` prints in a container (its
/// resolver is the host's `shoal-dns`); `Err` when the name does not resolve.
fn lookup(container: &str, name: &str) -> Result<BTreeSet<String>, String> {
    let r = engine(&["exec", container, "nslookup", name]);
    let text = format!("{}{}", r.stdout, r.stderr);
    // The answer section follows the server's own lines ("Server:", "Address: <server>#53").
    let answers: BTreeSet<String> = text
        .split_once(&format!("Name:\t{name}"))
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.trim().split('#').next().unwrap_or_default().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    match (r.code, answers.is_empty()) {
        (0, false) => Ok(answers),
        _ => Err(text),
    }
}

#[test]
fn tasks_on_different_hosts_reach_each_other_and_resolve_by_name() {
    let c = DevCluster::up();
    on_manager(&c, &["network", "create", "-d", "overlay", "appnet"]);
    let httpd = "hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    on_manager(
        &c,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--network",
            "appnet",
            "--replicas",
            "3",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sh",
            "-c",
            httpd,
        ],
    );
    on_manager(
        &c,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "client",
            "--network",
            "appnet",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    on_manager(
        &c,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "rr",
            "--network",
            "appnet",
            "--endpoint-mode",
            "dnsrr",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    on_manager(
        &c,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "lonely",
            "--stop-grace-period",
            "1s",
            "busybox",
            "sleep",
            "3600",
        ],
    );

    // Three web tasks on three hosts, each with its address.
    let web = poll(STEP, "3 web tasks on 3 hosts with addresses", || {
        let running = c.running_containers("web");
        let hosts: BTreeSet<&String> = running.iter().map(|(n, _)| n).collect();
        if running.len() != 3 || hosts.len() != 3 {
            return Err(format!("{running:?}"));
        }
        running
            .iter()
            .map(|(n, id)| Ok((n.clone(), id.clone(), address(id)?)))
            .collect::<Result<Vec<_>, String>>()
    });
    let (client_host, client) = poll(STEP, "the client task", || {
        c.running_containers("client")
            .pop()
            .filter(|(_, id)| address(id).is_ok())
            .ok_or_else(|| "no client container with an address yet".to_string())
    });
    let remote: Vec<&(String, String, String)> = web.iter().filter(|(n, _, _)| *n != client_host).collect();
    assert!(
        remote.len() >= 2,
        "web tasks on hosts other than {client_host}: {web:?}"
    );

    // TCP from the client's host to every web task, the remote ones over VXLAN.
    for (host, id, ip) in &web {
        let got = poll(STEP, &format!("{client_host} -> web on {host} ({ip})"), || {
            http_get(&client, ip)
        });
        let name = engine(&["exec", id, "hostname"]).stdout.trim().to_string();
        assert_eq!(got, name, "the web task on {host} answered (its hostname)");
    }

    // Names through the host's shoal-dns.
    let want: BTreeSet<String> = web.iter().map(|(_, _, ip)| ip.clone()).collect();
    let tasks = poll(STEP, "tasks.web to resolve to every web task", || {
        let got = lookup(&client, "tasks.web")?;
        match got == want {
            true => Ok(got),
            false => Err(format!("{got:?}, want {want:?}")),
        }
    });
    assert_eq!(tasks.len(), 3);
    let vip = on_manager(
        &c,
        &[
            "service",
            "inspect",
            "-f",
            "{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}",
            "web",
        ],
    );
    let vip = vip.trim().split('/').next().unwrap_or_default().to_string();
    let named = poll(STEP, "web to resolve to its VIP", || lookup(&client, "web"));
    assert_eq!(named, BTreeSet::from([vip.clone()]), "web is its VIP");
    // Connections to the VIP, by name, reach every web task in turn, the
    // remote ones over VXLAN (the client's own sandbox rewrites the VIP).
    let hostnames: BTreeSet<String> = web
        .iter()
        .map(|(_, id, _)| engine(&["exec", id, "hostname"]).stdout.trim().to_string())
        .collect();
    poll(STEP, "web by name to reach all three tasks", || {
        let mut seen = BTreeSet::new();
        for _ in 0..9 {
            seen.insert(http_get(&client, "web")?);
        }
        match seen == hostnames {
            true => Ok(()),
            false => Err(format!("{seen:?}, want {hostnames:?}")),
        }
    });
    let rr = poll(STEP, "the dnsrr task's address", || {
        let (_, id) = c
            .running_containers("rr")
            .pop()
            .ok_or_else(|| "no rr task yet".to_string())?;
        address(&id)
    });
    let rr_named = poll(STEP, "rr (dnsrr) to resolve to its task", || lookup(&client, "rr"));
    assert_eq!(rr_named, BTreeSet::from([rr]));
    poll(STEP, "the lonely service to be running", || {
        c.running_containers("lonely")
            .pop()
            .ok_or_else(|| "not yet".to_string())
    });
    let lonely = lookup(&client, "lonely");
    assert!(lonely.is_err(), "a service on no shared network resolved: {lonely:?}");

    // Scaled down: the gone tasks leave the answers.
    on_manager(&c, &["service", "scale", "--detach", "web=1"]);
    let left = poll(STEP, "tasks.web to shrink to one address", || {
        let got = lookup(&client, "tasks.web")?;
        match got.len() {
            1 => Ok(got),
            _ => Err(format!("{got:?}")),
        }
    });
    assert!(left.is_subset(&want), "{left:?} of {want:?}");

    // The routing mesh: the published port on every host's address reaches
    // the one web task, through each host's shoal-ingress and, from the
    // other hosts, over ingress's VXLAN. Publishing rolls web onto ingress.
    on_manager(
        &c,
        &["service", "update", "--detach", "--publish-add", "8080:80", "web"],
    );
    let one = poll(
        STEP,
        "the web task on ingress (eth0; appnet eth1, the gateway bridge eth2)",
        || {
            let running = c.running_containers("web");
            let with_eth2: Vec<&String> = running
                .iter()
                .map(|(_, id)| id)
                .filter(|id| engine(&["exec", id, "ip", "-o", "-4", "addr", "show", "eth2"]).code == 0)
                .collect();
            match (running.len(), with_eth2.as_slice()) {
                (1, [id]) => Ok(engine(&["exec", id, "hostname"]).stdout.trim().to_string()),
                _ => Err(format!("{running:?}, {} on ingress", with_eth2.len())),
            }
        },
    );
    for node in all_nodes() {
        let ip = c.ip(node);
        let got = poll(STEP, &format!("{node}'s {ip}:8080 to answer"), || {
            shoal_tests::http_get_last_line(&format!("{ip}:8080"))
        });
        assert_eq!(got, one, "{node} forwarded to the web task");
    }
    on_manager(&c, &["service", "scale", "--detach", "web=3"]);
    let names = poll(STEP, "three web tasks on ingress", || {
        let running = c.running_containers("web");
        let names: BTreeSet<String> = running
            .iter()
            .filter(|(_, id)| engine(&["exec", id, "ip", "-o", "-4", "addr", "show", "eth2"]).code == 0)
            .map(|(_, id)| engine(&["exec", id, "hostname"]).stdout.trim().to_string())
            .collect();
        match names.len() {
            3 => Ok(names),
            n => Err(format!("{n} of {} on ingress", running.len())),
        }
    });
    let ip = c.ip(all_nodes()[0]);
    let all_answers = |ip: &str, want: &BTreeSet<String>| {
        let mut seen = BTreeSet::new();
        for _ in 0..9 {
            seen.insert(shoal_tests::http_get_last_line(&format!("{ip}:8080"))?);
        }
        match seen == *want {
            true => Ok(()),
            false => Err(format!("{seen:?}, want {want:?}")),
        }
    };
    poll(STEP, "one host's port to reach all three web tasks", || {
        all_answers(&ip, &names)
    });

    // Drain (the seed's `node update --availability drain`): the host's web
    // task moves away, and the drained host's port still answers, from
    // tasks on the other hosts only.
    let (drained, _) = c.running_containers("web").pop().expect("a web task");
    let drained_id = c.node_id(&drained);
    on_manager(&c, &["node", "update", "--availability", "drain", &drained_id]);
    let moved = poll(STEP, "three web tasks, none on the drained host", || {
        let running = c.running_containers("web");
        let names: BTreeSet<String> = running
            .iter()
            .filter(|(host, _)| *host != drained)
            .filter(|(_, id)| engine(&["exec", id, "ip", "-o", "-4", "addr", "show", "eth2"]).code == 0)
            .map(|(_, id)| engine(&["exec", id, "hostname"]).stdout.trim().to_string())
            .collect();
        match (running.len(), names.len()) {
            (3, 3) => Ok(names),
            (r, n) => Err(format!("{r} running, {n} on ingress elsewhere")),
        }
    });
    let ip = c.ip(&drained);
    poll(STEP, "the drained host's port to reach the moved tasks", || {
        all_answers(&ip, &moved)
    });
    on_manager(&c, &["node", "update", "--availability", "active", &drained_id]);
}
