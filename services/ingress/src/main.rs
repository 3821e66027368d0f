use clap::Parser;
use shoal_ingress::Config;
use shoal_shared::{metrics, process, telemetry};

fn main() {
    let config = Config::parse();
    process::exit_if_invalid(config.validate());
    let result = actix::System::with_tokio_rt(process::tokio_runtime).block_on(async move {
        let _telemetry = telemetry::init("shoal-ingress");
        metrics::serve(&config.metrics, "shoal-ingress")?;
        shoal_ingress::run(config, process::shutdown_signal()).await
    });
    process::exit_on_error("shoal-ingress", result);
}
