//! The agent's task database (sled, in its data dir): every task it was
//! given, what it last observed, and what runs it: a process (PID plus the
//! process start time, so a restarted agent re-adopts exactly its own
//! processes and never a recycled PID) or a container (its ID; containers
//! are also found again by their labels).

use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_shared::model::{Task, TaskStatus};

use crate::executor::Handle;

/// One task as the agent keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalTask {
    /// The latest assignment.
    pub task: Task,
    /// What the agent observed last (reported, or queued to report).
    pub status: TaskStatus,
    /// The process or container, from when it exists until it has ended.
    #[serde(default, alias = "process")]
    pub handle: Option<Handle>,
    /// Whether the agent asked the task to stop (its end is then `shutdown`).
    #[serde(default)]
    pub stopping: bool,
    /// No longer assigned: forget it once its process or container has ended.
    #[serde(default)]
    pub unassigned: bool,
}

/// A process identity: PID and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

pub struct TaskDb {
    tree: sled::Tree,
    db: sled::Db,
}

impl TaskDb {
    pub fn open(dir: &Path) -> anyhow::Result<TaskDb> {
        let db = sled::open(dir.join("agent.db"))?;
        let tree = db.open_tree("tasks")?;
        Ok(TaskDb { tree, db })
    }

    pub fn load(&self) -> anyhow::Result<Vec<LocalTask>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            match serde_json::from_slice::<LocalTask>(&v) {
                Ok(t) => out.push(t),
                Err(e) => tracing::warn!(error = %e, "agent db: unreadable task skipped"),
            }
        }
        Ok(out)
    }

    pub fn put(&self, t: &LocalTask) {
        let bytes = serde_json::to_vec(t).expect("local task encodes");
        if let Err(e) = self.tree.insert(t.task.meta.id.as_bytes(), bytes) {
            tracing::error!(error = %e, "agent db: write failed");
        }
    }

    pub fn remove(&self, id: &str) {
        if let Err(e) = self.tree.remove(id.as_bytes()) {
            tracing::error!(error = %e, "agent db: delete failed");
        }
    }

    /// Makes the writes so far durable.
    pub fn flush(&self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "agent db: flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = LocalTask {
            task: Task::new("t1", "s1", Default::default()),
            status: TaskStatus::default(),
            handle: Some(Handle::Process(ProcessId { pid: 42, start_time: 7 })),
            stopping: false,
            unassigned: false,
        };
        {
            let db = TaskDb::open(dir.path()).unwrap();
            db.put(&t);
            db.flush();
        }
        let db = TaskDb::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap(), vec![t.clone()]);
        let mut c = t.clone();
        c.handle = Some(Handle::Container {
            container_id: "abc".into(),
        });
        db.put(&c);
        assert_eq!(db.load().unwrap(), vec![c]);
        // A record written before containers existed still reads.
        let mut old = serde_json::to_value(&t).unwrap();
        let handle = old.as_object_mut().unwrap().remove("handle").unwrap();
        old["process"] = handle;
        assert_eq!(serde_json::from_value::<LocalTask>(old).unwrap(), t);
        db.remove("t1");
        assert!(db.load().unwrap().is_empty());
    }
}
