//! The managers' NATS with node certificates (issue 16 §2): a real
//! nats-server configured with `tls { verify_and_map }` and the users of
//! `shoal_shared::nats_auth`, clients connecting as a joined host's
//! processes do (`membership::connect_options`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_api::certs;
use shoal_shared::membership::{self, Membership, CA_CERT, NODE_CERT, NODE_KEY};
use shoal_shared::nats_auth::{self, CertRole, Member};
use shoal_shared::subjects::{self, RaftRpc};
use shoal_tests::{free_port, which, Proc};

const EXPIRY: Duration = Duration::from_secs(3600);

struct Ca {
    cert: String,
    key: String,
    cluster: String,
}

impl Ca {
    /// A node's swarm dir as `swarm join` leaves it: certificate, key, CA, state.
    fn node_dir(&self, root: &Path, node_id: &str, role: CertRole, url: &str) -> std::path::PathBuf {
        let dir = root.join(node_id);
        let (csr, key) = certs::node_csr(node_id).unwrap();
        let cert =
            certs::sign_node_cert(&self.cert, &self.key, &csr, node_id, role.ou(), &self.cluster, EXPIRY).unwrap();
        membership::write_file(&dir, NODE_CERT, cert.as_bytes(), 0o644).unwrap();
        membership::write_file(&dir, NODE_KEY, key.as_bytes(), 0o600).unwrap();
        membership::write_file(&dir, CA_CERT, self.cert.as_bytes(), 0o644).unwrap();
        let role = match role {
            CertRole::Manager => "manager",
            CertRole::Worker => "worker",
        };
        Membership {
            cluster_id: self.cluster.clone(),
            node_id: node_id.into(),
            role: role.into(),
            nats_urls: vec![url.into()],
            managers: vec![],
        }
        .write(&dir)
        .unwrap();
        dir
    }
}

/// Connects as the node whose swarm dir is `dir`, collecting the server's
/// errors (permission violations arrive as `-ERR`, not as call failures).
async fn connect_as(dir: &Path) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let m = Membership::read(dir).unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = membership::connect_options(dir, &m, "nats-auth-test")
        .event_callback(move |e| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = e {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(m.nats_urls.clone())
        .await
        .expect("connect with a node certificate");
    (client, errors)
}

async fn violation(errors: &Arc<Mutex<Vec<String>>>, what: &str, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = errors.lock().unwrap().clone();
        if seen.iter().any(|e| {
            e.to_lowercase()
                .contains(&format!("permissions violation for {what} to \"{subject}\"").to_lowercase())
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no permissions violation for {what} to {subject}; server errors: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn nothing_arrives(sub: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        panic!("{what}: a message arrived on {}", m.subject);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_certificate_may_use_only_its_own_subjects() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (ca_cert, _, ca_key) = certs::new_root_ca().unwrap();
    let ca = Ca {
        cert: ca_cert,
        key: ca_key,
        cluster: shoal_shared::id::new_id(),
    };
    let port = free_port();
    let url = format!("tls://127.0.0.1:{port}");
    // The server presents a certificate of the cluster CA for its address.
    let server = ca.node_dir(root, "127.0.0.1", CertRole::Manager, &url);
    let (manager, worker, other) = (
        shoal_shared::id::new_id(),
        shoal_shared::id::new_id(),
        shoal_shared::id::new_id(),
    );
    let members = [
        Member {
            node_id: manager.clone(),
            role: CertRole::Manager,
        },
        Member {
            node_id: worker.clone(),
            role: CertRole::Worker,
        },
        Member {
            node_id: other.clone(),
            role: CertRole::Worker,
        },
    ];
    std::fs::write(root.join("users.conf"), nats_auth::authorization(&ca.cluster, &members)).unwrap();
    let conf = root.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify_and_map: true\n  timeout: 2\n}}\ninclude users.conf\n",
            server.join(NODE_CERT),
            server.join(NODE_KEY),
            server.join(CA_CERT)
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(which("nats-server"));
    cmd.arg("-c").arg(&conf);
    let _nats = Proc::spawn("nats-server", cmd, &root.join("nats.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not listen; see {}",
            root.join("nats.log").display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (m, m_errors) = connect_as(&ca.node_dir(root, &manager, CertRole::Manager, &url)).await;
    let (w, w_errors) = connect_as(&ca.node_dir(root, &worker, CertRole::Worker, &url)).await;

    // The manager may do anything: the store, Raft, every node's assignments.
    let mut store = m.subscribe(subjects::store_requests()).await.unwrap();
    let mut raft = m
        .subscribe(subjects::raft_rpc(1, RaftRpc::AppendEntries))
        .await
        .unwrap();
    let mut dispatch = m.subscribe(subjects::dispatcher_requests()).await.unwrap();
    m.flush().await.unwrap();

    // The worker's own session works: a request to the dispatcher and its reply.
    let answer = {
        let m = m.clone();
        tokio::spawn(async move {
            let req = dispatch.next().await.unwrap();
            m.publish(req.reply.unwrap(), "welcome".into()).await.unwrap();
        })
    };
    let reply = w
        .request(subjects::dispatcher_requests(), "register".into())
        .await
        .expect("the worker's dispatcher request is answered");
    assert_eq!(&reply.payload[..], b"welcome");
    answer.await.unwrap();

    // Its own assignments reach it; it answers a log read addressed to it.
    let mut mine = w.subscribe(subjects::agent_assignments(&worker)).await.unwrap();
    let mut logs = w.subscribe(subjects::agent_logs(&worker)).await.unwrap();
    w.flush().await.unwrap();
    m.publish(subjects::agent_assignments(&worker), "yours".into())
        .await
        .unwrap();
    assert_eq!(&mine.next().await.unwrap().payload[..], b"yours");
    let read = {
        let m = m.clone();
        let worker = worker.clone();
        tokio::spawn(async move { m.request(subjects::agent_logs(&worker), "read".into()).await })
    };
    let req = logs.next().await.unwrap();
    w.publish(req.reply.unwrap(), "lines".into()).await.unwrap();
    assert_eq!(&read.await.unwrap().unwrap().payload[..], b"lines");

    // The store, Raft and another node's assignments are refused.
    w.publish(subjects::store_requests(), "{}".into()).await.unwrap();
    violation(&w_errors, "publish", &subjects::store_requests()).await;
    nothing_arrives(&mut store, "a worker's store request").await;
    w.publish(subjects::raft_rpc(1, RaftRpc::AppendEntries), "x".into())
        .await
        .unwrap();
    violation(&w_errors, "publish", &subjects::raft_rpc(1, RaftRpc::AppendEntries)).await;
    nothing_arrives(&mut raft, "a worker's Raft message").await;
    let mut theirs = w.subscribe(subjects::agent_assignments(&other)).await.unwrap();
    violation(&w_errors, "subscription", &subjects::agent_assignments(&other)).await;
    m.publish(subjects::agent_assignments(&other), "secret".into())
        .await
        .unwrap();
    nothing_arrives(&mut theirs, "another node's assignments").await;
    // Nor may it read other nodes' replies, or the store's change feed.
    w.subscribe("_INBOX.>").await.unwrap();
    violation(&w_errors, "subscription", "_INBOX.>").await;
    w.subscribe(subjects::store_events()).await.unwrap();
    violation(&w_errors, "subscription", &subjects::store_events()).await;
    assert!(
        m_errors.lock().unwrap().is_empty(),
        "manager: {:?}",
        m_errors.lock().unwrap()
    );

    // Without a certificate of the cluster there is no connection at all.
    let stranger = async_nats::ConnectOptions::new()
        .add_root_certificates(server.join(CA_CERT))
        .connection_timeout(Duration::from_secs(3))
        .connect(&url)
        .await;
    assert!(stranger.is_err(), "a client without a certificate connected");
    let foreign = Ca {
        cluster: ca.cluster.clone(),
        ..{
            let (cert, _, key) = certs::new_root_ca().unwrap();
            Ca {
                cert,
                key,
                cluster: String::new(),
            }
        }
    };
    let forged = foreign.node_dir(&root.join("forged"), &manager, CertRole::Manager, &url);
    let forged = async_nats::ConnectOptions::new()
        .add_root_certificates(server.join(CA_CERT))
        .add_client_certificate(forged.join(NODE_CERT), forged.join(NODE_KEY))
        .connection_timeout(Duration::from_secs(3))
        .connect(&url)
        .await;
    assert!(forged.is_err(), "a manager certificate of another CA connected");
}
