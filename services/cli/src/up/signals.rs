//! Stop signals for `shoal up`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SIGINT, SIGTERM and SIGHUP, counted by handlers (tokio's, on a small
/// thread of their own). Handlers, unlike a blocked mask, are not inherited
/// by the children.
pub(super) struct StopSignals {
    count: Arc<AtomicU32>,
    seen: u32,
}

impl StopSignals {
    pub(super) fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered before returning, so no signal between here and the loop is lost.
        let (mut int, mut term, mut hup) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })?;
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        std::thread::Builder::new()
            .name("up-signals".into())
            .spawn(move || loop {
                rt.block_on(async {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                });
                c.fetch_add(1, Ordering::SeqCst);
            })?;
        Ok(StopSignals { count, seen: 0 })
    }

    /// Whether a stop signal arrived since the last call.
    pub(super) fn take(&mut self) -> bool {
        let now = self.count.load(Ordering::SeqCst);
        let new = now != self.seen;
        self.seen = now;
        new
    }

    /// Sleeps up to `timeout`, waking early for a new stop signal.
    pub(super) fn wait(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.count.load(Ordering::SeqCst) == self.seen {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}
