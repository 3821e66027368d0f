use clap::Parser;
use shoal_agent::Config;
use shoal_shared::{metrics, process, telemetry};

fn main() {
    let config = Config::parse();
    // Failpoints named in FAILPOINTS (tests only: see `agent::FAIL_BEFORE_RUNNING`).
    let _failpoints = fail::FailScenario::setup();
    process::exit_if_invalid(config.validate());
    let result = actix::System::with_tokio_rt(process::tokio_runtime).block_on(async move {
        let _telemetry = telemetry::init("shoal-agent");
        metrics::serve(&config.metrics, "shoal-agent")?;
        shoal_agent::run(config, process::shutdown_signal()).await
    });
    process::exit_on_error("shoal-agent", result);
}
