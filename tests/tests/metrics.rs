//! Prometheus metrics as an operator collects them: `shoal up` serves
//! metrics from every process on loopback ports it prints, a real Prometheus
//! (Debian's, installed by ops/bootstrap) scrapes them all every second, and
//! its HTTP API shows the cluster as it is: every target up, one store
//! leader, one agent session, the service's two replicas running.
//!
//! Everything the test starts (the `shoal up` process group, Prometheus) is
//! killed when its guard drops, also when the test fails.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shoal_tests::up::{temp_home, Up, CONVERGE};
use shoal_tests::{eventually, free_port, which, Proc};

/// A Prometheus scraping `targets` every second, with its own config, storage and port.
fn start_prometheus(dir: &Path, targets: &[(String, String)]) -> (Proc, u16) {
    let mut scrape = String::new();
    for (name, addr) in targets {
        scrape.push_str(&format!(
            "      - targets: ['{addr}']\n        labels:\n          process: '{name}'\n"
        ));
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: shoal\n    static_configs:\n{scrape}"
        ),
    )
    .expect("prometheus config");
    let port = free_port();
    let mut cmd = Command::new(which("prometheus"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir);
    (Proc::spawn("prometheus", cmd, &dir.join("prometheus.log")), port)
}

/// GET on Prometheus' HTTP API; its `data` on success.
fn api(port: u16, path: &str, query: Option<&str>) -> Result<Value, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-G"])
        .arg(format!("http://127.0.0.1:{port}{path}"));
    if let Some(q) = query {
        cmd.arg("--data-urlencode").arg(format!("query={q}"));
    }
    let out = cmd.output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl {path}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    if v["status"] != "success" {
        return Err(format!("{path}: {v}"));
    }
    Ok(v["data"].clone())
}

/// The value of an instant query with exactly one series, as a number.
fn scalar(port: u16, query: &str) -> Result<f64, String> {
    let data = api(port, "/api/v1/query", Some(query))?;
    match data["result"].as_array().map(Vec::as_slice) {
        Some([one]) => one["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{query}: {one}")),
        other => Err(format!("{query}: want one series, got {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_process_of_shoal_up() {
    let home = temp_home();
    let data = home.path().join("data");
    let port = free_port();
    let mut up = Up::start(home.path(), "up-metrics", &data, port, "process", &[]);
    up.ready().await;

    // One metrics line per shoal process, each a distinct loopback address.
    let targets = up.metrics_targets();
    let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "raft-store",
            "scheduler",
            "dispatcher",
            "api",
            "agent",
            "dns",
            "ingress"
        ],
        "{}",
        up.output()
    );
    let mut addrs: Vec<&str> = targets.iter().map(|(_, a)| a.as_str()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), targets.len(), "{targets:?}");

    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "m",
        "--replicas",
        "2",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();

    // A task no node can take: pending, counted by its reason.
    up.docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "nowhere",
        "--constraint",
        "node.labels.shoal-test==absent",
        "busybox",
        "sleep",
        "3600",
    ])
    .ok();

    let (mut prom, prom_port) = start_prometheus(home.path(), &targets);
    let prom_log = home.path().join("prometheus.log");
    let prom_failed = |prom: &mut Proc| {
        prom.exited().then(|| {
            format!(
                "prometheus exited:\n{}",
                std::fs::read_to_string(&prom_log).unwrap_or_default()
            )
        })
    };

    // Every target scraped and up.
    let n_targets = targets.len();
    eventually(CONVERGE, "every metrics target up in Prometheus", || {
        let failed = prom_failed(&mut prom);
        let state = api(prom_port, "/api/v1/targets", None);
        async move {
            if let Some(f) = failed {
                panic!("{f}");
            }
            let data = state?;
            let active = data["activeTargets"].as_array().cloned().unwrap_or_default();
            let health: Vec<String> = active
                .iter()
                .map(|t| format!("{}={} {}", t["labels"]["process"], t["health"], t["lastError"]))
                .collect();
            let up = active.iter().filter(|t| t["health"] == "up").count();
            if active.len() == n_targets && up == n_targets {
                Ok(())
            } else {
                Err(format!("{health:?}"))
            }
        }
    })
    .await;

    // The cluster as the metrics tell it.
    let want = [
        ("shoal_scheduler_tasks{state=\"running\"}", 2.0),
        ("sum(shoal_store_is_leader)", 1.0),
        ("shoal_dispatcher_sessions", 1.0),
        ("shoal_scheduler_pending_tasks{reason=\"constraints\"}", 1.0),
        ("sum(shoal_scheduler_pending_tasks)", 1.0),
        ("shoal_agent_tasks{phase=\"running\"}", 2.0),
        // Routes are patterns: the docker CLI's /v1.xx/services/create counts here.
        (
            "clamp_max(sum(shoal_api_requests_total{route=\"/services/create\",method=\"POST\"}), 1)",
            1.0,
        ),
    ];
    eventually(CONVERGE, "the metrics to show the service's 2 running replicas", || {
        let got: Vec<(String, Result<f64, String>)> = want
            .iter()
            .map(|(q, _)| (q.to_string(), scalar(prom_port, q)))
            .collect();
        async move {
            let ok = got
                .iter()
                .zip(want)
                .all(|((_, v), (_, w))| v.as_ref().is_ok_and(|v| *v == w));
            if ok {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        }
    })
    .await;

    // Latency histograms are there, under base-unit names.
    for q in [
        "sum(shoal_store_log_flush_seconds_count) > 0",
        "sum(shoal_scheduler_pass_seconds_count) > 0",
        "sum(shoal_dispatcher_heartbeat_lag_seconds_count) > 0",
        "sum(shoal_agent_executor_operation_seconds_count{op=\"start\"}) >= 2",
    ] {
        eventually(CONVERGE, q, || {
            let v = scalar(prom_port, q);
            async move { v.map(|_| ()) }
        })
        .await;
    }

    prom.stop(std::time::Duration::from_secs(5));
    assert_eq!(up.terminate().await, Some(0), "{}", up.output());
}
