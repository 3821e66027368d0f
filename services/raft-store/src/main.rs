use clap::Parser;
use mimalloc::MiMalloc;

/// The store allocates many small objects per write (JSON, sled nodes); mimalloc
/// spends far less time on them than the system allocator.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;
use shoal_raft_store::Config;

fn main() {
    let config = Config::parse();
    if let Err(msg) = config.validate() {
        eprintln!("{msg}");
        std::process::exit(2);
    }
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let result = system.block_on(async move {
        let _telemetry = shoal_shared::telemetry::init("shoal-raft-store");
        shoal_raft_store::run(config, shutdown_signal()).await
    });
    if let Err(e) = result {
        eprintln!("shoal-raft-store: {e:#}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
