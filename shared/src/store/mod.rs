//! The store's wire types, its NATS client and the change-feed watcher.
mod client;
mod proto;
mod types;
mod watch;

pub use client::*;
pub use proto::*;
pub use types::*;
pub use watch::*;
