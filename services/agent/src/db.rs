//! The agent's task database (sled, in its data dir): every task it was
//! given, what it last observed, and what runs it: a process (PID plus the
//! process start time, so a restarted agent re-adopts exactly its own
//! processes and never a recycled PID) or a container (its ID; containers
//! are also found again by their labels).

use std::path::Path;

use crate::controller::TaskCtl;

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

    pub fn load(&self) -> anyhow::Result<Vec<TaskCtl>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            match serde_json::from_slice::<TaskCtl>(&v) {
                Ok(t) => out.push(t),
                Err(e) => tracing::warn!(error = %e, "agent db: unreadable task skipped"),
            }
        }
        Ok(out)
    }

    /// One task as last written (for readers beside the agent actor, e.g. logs).
    pub fn get(&self, id: &str) -> Option<TaskCtl> {
        let v = self.tree.get(id.as_bytes()).ok()??;
        serde_json::from_slice(&v).ok()
    }

    pub fn put(&self, t: &TaskCtl) {
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
    use crate::controller::Phase;
    use crate::exec::{Handle, ProcessId};
    use shoal_shared::model::{Task, TaskStatus};

    #[test]
    fn tasks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = TaskCtl {
            task: Task::new("t1", "s1", Default::default()),
            status: TaskStatus::default(),
            handle: Some(Handle::Process(ProcessId { pid: 42, start_time: 7 })),
            phase: Some(Phase::Running),
            unassigned: false,
            stop_sent: false,
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
        // A record written before containers and phases existed still reads.
        let mut old = serde_json::to_value(&t).unwrap();
        let handle = old.as_object_mut().unwrap().remove("handle").unwrap();
        old.as_object_mut().unwrap().remove("phase");
        old["process"] = handle;
        old["stopping"] = serde_json::json!(false);
        let read = serde_json::from_value::<TaskCtl>(old).unwrap();
        assert_eq!((read.handle.clone(), read.phase()), (t.handle.clone(), Phase::Running));
        db.remove("t1");
        assert!(db.load().unwrap().is_empty());
    }
}
