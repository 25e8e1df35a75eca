//! Running a synchronous call into a plugin library within a deadline.
//!
//! A call into native code cannot be interrupted from outside. Each call
//! that may block (opening a library, which runs its constructors; its
//! `manifest`, `openapi_json` and `init`) runs on a thread of its own, and
//! the host waits for it at most the plugin timeout. A call that overruns
//! is abandoned: its thread keeps running (or stays blocked) for the life
//! of the process, and the host goes on without that plugin.

use std::{sync::mpsc, time::Duration};

/// Why a bounded call gave no result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Overrun {
    /// It was still running when the deadline passed.
    #[error("did not finish in time")]
    TimedOut,
    /// Its thread ended without a result (a panic that escaped).
    #[error("its thread ended without a result")]
    Died,
    /// No thread could be started for it.
    #[error("cannot start a thread: {0}")]
    NoThread(std::io::Error),
}

/// Runs `call` on a new thread named `plugin-<what>` and waits at most
/// `deadline` for its result.
pub(crate) fn run_within<T, F>(what: &str, deadline: Duration, call: F) -> Result<T, Overrun>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("plugin-{what}"))
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(Overrun::NoThread)?;
    rx.recv_timeout(deadline).map_err(|e| match e {
        mpsc::RecvTimeoutError::Timeout => Overrun::TimedOut,
        mpsc::RecvTimeoutError::Disconnected => Overrun::Died,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_time_gives_its_result() {
        let r = run_within("test", Duration::from_secs(10), || 7);
        assert_eq!(r.ok(), Some(7));
    }

    #[test]
    fn a_call_that_hangs_is_abandoned_at_the_deadline() {
        let (_keep, hold) = mpsc::channel::<()>();
        let r = run_within("test", Duration::from_millis(50), move || {
            // Blocks until the test ends (the sender is dropped then).
            let _ = hold.recv();
        });
        assert!(matches!(r, Err(Overrun::TimedOut)), "{r:?}");
    }

    #[test]
    fn a_call_that_panics_is_reported_as_died() {
        let r: Result<(), _> = run_within("test", Duration::from_secs(10), || {
            std::panic::resume_unwind(Box::new("quiet panic"))
        });
        assert!(matches!(r, Err(Overrun::Died)), "{r:?}");
    }
}
