use clap::Parser;
use mimalloc::MiMalloc;
use shoal_raft_store::Config;
use shoal_shared::{metrics, process, telemetry};

/// The store allocates many small objects per write (JSON, sled nodes); mimalloc
/// spends far less time on them than the system allocator.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let config = Config::parse();
    process::exit_if_invalid(config.validate());
    let result = actix::System::with_tokio_rt(process::tokio_runtime).block_on(async move {
        let _telemetry = telemetry::init("shoal-raft-store");
        metrics::serve(&config.metrics, "shoal-raft-store")?;
        shoal_raft_store::run(config, process::shutdown_signal()).await
    });
    process::exit_on_error("shoal-raft-store", result);
}
