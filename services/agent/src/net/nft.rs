//! Writing a task's [`VipTable`] into its network namespace: nftables over
//! netlink (nlink), one transaction that drops the agent's table (if there)
//! and makes it again, so the task never sees half a ruleset.
//!
//! ```text
//! table ip shoal {
//!   map vip0 { typeof numgen inc mod 2 : ip daddr; elements = { 0 : 10.0.1.4, 1 : 10.0.1.5 } }
//!   chain vips {
//!     type nat hook output priority -100; policy accept;
//!     ip daddr 10.0.1.2 dnat to numgen inc mod 2 map @vip0   # two or more tasks
//!     ip daddr 10.0.1.3 dnat to 10.0.1.9                     # one
//!     ip daddr 10.0.1.7 meta l4proto tcp reject with tcp reset # none
//!     ip daddr 10.0.1.7 reject with icmp port-unreachable
//!   }
//! }
//! ```
//!
//! A NAT chain sees only a connection's first packet; conntrack keeps the
//! connection on the task chosen then.

use std::os::fd::AsFd;
use std::path::Path;

use nlink::netlink::nftables::{
    BaseChain, Chain, Expr, Family, LookupExpr, NatAddr, NatExpr, NatHook, NumgenKind, Priority, Register, Rule, Set,
    SetDataType, SetElement, SetKeyType,
};
use nlink::netlink::{Connection, Nftables};

use super::vip::{VipTable, CHAIN, TABLE};

/// ICMP code 3: port unreachable.
const PORT_UNREACHABLE: u8 = 3;
const TCP: u8 = 6;

/// Replaces the agent's table in the namespace at `netns` with `table`.
pub async fn apply(netns: &Path, table: &VipTable) -> Result<(), String> {
    let file = std::fs::File::open(netns).map_err(|e| format!("opening {}: {e}", netns.display()))?;
    let conn = Connection::<Nftables>::new_in(file.as_fd()).map_err(|e| format!("nftables netlink: {e}"))?;
    let chain = Chain::new(TABLE, CHAIN)
        .map_err(|e| e.to_string())?
        .family(Family::Ip)
        .base(BaseChain::nat(NatHook::Output, Priority::DstNat));
    // The agent is the table's only writer (one sandbox at a time), so
    // whether it exists does not change before the batch.
    let exists = conn
        .list_tables_in(Family::Ip)
        .await
        .map_err(|e| format!("nftables: listing tables: {e}"))?
        .iter()
        .any(|t| t.name == TABLE);
    let mut tx = conn.transaction();
    if exists {
        tx = tx.del_table(TABLE, Family::Ip);
    }
    let mut tx = tx.add_table(TABLE, Family::Ip).add_chain(chain);
    for (i, r) in table.rules.iter().enumerate() {
        let rule = || Rule::new(TABLE, CHAIN).family(Family::Ip).match_daddr_v4(r.vip, 32);
        match r.backends.as_slice() {
            [] => {
                tx = tx
                    .add_rule(rule().match_l4proto(TCP).reject_tcp_reset())
                    .add_rule(rule().reject_icmp(PORT_UNREACHABLE));
            }
            [one] => tx = tx.add_rule(rule().dnat(*one, None)),
            many => {
                let name = format!("vip{i}");
                let map = Set::new(TABLE, &name)
                    .family(Family::Ip)
                    .key_type(SetKeyType::Mark)
                    .map(SetDataType::Value(SetKeyType::Ipv4Addr));
                let elements: Vec<SetElement> = many
                    .iter()
                    .enumerate()
                    .map(|(n, addr)| SetElement::mark(n as u32).value(SetElement::ipv4(*addr)))
                    .collect();
                // numgen into R0, looked up in the map into R0, which the
                // NAT expression takes its address from.
                let mut dnat = NatExpr::dnat(Family::Ip);
                dnat.addr = NatAddr::Reg;
                let rule = rule()
                    .expr(Expr::Numgen {
                        dreg: Register::R0,
                        kind: NumgenKind::Incremental,
                        modulus: many.len() as u32,
                        offset: 0,
                    })
                    .expr(LookupExpr::new(name.clone(), Register::R0).dreg(Register::R0))
                    .expr(Expr::Nat(dnat));
                tx = tx.add_set(map.clone()).add_set_elements(&map, &elements).add_rule(rule);
            }
        }
    }
    tx.commit(&conn).await.map_err(|e| format!("nftables: {e}"))
}
