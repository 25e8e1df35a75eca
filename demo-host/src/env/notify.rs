//! Who hears about applied changes of the runtime environment (SPEC §6).
//!
//! The runtime environment announces every change it has applied, after
//! the new snapshot is in place, to one listener: the host's change
//! notifier (`plugins::changes`), which tells the plugins that use a
//! changed key and collects their acknowledgements. The environment knows
//! nothing of plugins; it only says which keys changed, at which versions,
//! and where the change came from, and it asks the listener for the
//! restart plan of a change it applied.

use std::{
    collections::BTreeSet,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use host_api::PlanEntry;

/// Where an applied change came from, as plugins are told
/// (`EnvChangeNotice::origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeOrigin {
    /// A host service call: this host's API (`PUT /api/secrets`) or a
    /// plugin's own update.
    Api,
    /// The shared secret store (SPEC §9): another host's write, followed.
    Store,
}

impl ChangeOrigin {
    /// The name plugins see.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Store => "store",
        }
    }
}

/// One applied change: the keys that changed, in one published snapshot.
///
/// Updates committed together (`env::runtime`'s group commit) publish one
/// snapshot: their versions are `first_version..=version`, and `keys` is
/// the union of their keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppliedChange {
    /// The version of the first update in the snapshot.
    pub(crate) first_version: u64,
    /// The version of the snapshot (its last update).
    pub(crate) version: u64,
    /// Every key set or cleared, sorted, without values.
    pub(crate) keys: BTreeSet<String>,
    /// Where the change came from.
    pub(crate) origin: ChangeOrigin,
}

/// The restart plan of one update, once the plugins have answered.
pub(crate) type PlanFuture = Pin<Box<dyn Future<Output = Vec<PlanEntry>> + Send + 'static>>;

/// Hears about every applied change.
pub(crate) trait ChangeListener: Send + Sync {
    /// Called after the snapshot holding `change` was published, on the
    /// thread that wrote it: start the work, do not wait for it.
    fn applied(&self, change: AppliedChange);

    /// The restart plan of the update that produced `version`, for its
    /// `keys`: which enabled plugins use them, and whether each took the
    /// change live. Resolves once the plugins told of that change have
    /// answered or run out of time.
    fn plan(&self, version: u64, keys: BTreeSet<String>) -> PlanFuture;
}

/// The one listener of a runtime environment, set once when the host is
/// assembled.
#[derive(Default)]
pub(crate) struct Listener(OnceLock<Arc<dyn ChangeListener>>);

impl Listener {
    /// Sets the listener; `false` when one was set already.
    pub(crate) fn set(&self, listener: Arc<dyn ChangeListener>) -> bool {
        self.0.set(listener).is_ok()
    }

    /// Tells the listener about `change`; a panic in it is logged, never
    /// passed on to the writer (whose update is applied already).
    pub(crate) fn announce(&self, change: AppliedChange) {
        if let Some(listener) = self.0.get() {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener.applied(change)));
            if outcome.is_err() {
                tracing::error!("announcing an applied environment change failed (panicked)");
            }
        }
    }

    /// The restart plan of the update that produced `version`; empty
    /// without a listener (a host with no plugins to tell).
    pub(crate) fn plan(&self, version: u64, keys: BTreeSet<String>) -> PlanFuture {
        match self.0.get() {
            Some(listener) => listener.plan(version, keys),
            None => Box::pin(std::future::ready(Vec::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<AppliedChange>>);

    impl ChangeListener for Recorder {
        fn applied(&self, change: AppliedChange) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(change);
        }
        fn plan(&self, _version: u64, keys: BTreeSet<String>) -> PlanFuture {
            let plan = keys
                .into_iter()
                .map(|k| PlanEntry {
                    plugin: k.into(),
                    mode: host_api::ApplyMode::LIVE,
                })
                .collect();
            Box::pin(std::future::ready(plan))
        }
    }

    #[test]
    fn one_listener_hears_every_change_and_a_second_is_refused() {
        let listener = Listener::default();
        let recorder = Arc::new(Recorder::default());
        assert!(listener.set(recorder.clone()));
        assert!(!listener.set(Arc::new(Recorder::default())));
        let change = AppliedChange {
            first_version: 2,
            version: 3,
            keys: BTreeSet::from(["A".to_owned(), "B".to_owned()]),
            origin: ChangeOrigin::Api,
        };
        listener.announce(change.clone());
        assert_eq!(*recorder.0.lock().expect("lock"), vec![change]);
        let plan = futures_util::FutureExt::now_or_never(
            listener.plan(3, BTreeSet::from(["A".to_owned()])),
        );
        assert_eq!(plan.map(|p| p.len()), Some(1));
    }

    #[test]
    fn without_a_listener_the_plan_is_empty() {
        let plan = futures_util::FutureExt::now_or_never(
            Listener::default().plan(1, BTreeSet::from(["A".to_owned()])),
        );
        assert_eq!(plan, Some(Vec::new()));
    }
}
