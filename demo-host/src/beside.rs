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
        mpsc::{Receiver, SendError, Sender, SyncSender, channel, sync_channel},
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
/// wait for itself): they are short pieces of CPU or disk work. Without a
/// helper (its thread could not be started) the job runs here and now:
/// slower, never lost.
pub(crate) fn beside<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Beside<T> {
    run_on(helper(), job)
}

/// [`beside`] with the helper's queue given: `None`, or a queue nobody
/// takes from, runs `job` on the calling thread.
fn run_on<T: Send + 'static>(
    helper: Option<&Sender<Job>>,
    job: impl FnOnce() -> T + Send + 'static,
) -> Beside<T> {
    // Room for the one result: the job never blocks on handing it over,
    // on whichever thread it runs.
    let (tx, rx): (SyncSender<T>, _) = sync_channel(1);
    let job: Job = Box::new(move || {
        // A panic drops `tx`: the waiter gets `None`, the helper lives on.
        if let Ok(result) = catch_unwind(AssertUnwindSafe(job)) {
            let _ = tx.send(result);
        }
    });
    match helper {
        Some(helper) => {
            if let Err(SendError(job)) = helper.send(job) {
                job();
            }
        }
        None => job(),
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

    #[test]
    fn without_a_helper_jobs_run_on_the_caller() {
        let caller = std::thread::current().id();
        let ran = run_on(None, move || std::thread::current().id() == caller);
        assert_eq!(ran.join(), Some(true));
        // A queue whose receiver is gone (the helper thread ended).
        let (gone, receiver) = channel::<Job>();
        drop(receiver);
        let ran = run_on(Some(&gone), move || std::thread::current().id() == caller);
        assert_eq!(ran.join(), Some(true));
        let panicked: Beside<()> = run_on(None, || panic!("job failed"));
        assert_eq!(panicked.join(), None);
    }
}
