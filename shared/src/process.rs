//! What every service binary does around its `run`: the runtime actix runs
//! on, the shutdown signal, and how configuration and fatal errors end the
//! process. A `main.rs` is then a handful of lines:
//!
//! ```ignore
//! let config = Config::parse();
//! process::exit_if_invalid(config.validate());
//! let result = actix::System::with_tokio_rt(process::tokio_runtime).block_on(async move {
//!     let _telemetry = telemetry::init("shoal-x");
//!     shoal_x::run(config, process::shutdown_signal()).await
//! });
//! process::exit_on_error("shoal-x", result);
//! ```

use std::fmt::Display;

/// The multi-threaded tokio runtime every service's actix `System` runs on
/// (actors stay on the system thread; spawned tasks use every core).
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (systemd's stop).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints the configuration problems and exits with status 2 when there are any.
pub fn exit_if_invalid(validation: Result<(), String>) {
    if let Err(msg) = validation {
        eprintln!("{msg}");
        std::process::exit(2);
    }
}

/// Prints a fatal error (with its causes, for `anyhow`) and exits with status 1.
pub fn exit_on_error<E: Display>(program: &str, result: Result<(), E>) {
    if let Err(e) = result {
        eprintln!("{program}: {e:#}");
        std::process::exit(1);
    }
}
