//! Work that runs beside the calling thread for a moment: the audit
//! line's fsync while the caller encrypts, the parse of the config about
//! to be written while the caller syncs it to disk. One thread kept for
//! the whole process takes these jobs in turn, so a write does not pay for
//! starting a thread (tens of microseconds, a sizeable part of a PUT) and
//! never waits for a pool that waiting writers may have filled.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        OnceLock,
        mpsc::{Receiver, Sender, SyncSender, channel, sync_channel},
    },
};

type Job = Box<dyn FnOnce() + Send>;

/// The result of a job given to [`beside`].
pub(crate) struct Beside<T>(Receiver<T>);

impl<T> Beside<T> {
    /// Waits for the job; `None` when it panicked or could not run.
    pub(crate) fn join(self) -> Option<T> {
        self.0.recv().ok()
    }
}

/// Runs `job` on the helper thread (started on first use). Jobs run one
/// after the other, so a job must never wait for another job (it would
/// wait for itself): they are short pieces of CPU or disk work.
pub(crate) fn beside<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Beside<T> {
    let (tx, rx): (SyncSender<T>, _) = sync_channel(1);
    let job: Job = Box::new(move || {
        // A panic drops `tx`: the waiter gets `None`, the helper lives on.
        if let Ok(result) = catch_unwind(AssertUnwindSafe(job)) {
            let _ = tx.send(result);
        }
    });
    if let Some(helper) = helper() {
        // A send fails only when the helper is gone; the job (and its
        // sender) is dropped with the error and the waiter gets `None`.
        let _ = helper.send(job);
    }
    Beside(rx)
}

/// The helper's queue; `None` when its thread could not be started.
fn helper() -> Option<&'static Sender<Job>> {
    static HELPER: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("milady-beside".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_and_a_panic_gives_none() {
        assert_eq!(beside(|| 6 * 7).join(), Some(42));
        let panicked: Beside<u8> = beside(|| panic!("job failed"));
        assert_eq!(panicked.join(), None);
        assert_eq!(beside(|| "still running").join(), Some("still running"));
    }
}
