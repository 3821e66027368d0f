//! `shoal network ...`: swarm networks.
//!
//! Docker's `/networks` endpoints answer in a flat shape (`Id`, `Name`,
//! `Driver`, `IPAM.Config`, ...), not the store's [`Network`](shoal_shared::model::Network)
//! (`Spec.DriverConfiguration`, `IPAMOptions.Configs`): shoal-api renders one
//! from the other. [`NetworkResource`] reads the fields the CLI prints;
//! the IPAM pools of a create request are the model's [`IpamConfig`].

use std::collections::BTreeMap;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use shoal_shared::model::IpamConfig;

use super::{fetch_each, inspect_out, list_rows, parse_kv_list, query_filters, remove_each, short, single};
use super::{ListOpts, Out, Printed, Row};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        #[arg(short, long, default_value = "overlay")]
        driver: String,
        #[arg(long)]
        attachable: bool,
        #[arg(long)]
        internal: bool,
        #[arg(long)]
        label: Vec<String>,
        #[arg(long)]
        subnet: Vec<String>,
        #[arg(long)]
        gateway: Vec<String>,
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls(ListOpts),
    /// Display detailed information on one or more networks.
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        refs: Vec<String>,
    },
}

/// A network as Docker's `/networks` answers (Docker's `NetworkResource`), the fields `ls` shows.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkResource {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
}

/// `POST /networks/create`'s body (Docker's `NetworkCreateRequest`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    name: String,
    driver: String,
    scope: &'static str,
    attachable: bool,
    internal: bool,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
    #[serde(rename = "IPAM")]
    ipam: Ipam,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    driver: &'static str,
    config: Vec<IpamConfig>,
}

/// `POST /networks/create`'s answer.
#[derive(Deserialize)]
struct Created {
    #[serde(rename = "Id")]
    id: String,
}

/// `network ls` fields for `--format`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkRow {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    driver: String,
    scope: String,
}

impl Row for NetworkRow {
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
    ];
    const SHOWN: usize = 4;

    fn id(&self) -> &str {
        &self.id
    }
}

pub(crate) fn run(c: &Client, cmd: NetworkCmd) -> Printed {
    match cmd {
        NetworkCmd::Create {
            driver,
            attachable,
            internal,
            label,
            subnet,
            gateway,
            opt,
            name,
        } => {
            let config = subnet
                .into_iter()
                .enumerate()
                .map(|(i, subnet)| IpamConfig {
                    subnet,
                    gateway: gateway.get(i).cloned().unwrap_or_default(),
                    ..IpamConfig::default()
                })
                .collect();
            let body = CreateRequest {
                name,
                driver,
                scope: "swarm",
                attachable,
                internal,
                labels: parse_kv_list(&label),
                options: parse_kv_list(&opt),
                ipam: Ipam {
                    driver: "default",
                    config,
                },
            };
            single(
                c.post::<Created, _>("/networks/create", &body)
                    .map(|r| format!("{}\n", r.id))
                    .map_err(String::from),
            )
        }
        NetworkCmd::Ls(opts) => single(ls(c, &opts)),
        NetworkCmd::Inspect { format, refs } => single(
            fetch_each(c, &refs, |r| format!("/networks/{r}?scope=swarm"))
                .map_err(String::from)
                .and_then(|objs| inspect_out(&objs, format.as_deref())),
        ),
        NetworkCmd::Rm { refs } => remove_each(c, &refs, |n| format!("/networks/{n}")),
    }
}

fn ls(c: &Client, opts: &ListOpts) -> Out {
    let q = query_filters(&opts.filter)?;
    let list: Vec<NetworkResource> = c.get(&format!("/networks?filters={q}"))?;
    let mut rows: Vec<NetworkRow> = list
        .into_iter()
        .map(|n| NetworkRow {
            id: short(&n.id),
            name: n.name,
            driver: n.driver,
            scope: n.scope,
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    list_rows(&rows, opts)
}
