//! The store's wire types, its NATS client, the change-feed watcher and the
//! follower kit built on it ([`mirror`]).
mod client;
pub mod mirror;
mod proto;
mod types;
mod watch;

pub use client::*;
pub use proto::*;
pub use types::*;
pub use watch::*;
