//! Telling plugins about applied changes, and the restart plan of each
//! change (SPEC §6, the live part).
//!
//! After every change the runtime environment applies (`env::notify`),
//! each enabled plugin in service that declares a changed key is told,
//! through its `on_env_change` entry point, which of its keys changed. A
//! plugin that declares one of them live (`ManifestExt::live_keys`) is
//! waited for, at most the plugin timeout, and answers with the keys it
//! applied live; the others are told without being waited for. The
//! answers of one change make a *round*.
//!
//! The restart plan of an update lists every enabled plugin that declares
//! one of its keys, catalog plugins included: `live` when the plugin is in
//! service, declares each of those keys live and acknowledged each in
//! time; `restart` otherwise (a catalog plugin, an older plugin without
//! the entry point, one that did not answer in time or applied less).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use abi_stable::std_types::RArc;
use host_api::{ApplyMode, EnvChangeNotice, PlanEntry, RegistrySnapshot};
use tokio::sync::watch;

use crate::{
    env::notify::{AppliedChange, ChangeListener, PlanFuture},
    plugins::{
        bridge::run_on,
        live::{LivePlugins, ServedPlugin},
        runtime::plugin_runtime,
    },
    registry::Registry,
};

/// How many recent rounds are kept for the plans of their updates. A plan
/// is asked for right after its update, so a few suffice.
const KEPT_ROUNDS: usize = 64;

/// For each plugin waited for: the keys it applied live; `None` when it
/// did not answer in time (or failed).
type Acks = BTreeMap<String, Option<BTreeSet<String>>>;

/// The host's change notifier: the listener of its runtime environment.
pub(crate) struct ChangeNotifier {
    live: Arc<LivePlugins>,
    registry: Arc<Registry>,
    /// How long a live plugin may take to acknowledge.
    timeout: Duration,
    rounds: Mutex<VecDeque<Arc<Round>>>,
}

/// One applied change: who was told, and their answers once all are in.
struct Round {
    first_version: u64,
    version: u64,
    /// The registry and the plugins in service when it was applied.
    registry: RArc<RegistrySnapshot>,
    plugins: Arc<Vec<ServedPlugin>>,
    /// `None` until every plugin waited for has answered or run out of time.
    acks: watch::Receiver<Option<Arc<Acks>>>,
}

impl ChangeNotifier {
    /// A notifier for the plugins of `live`, with their enabled states from
    /// `registry`, waiting at most `timeout` for each acknowledgement.
    pub(crate) fn new(live: Arc<LivePlugins>, registry: Arc<Registry>, timeout: Duration) -> Self {
        Self {
            live,
            registry,
            timeout,
            rounds: Mutex::new(VecDeque::new()),
        }
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Round>>> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn round_of(&self, version: u64) -> Option<Arc<Round>> {
        self.rounds()
            .iter()
            .rev()
            .find(|r| (r.first_version..=r.version).contains(&version))
            .cloned()
    }
}

/// Whether the registry says the plugin `id` is enabled.
fn enabled(registry: &RegistrySnapshot, id: &str) -> bool {
    registry.plugins.iter().any(|p| p.id == id && p.enabled)
}

impl ChangeListener for ChangeNotifier {
    fn applied(&self, change: AppliedChange) {
        let registry = self.registry.snapshot();
        let plugins = self.live.plugins();
        let (done, acks) = watch::channel(None);
        let round = Arc::new(Round {
            first_version: change.first_version,
            version: change.version,
            registry: registry.clone(),
            plugins: Arc::clone(&plugins),
            acks,
        });
        {
            let mut rounds = self.rounds();
            if rounds.len() == KEPT_ROUNDS {
                rounds.pop_front();
            }
            rounds.push_back(round);
        }
        let runtime = match plugin_runtime() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "no runtime to tell plugins of a change");
                let _ = done.send(Some(Arc::new(Acks::new())));
                return;
            }
        };
        let mut waited = Vec::new();
        for plugin in plugins.iter().filter(|p| enabled(&registry, &p.id)) {
            let keys: BTreeSet<String> = plugin.keys.intersection(&change.keys).cloned().collect();
            if keys.is_empty() {
                continue;
            }
            let Some(entry) = plugin.module.on_env_change() else {
                // Built before host-api 0.1.2: it cannot be told.
                continue;
            };
            let notice = EnvChangeNotice {
                version: change.version,
                keys: keys.iter().map(|k| k.as_str().into()).collect(),
                origin: change.origin.name().into(),
            };
            let id = plugin.id.clone();
            let live = keys.iter().any(|k| plugin.live_keys.contains(k));
            tracing::debug!(plugin = %id, keys = keys.len(), version = change.version, "telling a plugin of a change");
            let (rt, timeout) = (runtime.clone(), self.timeout);
            let told = async move {
                let answer = run_on(&rt, entry, notice, timeout).await;
                let applied = match answer {
                    Some(Some(ack)) => Some(
                        ack.applied_live
                            .iter()
                            .map(|k| k.to_string())
                            .filter(|k| keys.contains(k))
                            .collect::<BTreeSet<String>>(),
                    ),
                    Some(None) => {
                        tracing::warn!(plugin = %id, "the plugin failed while told of a change");
                        None
                    }
                    None => {
                        if live {
                            tracing::warn!(
                                plugin = %id,
                                seconds = timeout.as_secs_f64(),
                                "the plugin did not acknowledge a change within the plugin timeout: it needs a restart to use it"
                            );
                        }
                        None
                    }
                };
                (id, applied)
            };
            if live {
                waited.push(told);
            } else {
                // Told, not waited for: nothing it answers makes it live.
                runtime.spawn(told);
            }
        }
        runtime.spawn(async move {
            let answers = futures_util::future::join_all(waited).await;
            let _ = done.send(Some(Arc::new(answers.into_iter().collect())));
        });
    }

    fn plan(&self, version: u64, keys: BTreeSet<String>) -> PlanFuture {
        let round = self.round_of(version);
        let registry = self.registry.snapshot();
        Box::pin(async move {
            let Some(round) = round else {
                // No round (none applied at that version): nothing was
                // told, so every plugin that uses a key needs a restart.
                return plan_of(&registry, &[], &Acks::new(), &keys);
            };
            let mut acks = round.acks.clone();
            let answered = match acks.wait_for(Option::is_some).await {
                Ok(answered) => answered.clone().unwrap_or_default(),
                // The round's task went away: nobody acknowledged.
                Err(_) => Arc::default(),
            };
            plan_of(&round.registry, &round.plugins, &answered, &keys)
        })
    }
}

/// The restart plan for `keys` (see the module notes), sorted by plugin id.
fn plan_of(
    registry: &RegistrySnapshot,
    served: &[ServedPlugin],
    acks: &Acks,
    keys: &BTreeSet<String>,
) -> Vec<PlanEntry> {
    let mut plan: BTreeMap<String, ApplyMode> = BTreeMap::new();
    for entry in registry.plugins.iter().filter(|p| p.enabled) {
        let used: BTreeSet<&str> = entry
            .parameters
            .iter()
            .map(|p| p.key.as_str())
            .filter(|k| keys.contains(*k))
            .collect();
        if used.is_empty() {
            continue;
        }
        let id = entry.id.as_str();
        let plugin = served.iter().find(|p| p.id == id).filter(|_| entry.loaded);
        let live = plugin.is_some_and(|p| {
            let applied = acks.get(id).and_then(Option::as_ref);
            used.iter()
                .all(|k| p.live_keys.contains(*k) && applied.is_some_and(|a| a.contains(*k)))
        });
        let mode = if live {
            ApplyMode::LIVE
        } else {
            ApplyMode::RESTART
        };
        plan.insert(id.to_owned(), mode);
    }
    plan.into_iter()
        .map(|(plugin, mode)| PlanEntry {
            plugin: plugin.into(),
            mode,
        })
        .collect()
}

#[cfg(test)]
#[path = "changes/tests.rs"]
mod tests;
