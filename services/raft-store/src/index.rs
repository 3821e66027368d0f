//! Secondary indexes of the state machine, kept in memory: per kind, name →
//! ids and (field, value) → ids, so that a list by name or by a field (a
//! service's tasks, a node's tasks) reads only the records it returns instead
//! of every record of the kind.
//!
//! The indexes are derived from the records alone: they are built from them
//! when the state machine opens or installs a snapshot, and fed every change
//! it applies after that, so every replica holds the same indexes. They do not
//! depend on how the records are stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use shoal_shared::store::{Action, Change, Kind, ListFilter, Record};

/// What one record is indexed under (to unindex it when it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Indexed {
    name: Option<String>,
    fields: BTreeMap<String, String>,
}

type Ids = BTreeSet<Arc<str>>;

/// The indexes of one kind.
#[derive(Debug, Default, PartialEq, Eq)]
struct KindIndex {
    records: HashMap<Arc<str>, Indexed>,
    names: HashMap<String, Ids>,
    /// field → value → ids.
    fields: HashMap<String, HashMap<String, Ids>>,
}

/// Name and field indexes of every kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Indexes {
    kinds: HashMap<Kind, KindIndex>,
}

impl Indexes {
    /// Indexes of these records.
    pub fn build<'a>(records: impl IntoIterator<Item = &'a Record>) -> Indexes {
        let mut ix = Indexes::default();
        for r in records {
            ix.put(r);
        }
        ix
    }

    /// Follows one applied change.
    pub fn apply(&mut self, change: &Change) {
        match change.action {
            Action::Create | Action::Update => self.put(&change.record),
            Action::Delete => self.remove(change.record.kind, &change.record.id),
        }
    }

    /// Indexes `r` (replacing what it was indexed under before).
    pub fn put(&mut self, r: &Record) {
        let new = Indexed {
            name: r.name.clone(),
            fields: r.fields.clone(),
        };
        let k = self.kinds.entry(r.kind).or_default();
        if k.records.get(r.id.as_str()) == Some(&new) {
            return;
        }
        k.unindex(&r.id);
        let id: Arc<str> = Arc::from(r.id.as_str());
        if let Some(n) = &new.name {
            k.names.entry(n.clone()).or_default().insert(id.clone());
        }
        for (f, v) in &new.fields {
            k.fields
                .entry(f.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(id.clone());
        }
        k.records.insert(id, new);
    }

    pub fn remove(&mut self, kind: Kind, id: &str) {
        if let Some(k) = self.kinds.get_mut(&kind) {
            k.unindex(id);
            if k.records.is_empty() {
                self.kinds.remove(&kind);
            }
        }
    }

    /// Number of records indexed.
    pub fn len(&self) -> usize {
        self.kinds.values().map(|k| k.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids (sorted) of the records of `kind` that may pass `filter`, or
    /// `None` when the filter has no indexed criterion (names, fields), so
    /// every record of the kind may pass. The caller still applies the filter.
    pub fn candidates(&self, kind: Kind, filter: &ListFilter) -> Option<Vec<Arc<str>>> {
        if filter.names.is_empty() && filter.fields.is_empty() {
            return None;
        }
        let Some(k) = self.kinds.get(&kind) else {
            return Some(Vec::new());
        };
        // One set of ids per criterion; a criterion with several values is their union.
        let mut sets: Vec<Vec<&Ids>> = Vec::new();
        if !filter.names.is_empty() {
            sets.push(filter.names.iter().filter_map(|n| k.names.get(n)).collect());
        }
        for (f, values) in &filter.fields {
            let by_value = k.fields.get(f);
            sets.push(values.iter().filter_map(|v| by_value.and_then(|m| m.get(v))).collect());
        }
        let size = |s: &Vec<&Ids>| s.iter().map(|ids| ids.len()).sum::<usize>();
        sets.sort_by_key(size);
        let (first, rest) = sets.split_first()?;
        let mut ids: BTreeSet<&Arc<str>> = first.iter().flat_map(|s| s.iter()).collect();
        for other in rest {
            ids.retain(|id| other.iter().any(|s| s.contains(*id)));
        }
        Some(ids.into_iter().cloned().collect())
    }
}

impl KindIndex {
    fn unindex(&mut self, id: &str) {
        let Some((id, old)) = self.records.remove_entry(id) else {
            return;
        };
        if let Some(n) = &old.name {
            if let Some(ids) = self.names.get_mut(n) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.names.remove(n);
                }
            }
        }
        for (f, v) in &old.fields {
            let Some(by_value) = self.fields.get_mut(f) else {
                continue;
            };
            if let Some(ids) = by_value.get_mut(v) {
                ids.remove(&id);
                if ids.is_empty() {
                    by_value.remove(v);
                }
            }
            if by_value.is_empty() {
                self.fields.remove(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(kind: Kind, id: &str, name: Option<&str>, fields: &[(&str, &str)]) -> Record {
        let mut r = Record::blob(id, json!({}));
        r.kind = kind;
        r.name = name.map(String::from);
        r.fields = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r
    }

    fn ids(v: Option<Vec<Arc<str>>>) -> Vec<String> {
        v.expect("indexed").iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_and_fields_find_their_records_and_follow_changes() {
        let mut ix = Indexes::default();
        ix.put(&rec(Kind::Service, "s1", Some("web"), &[]));
        ix.put(&rec(Kind::Service, "s2", Some("db"), &[]));
        ix.put(&rec(Kind::Task, "t1", None, &[("service", "s1"), ("node", "n1")]));
        ix.put(&rec(Kind::Task, "t2", None, &[("service", "s1"), ("node", "n2")]));
        ix.put(&rec(Kind::Task, "t3", None, &[("service", "s2"), ("node", "n1")]));
        let f = |names: &[&str], fields: &[(&str, &str)]| {
            let mut f = ListFilter::default();
            for n in names {
                f = f.name(*n);
            }
            for (k, v) in fields {
                f = f.field(*k, *v);
            }
            f
        };
        assert_eq!(ix.candidates(Kind::Service, &ListFilter::default()), None);
        assert_eq!(ids(ix.candidates(Kind::Service, &f(&["web"], &[]))), ["s1"]);
        assert_eq!(ids(ix.candidates(Kind::Service, &f(&["web", "db"], &[]))), ["s1", "s2"]);
        assert_eq!(ids(ix.candidates(Kind::Task, &f(&["web"], &[]))), Vec::<String>::new());
        assert_eq!(
            ids(ix.candidates(Kind::Task, &f(&[], &[("service", "s1")]))),
            ["t1", "t2"]
        );
        assert_eq!(
            ids(ix.candidates(Kind::Task, &f(&[], &[("service", "s1"), ("node", "n1")]))),
            ["t1"]
        );
        assert_eq!(
            ids(ix.candidates(Kind::Task, &f(&[], &[("node", "n1"), ("node", "n2")]))),
            ["t1", "t2", "t3"]
        );
        assert_eq!(
            ids(ix.candidates(Kind::Node, &f(&[], &[("role", "x")]))),
            Vec::<String>::new()
        );

        // A rename and a move are followed; the old entries go.
        ix.apply(&Change {
            action: Action::Update,
            record: rec(Kind::Service, "s1", Some("front"), &[]),
            trace: None,
        });
        ix.apply(&Change {
            action: Action::Update,
            record: rec(Kind::Task, "t1", None, &[("service", "s1"), ("node", "n2")]),
            trace: None,
        });
        assert!(ids(ix.candidates(Kind::Service, &f(&["web"], &[]))).is_empty());
        assert_eq!(ids(ix.candidates(Kind::Service, &f(&["front"], &[]))), ["s1"]);
        assert_eq!(ids(ix.candidates(Kind::Task, &f(&[], &[("node", "n1")]))), ["t3"]);
        ix.apply(&Change {
            action: Action::Delete,
            record: rec(Kind::Task, "t3", None, &[("service", "s2"), ("node", "n1")]),
            trace: None,
        });
        assert!(ids(ix.candidates(Kind::Task, &f(&[], &[("node", "n1")]))).is_empty());
        assert_eq!(ix.len(), 4);

        // Same as indexes built from the records as they now are.
        let now = [
            rec(Kind::Service, "s1", Some("front"), &[]),
            rec(Kind::Service, "s2", Some("db"), &[]),
            rec(Kind::Task, "t1", None, &[("service", "s1"), ("node", "n2")]),
            rec(Kind::Task, "t2", None, &[("service", "s1"), ("node", "n2")]),
        ];
        assert_eq!(ix, Indexes::build(&now));
        for r in &now {
            ix.remove(r.kind, &r.id);
        }
        assert_eq!(ix, Indexes::default(), "nothing is left behind");
    }
}
