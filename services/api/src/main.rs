use clap::Parser;
use shoal_api::Config;

fn main() {
    let config = Config::parse();
    if let Err(msg) = config.validate() {
        eprintln!("{msg}");
        std::process::exit(2);
    }
    let system = actix_web::rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let result = system.block_on(async move {
        let _telemetry = shoal_shared::telemetry::init("shoal-api");
        shoal_api::run(config, shutdown_signal()).await
    });
    if let Err(e) = result {
        eprintln!("shoal-api: {e:#}");
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
