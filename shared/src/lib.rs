//! `shoal-shared`: the contract between shoal's processes.
//!
//! Everything that crosses a process boundary is defined here and nowhere else:
//! - [`model`]: the cluster objects with Docker Engine API JSON field names;
//! - [`store`]: the store's wire types, its NATS client and the change-feed watcher;
//! - [`subjects`]: every NATS subject, built by functions;
//! - [`envelope`]: how a message is encoded and how W3C trace context rides in NATS headers;
//! - [`error`]: error codes that say whether to retry;
//! - [`config`] and [`telemetry`]: common flags, `SHOAL_*` variables and tracing setup;
//! - [`logs`]: task logs pulled from the agents (cursor, lines, work state);
//! - [`metrics`]: the Prometheus registry and the `/metrics` server (`--metrics-addr`);
//! - [`secrets`]: the managers' key for secret data at rest, and the payloads agents receive;
//! - [`netview`]: one host's view of the cluster's networks (bridges, DNS, load balancing);
//! - [`membership`]: a host's membership of a swarm, kept in `<data-dir>/swarm/`;
//! - [`nats_auth`]: the managers' NATS users: node certificates mapped to role permissions;
//! - [`process`]: what every service binary does around its `run` (runtime, signals, exit).
//!
//! It does not depend on actix actors: services adapt these types to theirs
//! (only [`metrics`] runs a small actix-web server).
#![forbid(unsafe_code)]

pub mod config;
pub mod dispatch;
pub mod envelope;
pub mod error;
pub mod id;
pub mod logs;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod nats_auth;
pub mod netview;
pub mod process;
pub mod procfs;
pub mod secrets;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod template;

pub use error::{ErrorCode, Result, ShoalError};
