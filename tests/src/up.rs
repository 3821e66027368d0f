//! `shoal up` as a test drives it: its own process group (SIGKILLed as a
//! whole when dropped, so nothing outlives a test, also when it fails), the
//! real docker CLI against it, and, with the docker executor, the engine's
//! containers of its nodes (removed when dropped).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use shoal_shared::procfs;

use crate::api::Run;
use crate::{bin, dump_logs, eventually};

/// How long a step may take on a loaded 2-core machine.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// Polls a (docker-CLI heavy) check until it holds, within [`CONVERGE`], at
/// a pace the engine can bear.
pub async fn until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    eventually(CONVERGE, what, || {
        let r = check();
        async move {
            if r.is_err() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r
        }
    })
    .await
}

/// A `shoal up` process group; SIGKILLed as a whole when dropped.
pub struct Up {
    pub child: Child,
    pub pgid: i32,
    pub port: u16,
    pub data: PathBuf,
    out: PathBuf,
    pub home: PathBuf,
}

impl Up {
    /// Starts `shoal up --executor <executor>` on `data` (its output in `home/<name>.log`).
    pub fn start(home: &Path, name: &str, data: &Path, port: u16, executor: &str, extra: &[&str]) -> Up {
        Up::start_with_env(home, name, data, port, executor, extra, &[])
    }

    /// [`Up::start`] with extra environment for every shoal process (e.g. `FAILPOINTS`).
    pub fn start_with_env(
        home: &Path,
        name: &str,
        data: &Path,
        port: u16,
        executor: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Up {
        use std::os::unix::process::CommandExt;
        let out = home.join(format!("{name}.log"));
        let log = std::fs::File::create(&out).expect("log file");
        let mut cmd = Command::new(bin("shoal"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("SHOAL_LOG", "info")
            // Overlay networks change the machine's own network namespace:
            // only the tests that exercise them turn them on.
            .env("SHOAL_OVERLAY", "false")
            .envs(env.iter().copied())
            .args(["up", "--executor", executor, "--nats-port", "0"])
            .arg("--data-dir")
            .arg(data)
            .args(["--api-addr", &format!("tcp://127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().expect("start shoal up");
        let pgid = child.id() as i32;
        Up {
            child,
            pgid,
            port,
            data: data.to_path_buf(),
            out,
            home: home.to_path_buf(),
        }
    }

    /// What `shoal up` printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the `DOCKER_HOST=` line.
    pub async fn ready(&mut self) {
        let want = format!("DOCKER_HOST=tcp://127.0.0.1:{}", self.port);
        eventually(CONVERGE, "shoal up to print DOCKER_HOST", || {
            let out = self.output();
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            let found = out.lines().any(|l| l == want);
            async move {
                assert!(!exited, "shoal up exited early:\n{out}");
                match found {
                    true => Ok(()),
                    false => Err(out),
                }
            }
        })
        .await
    }

    /// The URL of the cluster's NATS (from the `shoal up: NATS on` line).
    pub fn nats_url(&self) -> String {
        self.output()
            .lines()
            .find_map(|l| l.strip_prefix("shoal up: NATS on "))
            .map(str::to_string)
            .expect("shoal up printed its NATS URL")
    }

    /// The real docker CLI against this cluster.
    pub fn docker(&self, args: &[&str]) -> Run {
        docker_at(&self.home, self.port, args)
    }

    /// [`Up::docker`] with `input` on the CLI's stdin (`secret create -`, `swarm unlock`).
    pub fn docker_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        docker_stdin_at(&self.home, &format!("tcp://127.0.0.1:{}", self.port), args, input)
    }

    /// `(process, ADDR)` of the `metrics <process> http://ADDR/metrics` lines `shoal up` printed.
    pub fn metrics_targets(&self) -> Vec<(String, String)> {
        self.output()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next(), w.next()) {
                    (Some("metrics"), Some(name), Some(url), None) => {
                        let addr = url.strip_prefix("http://")?.strip_suffix("/metrics")?;
                        Some((name.to_string(), addr.to_string()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// The sum over every process named `process` (e.g. `agent`, and the
    /// `--extra-agents`' `agent-2`, `agent-3`, ...) of the
    /// samples of `series` (a name with its exact label set, as exposed:
    /// `shoal_agent_image_pull_seconds_count{outcome="ok"}`), scraped now.
    pub fn metric_sum(&self, process: &str, series: &str) -> Result<f64, String> {
        let mut sum = 0.0;
        let named = |p: &str| {
            p == process
                || p.strip_prefix(process)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        };
        for (_, addr) in self.metrics_targets().iter().filter(|(p, _)| named(p)) {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "5", &format!("http://{addr}/metrics")])
                .output()
                .map_err(|e| format!("curl: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            for l in text.lines() {
                if let Some(v) = l.strip_prefix(series).and_then(|rest| rest.trim().parse::<f64>().ok()) {
                    sum += v;
                }
            }
        }
        Ok(sum)
    }

    /// `docker ... --format` lines, or the failure as the state.
    pub fn lines(&self, args: &[&str]) -> Result<Vec<String>, String> {
        let r = self.docker(args);
        if r.code != 0 {
            return Err(format!("{args:?}: {}", r.stderr.trim()));
        }
        Ok(r.lines().into_iter().map(|l| l.trim().to_string()).collect())
    }

    /// The pid of a process of this group (not `shoal up` itself) running `program`,
    /// with `arg` among its arguments when given (e.g. an agent's `--data-dir` value).
    pub fn pid_of(&self, program: &str, arg: Option<&Path>) -> Option<i32> {
        procs()
            .into_iter()
            .filter(|p| p.pgid == self.pgid && p.pid != self.pgid)
            .find(|p| {
                p.args.first().is_some_and(|a| a.ends_with(program))
                    && arg.is_none_or(|want| p.args.iter().any(|a| Path::new(a) == want))
            })
            .map(|p| p.pid)
    }

    /// SIGKILLs the agent and waits until `shoal up` has started it again.
    pub async fn kill_agent(&self) {
        let agent = self.pid_of("shoal-agent", None).expect("shoal up's agent");
        let _ = kill(Pid::from_raw(agent), Signal::SIGKILL);
        until("the agent to be back", || match self.pid_of("shoal-agent", None) {
            Some(p) if p != agent => Ok(()),
            _ => Err("not yet".to_string()),
        })
        .await;
    }

    /// SIGTERM; waits for the exit and returns its status code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.pgid), Signal::SIGTERM);
        self.exit_code().await
    }

    /// SIGINT to the whole group, as Ctrl-C on a terminal sends it; returns the exit code.
    pub async fn interrupt_group(&mut self) -> Option<i32> {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGINT);
        self.exit_code().await
    }

    pub async fn exit_code(&mut self) -> Option<i32> {
        eventually(CONVERGE, "shoal up to exit after a stop signal", || {
            let status = self.child.try_wait();
            async move {
                match status {
                    Ok(Some(s)) => Ok(s.code()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await
    }
}

impl Up {
    /// The node IDs of this `shoal up`'s agents (`<data>/node-id` for the
    /// manager's own, `<data>/agent-N/node-id` for extra agents).
    pub fn node_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.data) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("agent"))
            .map(|e| e.path())
            .chain([self.data.clone()])
            .filter_map(|dir| std::fs::read_to_string(dir.join("node-id")).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        ids.sort();
        ids
    }

    /// Task containers of this swarm's nodes on the engine, as
    /// `docker ps -a --format` lines (`format` like `{{.ID}} {{.Names}}`).
    pub fn containers(&self, format: &str) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.node_ids() {
            let r = engine(&[
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                &format!("label=com.docker.swarm.node.id={id}"),
                "--format",
                format,
            ]);
            assert_eq!(r.code, 0, "docker ps: {}", r.stderr);
            out.extend(r.lines().into_iter().map(|l| l.trim().to_string()));
        }
        out.sort();
        out
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- shoal up output -----\n{}", self.output());
            dump_logs(&self.data.join("logs"), 30);
        }
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        let _ = self.child.wait();
        // Task containers outlive their agents by design; a test's must not outlive the test.
        let ids = self.containers("{{.ID}}");
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = engine(&args);
        }
        // Nor the secret and config files its agents wrote (their default `--secrets-dir`).
        for node in self.node_ids() {
            let _ = std::fs::remove_dir_all(Path::new("/dev/shm/shoal").join(node));
        }
    }
}

/// The real docker CLI against the API of a `shoal up` on `port` (for a
/// thread that does not hold the [`Up`]).
pub fn docker_at(home: &Path, port: u16, args: &[&str]) -> Run {
    let out = docker_cmd(home, &format!("tcp://127.0.0.1:{port}"), args)
        .output()
        .expect("run docker");
    Run::from(out)
}

/// The docker CLI against `host` with `input` on its stdin, closed after it
/// (`secret create -`, `swarm unlock`, `exec -i`); its config in `home`.
pub fn docker_stdin_at(home: &Path, host: &str, args: &[&str], input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = docker_cmd(home, host, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    let _ = child.stdin.take().expect("stdin").write_all(input);
    Run::from(child.wait_with_output().expect("docker output"))
}

/// `docker ARGS` at `host`, with nothing of this process's environment but
/// PATH, its config under `home`, cut off after [`DOCKER_TIMEOUT`].
fn docker_cmd(home: &Path, host: &str, args: &[&str]) -> Command {
    let cfg = home.join("docker-config");
    let _ = std::fs::create_dir_all(&cfg);
    let mut cmd = Command::new("timeout");
    cmd.args([DOCKER_TIMEOUT, "docker"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DOCKER_CONFIG", &cfg)
        .env("DOCKER_HOST", host)
        .env("DOCKER_CLI_HINTS", "false")
        .args(args);
    cmd
}

/// No docker CLI call of a test may hang: each is cut off after this.
const DOCKER_TIMEOUT: &str = "180";

/// The real docker CLI against the machine's own engine.
pub fn engine(args: &[&str]) -> Run {
    let out = Command::new("timeout")
        .args([DOCKER_TIMEOUT, "docker"])
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CLI_HINTS", "false")
        .args(args)
        .output()
        .expect("run docker");
    Run::from(out)
}

/// A live process as /proc shows it.
#[derive(Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub pgid: i32,
    pub args: Vec<String>,
}

/// Every live (not zombie) process.
pub fn procs() -> Vec<ProcInfo> {
    procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = procfs::Stat::read(pid)?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (!stat.zombie()).then_some(ProcInfo {
                pid,
                pgid: stat.pgid,
                args,
            })
        })
        .collect()
}

/// Processes left in the group or naming the data dir, as a printable state.
pub fn leftovers(pgid: i32, data: &Path) -> Vec<String> {
    let data = data.to_string_lossy().into_owned();
    procs()
        .into_iter()
        .filter(|p| p.pgid == pgid || p.args.iter().any(|a| a.contains(&data)))
        .map(|p| format!("{} {:?}", p.pid, p.args))
        .collect()
}

pub fn temp_home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoal-up-")
        .tempdir()
        .expect("temp dir")
}
