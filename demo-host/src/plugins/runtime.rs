//! The runtime plugin code runs on, apart from the host's own.
//!
//! A plugin's request future is polled here, not on the workers that serve
//! the host's routes: a plugin that blocks its thread inside `poll` (a
//! synchronous call, a busy loop) cannot be cancelled in-process, but it
//! only holds one of these workers; the host's routes keep answering and
//! the request itself gets its 504 from the host's side when the request
//! timeout runs out. The same runtime runs the blocking work of host
//! services (`update_env`'s durable write), so a service's future works
//! from any thread, inside or outside a runtime, and before the host's
//! server runtime exists (a plugin's `init` may wait on it).
//!
//! One runtime per process, created on first use and never shut down:
//! plugin libraries are never unloaded either.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// The plugin runtime could not be started (no threads could be created).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(String);

/// A handle to the plugin runtime, starting it on first use.
pub(crate) fn plugin_runtime() -> Result<Handle, RuntimeError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let workers = std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
                .max(2);
            Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("plugin-worker")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
        .map_err(|e| RuntimeError(e.clone()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::plugin_runtime;

    #[test]
    fn work_spawned_from_a_plain_thread_runs_on_named_workers() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let handle = plugin_runtime().expect("runtime");
            // No runtime on this thread: spawning needs only the handle.
            handle.spawn(async move {
                let name = std::thread::current().name().map(str::to_owned);
                let _ = tx.send(name);
            });
        });
        let name = rx.recv_timeout(Duration::from_secs(10)).expect("ran");
        assert_eq!(name.as_deref(), Some("plugin-worker"));
    }
}
