use clap::Parser;
use shoal_api::Config;
use shoal_shared::{metrics, process, telemetry};

fn main() {
    let config = Config::parse();
    process::exit_if_invalid(config.validate());
    let result = actix_web::rt::System::with_tokio_rt(process::tokio_runtime).block_on(async move {
        let _telemetry = telemetry::init("shoal-api");
        metrics::serve(&config.metrics, "shoal-api")?;
        shoal_api::run(config, process::shutdown_signal()).await
    });
    process::exit_on_error("shoal-api", result);
}
