//! The agent's session with the acting dispatcher, as pure decisions (like
//! the dispatcher's own `logic.rs`): when to register and heartbeat, which
//! assignment messages to apply and when to ask for the full set again
//! (a gap in `sequence`), and the outbox of status reports, kept in order
//! and sent again when a send fails. Time is an input; the actor performs
//! the requests.

use std::time::{Duration, Instant};

use shoal_shared::dispatch::{AssignmentKind, Assignments, StatusUpdate};
use shoal_shared::model::DEFAULTS;

/// What to do with an assignment message.
#[derive(Debug, PartialEq)]
pub enum Apply {
    /// The full set: tasks not in it are no longer assigned.
    Full(Assignments),
    /// The next increment.
    Increment(Assignments),
    /// Not for this session, or already seen.
    Ignore,
    /// A gap: ask for the full set.
    Resync,
}

/// What the session wants sent now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Register,
    Heartbeat { session_id: String },
}

#[derive(Debug)]
pub struct Session {
    id: Option<String>,
    last_seq: Option<u64>,
    period: Duration,
    last_heartbeat: Option<Instant>,
    registering: bool,
    syncing: bool,
    sending: bool,
    outbox: Vec<StatusUpdate>,
    /// The dispatcher's sequence at the last heartbeat, when this agent was behind it.
    behind: Option<u64>,
    /// The highest increment that could not be applied (it came before the
    /// full set, or after a gap): a full set older than it is stale.
    ahead: Option<u64>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            id: None,
            last_seq: None,
            period: DEFAULTS.heartbeat_period,
            last_heartbeat: None,
            registering: false,
            syncing: false,
            sending: false,
            outbox: Vec::new(),
            behind: None,
            ahead: None,
        }
    }
}

impl Session {
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// On a tick: register when there is no session, heartbeat when a period has passed.
    pub fn due(&mut self, now: Instant) -> Option<Due> {
        match &self.id {
            None if !self.registering => {
                self.registering = true;
                Some(Due::Register)
            }
            None => None,
            Some(s) => {
                if self.last_heartbeat.is_none_or(|t| now.duration_since(t) >= self.period) {
                    self.last_heartbeat = Some(now);
                    Some(Due::Heartbeat { session_id: s.clone() })
                } else {
                    None
                }
            }
        }
    }

    /// The dispatcher accepted the registration: a new session, whose full set is to be fetched.
    pub fn registered(&mut self, session_id: String, period: Duration, now: Instant) {
        self.registering = false;
        self.behind = None;
        self.ahead = None;
        self.id = Some(session_id);
        self.period = period;
        self.last_seq = None;
        self.last_heartbeat = Some(now);
    }

    /// The registration was not answered (or refused): try again on a later tick.
    pub fn register_failed(&mut self) {
        self.registering = false;
    }

    /// A heartbeat answer: the period, and the last assignment sequence the
    /// dispatcher sent. Whether to ask for the full set: this agent is still
    /// below the sequence the previous answer named, so a message was lost
    /// (an increment in flight is never mistaken for one: it has a whole
    /// heartbeat period to arrive).
    pub fn heartbeat_ok(&mut self, period: Duration, sequence: u64) -> bool {
        self.period = period;
        let mine = self.last_seq.unwrap_or(0);
        let lost = self.behind.is_some_and(|was| mine < was);
        self.behind = (sequence > mine && !lost).then_some(sequence);
        lost
    }

    /// The dispatcher does not know `session_id`: register again, unless a
    /// newer session replaced it meanwhile.
    pub fn unknown(&mut self, session_id: &str) {
        if self.id.as_deref() == Some(session_id) {
            self.id = None;
            self.last_seq = None;
        }
    }

    /// A full set is to be fetched: the session to ask with, unless one is in flight.
    pub fn begin_sync(&mut self) -> Option<String> {
        let id = self.id.clone()?;
        if self.syncing {
            return None;
        }
        self.syncing = true;
        Some(id)
    }

    pub fn sync_done(&mut self) {
        self.syncing = false;
    }

    /// Decides what an assignment message means.
    pub fn assignments(&mut self, a: Assignments) -> Apply {
        if self.id.as_deref() != Some(a.session_id.as_str()) {
            return Apply::Ignore;
        }
        match (a.kind, self.last_seq) {
            (AssignmentKind::Full, last) if last.is_none_or(|l| a.sequence > l) => {
                self.last_seq = Some(a.sequence);
                Apply::Full(a)
            }
            (AssignmentKind::Full, _) => Apply::Ignore,
            (AssignmentKind::Incremental, Some(l)) if a.sequence == l + 1 => {
                self.last_seq = Some(a.sequence);
                Apply::Increment(a)
            }
            (AssignmentKind::Incremental, Some(l)) if a.sequence <= l => Apply::Ignore,
            (AssignmentKind::Incremental, _) => {
                self.ahead = self.ahead.max(Some(a.sequence));
                Apply::Resync
            }
        }
    }

    /// After a full set was applied: whether an increment newer than it
    /// came (and was dropped) while it was being fetched, so the set is
    /// already stale and must be fetched again. A gap noticed while a fetch
    /// is in flight asks for nothing itself (one fetch at a time); without
    /// this, the increments that raced a fetch were lost until a heartbeat
    /// noticed.
    pub fn full_is_stale(&mut self) -> bool {
        let stale = self.ahead.is_some_and(|h| self.last_seq.is_none_or(|l| l < h));
        if !stale {
            self.ahead = None;
        }
        stale
    }

    pub fn queue(&mut self, update: StatusUpdate) {
        self.outbox.push(update);
    }

    /// The reports to send now, with the session to send them in.
    pub fn take_reports(&mut self) -> Option<(String, Vec<StatusUpdate>)> {
        if self.sending || self.outbox.is_empty() {
            return None;
        }
        let id = self.id.clone()?;
        self.sending = true;
        Some((id, std::mem::take(&mut self.outbox)))
    }

    /// The send of `updates` ended: on failure they go back in front of
    /// what was queued meanwhile, so the order is kept.
    pub fn reports_sent(&mut self, ok: bool, mut updates: Vec<StatusUpdate>) {
        self.sending = false;
        if !ok {
            updates.append(&mut self.outbox);
            self.outbox = updates;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::model::TaskStatus;

    fn assignments(session: &str, kind: AssignmentKind, sequence: u64) -> Assignments {
        Assignments {
            session_id: session.into(),
            sequence,
            kind,
            tasks: Vec::new(),
            removed: Vec::new(),
            traces: Default::default(),
            secrets: Vec::new(),
            configs: Vec::new(),
        }
    }

    fn update(id: &str) -> StatusUpdate {
        StatusUpdate {
            task_id: id.into(),
            status: TaskStatus::default(),
            trace: None,
        }
    }

    fn ids(u: &[StatusUpdate]) -> Vec<&str> {
        u.iter().map(|u| u.task_id.as_str()).collect()
    }

    #[test]
    fn registers_once_at_a_time_then_heartbeats_every_period() {
        let t0 = Instant::now();
        let mut s = Session::default();
        assert_eq!(s.due(t0), Some(Due::Register));
        assert_eq!(s.due(t0), None, "one registration in flight");
        s.register_failed();
        assert_eq!(s.due(t0), Some(Due::Register));
        s.registered("s1".into(), Duration::from_secs(2), t0);
        assert_eq!(s.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            s.due(t0 + Duration::from_secs(2)),
            Some(Due::Heartbeat {
                session_id: "s1".into()
            })
        );
        s.unknown("old");
        assert_eq!(s.id(), Some("s1"), "an answer about an older session changes nothing");
        s.unknown("s1");
        assert_eq!(s.due(t0 + Duration::from_secs(3)), Some(Due::Register));
    }

    #[test]
    fn assignments_apply_in_sequence_and_a_gap_asks_for_the_full_set() {
        let mut s = Session::default();
        let t0 = Instant::now();
        s.due(t0);
        s.registered("s1".into(), Duration::from_secs(5), t0);
        assert_eq!(s.assignments(assignments("s0", AssignmentKind::Full, 9)), Apply::Ignore);
        assert_eq!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 1)),
            Apply::Resync,
            "an increment before any full set"
        );
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Full, 4)),
            Apply::Full(_)
        ));
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 5)),
            Apply::Increment(_)
        ));
        assert_eq!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 5)),
            Apply::Ignore
        );
        assert_eq!(s.assignments(assignments("s1", AssignmentKind::Full, 5)), Apply::Ignore);
        assert_eq!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 7)),
            Apply::Resync
        );
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Full, 8)),
            Apply::Full(_)
        ));
        // One sync at a time.
        assert_eq!(s.begin_sync().as_deref(), Some("s1"));
        assert_eq!(s.begin_sync(), None);
        s.sync_done();
        assert_eq!(s.begin_sync().as_deref(), Some("s1"));
    }

    #[test]
    fn increments_that_race_the_full_set_make_it_stale() {
        let t0 = Instant::now();
        let mut s = Session::default();
        s.due(t0);
        s.registered("s1".into(), Duration::from_secs(5), t0);
        assert_eq!(
            s.begin_sync().as_deref(),
            Some("s1"),
            "registration fetches the full set"
        );
        // The dispatcher answered with sequence 1, then sent increments 2 and
        // 3; both arrive before the answer (another subscription).
        assert_eq!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 2)),
            Apply::Resync
        );
        assert_eq!(s.begin_sync(), None, "a fetch is in flight");
        assert_eq!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 3)),
            Apply::Resync
        );
        s.sync_done();
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Full, 1)),
            Apply::Full(_)
        ));
        assert!(s.full_is_stale(), "increments 2 and 3 were dropped: fetch again");
        assert_eq!(s.begin_sync().as_deref(), Some("s1"));
        s.sync_done();
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Full, 4)),
            Apply::Full(_)
        ));
        assert!(!s.full_is_stale(), "the new set is newer than every dropped increment");
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 5)),
            Apply::Increment(_)
        ));
        assert!(!s.full_is_stale(), "forgotten once caught up");
    }

    #[test]
    fn a_lost_last_increment_is_noticed_at_the_next_heartbeat() {
        let t0 = Instant::now();
        let mut s = Session::default();
        s.due(t0);
        s.registered("s1".into(), Duration::from_secs(1), t0);
        let p = Duration::from_secs(1);
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Full, 1)),
            Apply::Full(_)
        ));
        assert!(!s.heartbeat_ok(p, 1), "up to date");
        // Increment 2 is in flight when the heartbeat answers: not yet a loss.
        assert!(!s.heartbeat_ok(p, 2));
        assert!(matches!(
            s.assignments(assignments("s1", AssignmentKind::Incremental, 2)),
            Apply::Increment(_)
        ));
        assert!(!s.heartbeat_ok(p, 2), "it arrived");
        // Increment 3 is lost and nothing follows it.
        assert!(!s.heartbeat_ok(p, 3));
        assert!(
            s.heartbeat_ok(p, 3),
            "still behind a period later: ask for the full set"
        );
        assert!(!s.heartbeat_ok(p, 3), "asked once, then a period to answer");
    }

    #[test]
    fn failed_sends_keep_the_order_of_reports() {
        let mut s = Session::default();
        s.queue(update("a"));
        assert!(s.take_reports().is_none(), "no session, nothing sent");
        let t0 = Instant::now();
        s.due(t0);
        s.registered("s1".into(), Duration::from_secs(5), t0);
        s.queue(update("b"));
        let (sid, first) = s.take_reports().unwrap();
        assert_eq!((sid.as_str(), ids(&first)), ("s1", vec!["a", "b"]));
        s.queue(update("c"));
        assert!(s.take_reports().is_none(), "one send at a time");
        s.reports_sent(false, first);
        let (_, again) = s.take_reports().unwrap();
        assert_eq!(ids(&again), ["a", "b", "c"]);
        s.reports_sent(true, again);
        assert_eq!(s.queued(), 0);
    }
}
