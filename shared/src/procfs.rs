//! What Linux's `/proc` says about processes, read in one place: the agent
//! (process executor), `shoal up` (its children and leftovers) and the tests
//! all look at the same few fields of `/proc/<pid>/stat`.

/// The fields of `/proc/<pid>/stat` shoal uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// One letter: `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    /// CPU time in clock ticks, in user and kernel mode.
    pub utime: u64,
    pub stime: u64,
    /// When the process started, in clock ticks since boot (with the PID,
    /// it names one process even after the PID is reused).
    pub start_time: u64,
}

impl Stat {
    /// Reads `/proc/<pid>/stat`; `None` if the process is gone or the line is
    /// not what Linux writes.
    pub fn read(pid: i32) -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Parses a stat line. The command (field 2) may hold spaces and
    /// parentheses, so the fields are counted from after its last `)`.
    pub fn parse(line: &str) -> Option<Stat> {
        let rest = &line[line.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i)?.parse().ok();
        Some(Stat {
            state: f.first()?.chars().next()?,
            ppid: num(1)? as i32,
            pgid: num(2)? as i32,
            utime: num(11)?,
            stime: num(12)?,
            start_time: num(19)?,
        })
    }

    pub fn zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// The PIDs /proc lists (processes come and go while it is read).
pub fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The environment a process was started with (`/proc/<pid>/environ`), as
/// `KEY=value` strings; empty if the process is gone or unreadable.
pub fn environ(pid: i32) -> Vec<String> {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// The value of `key` in a process's start environment.
pub fn env_var(pid: i32, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    environ(pid)
        .into_iter()
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_string))
}

/// This host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Total memory from `/proc/meminfo`, in bytes (0 when unknown).
pub fn mem_total_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<i64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 7 3 0 0 20 0 1 0 98765 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = Stat::parse(line).unwrap();
        assert_eq!((s.state, s.ppid, s.pgid), ('S', 1, 4242));
        assert_eq!((s.utime, s.stime, s.start_time), (7, 3, 98765));
        assert!(!s.zombie());
        assert!(Stat::parse("4242 (x) Z 1").is_none(), "a cut line is refused");
    }

    #[test]
    fn this_process_is_listed_and_read() {
        let me = std::process::id() as i32;
        assert!(pids().contains(&me));
        let s = Stat::read(me).unwrap();
        assert_eq!(s.ppid, parent_from_status());
        assert!(s.start_time > 0);
        assert!(std::env::var("PATH").is_ok_and(|p| env_var(me, "PATH") == Some(p)));
        assert!(env_var(me, "SHOAL_NO_SUCH_VARIABLE").is_none());
        assert!(mem_total_bytes() > 0);
        assert!(!hostname().is_empty());
    }

    fn parent_from_status() -> i32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("PPid:")).unwrap();
        line["PPid:".len()..].trim().parse().unwrap()
    }
}
