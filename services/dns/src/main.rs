use clap::Parser;
use shoal_dns::Config;
use shoal_shared::{metrics, process, telemetry};

fn main() {
    let config = Config::parse();
    process::exit_if_invalid(config.validate());
    let result = actix::System::with_tokio_rt(process::tokio_runtime).block_on(async move {
        let _telemetry = telemetry::init("shoal-dns");
        metrics::serve(&config.metrics, "shoal-dns")?;
        shoal_dns::run(config, process::shutdown_signal()).await
    });
    process::exit_on_error("shoal-dns", result);
}
