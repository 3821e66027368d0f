//! `shoal`: the swarm commands of the docker CLI (`swarm`, `node`,
//! `service`, `network`, `info`), talking to shoal-api over its unix socket
//! or TCP (`--host` / `SHOAL_HOST`; TLS with docker's `--tlscacert`,
//! `--tlscert`, `--tlskey`), with the docker CLI's columns, `--pretty`
//! views, `-q`, `-f` filters and Go-template `--format`.
//!
//! - [`client`]: a small blocking HTTP/1.1 client (unix socket, TCP, TLS over
//!   TCP), typed JSON calls, and raw requests (the cross-process tests use it too);
//! - [`format`]: tables, templates, durations and sizes as docker prints them;
//! - [`commands`]: the command line, one module per Docker noun (`swarm`,
//!   `node`, `service`, `network`, `task`) reading the shared typed model;
//! - [`load`]: `shoal load <component>`, a load tool driving one component of a running cluster;
//! - [`up`]: `shoal up`, a supervised one-machine cluster (nats-server and every shoal process).
#![forbid(unsafe_code)]

pub mod client;
pub mod commands;
pub mod format;
pub mod load;
pub mod up;

/// Runs the command line; returns the process exit status.
pub fn main_with_args(args: Vec<String>) -> i32 {
    commands::run(args)
}
