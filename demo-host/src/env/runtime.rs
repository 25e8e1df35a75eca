//! The runtime environment the host lends to plugins, and the one path that
//! changes it: persist to the config file first, then apply in memory.
//!
//! Start-up order (the Milady rule): the process environment, then `[env]`
//! from the config file for keys the process does not set. API writes apply
//! on top. `std::env::set_var` is never called: it is unsound once threads
//! run, and every plugin library links its own `std` anyway.
//!
//! Group commit: updates that arrive while a durable write is in progress
//! queue up, and the next writer commits all of them, in arrival order, in
//! one config write (one fsync) instead of one each. Each update keeps its
//! own compare-and-set check, its own version and its own all-or-nothing
//! outcome; if a shared write fails, the updates are retried one write each,
//! so a failure is reported exactly as without batching.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use abi_stable::std_types::{RArc, RString, RVec};
use host_api::{EnvChange, EnvSnapshot, EnvSource, EnvUpdate, EnvVar, HostError};

use crate::{
    env::{
        at_rest::{AtRest, AtRestTable},
        audited::{Actor, EnvAudit},
        key_policy::KeyPolicy,
        notify::{AppliedChange, ChangeListener, ChangeOrigin, Listener, PlanFuture},
    },
    store::config_file::{ConfigError, ConfigStore},
};

mod audit_path;
mod fleet;

pub(crate) use fleet::{Fleet, start_fleet};

type Outcome = Result<EnvUpdate, HostError>;

/// The host's runtime environment and its durable update path.
pub struct RuntimeEnv {
    current: RwLock<RArc<EnvSnapshot>>,
    /// Updates waiting for a durable write, and their outcomes.
    queue: Mutex<CommitQueue>,
    /// Signalled whenever a writer finishes a batch.
    committed: Condvar,
    /// Config writes made so far (each covers one or more updates).
    commits: AtomicU64,
    config: Arc<ConfigStore>,
    policy: KeyPolicy,
    /// What the host knows of each key beside its value (see
    /// [`RuntimeEnv::provenance`]).
    provenance: Provenance,
    /// How each key of the config file is stored (encrypted, readable).
    at_rest: AtRestTable,
    /// Told of every applied change (`env::notify`).
    listener: Listener,
    /// The fleet's KV store, when the secrets live there instead of the
    /// config file (SPEC §9, `fleet`).
    fleet: Option<Arc<Fleet>>,
    /// The audit log every update leaves its line in (`env::audited`).
    audit: EnvAudit,
}

/// Keys the process environment set at start-up, keys the config file held
/// then, and when each key was last written since.
#[derive(Default)]
struct Provenance {
    process: std::collections::BTreeSet<String>,
    stored_at_start: std::collections::BTreeSet<String>,
    updated_at: Mutex<HashMap<String, std::time::SystemTime>>,
}

/// What [`RuntimeEnv::provenance`] tells of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyProvenance {
    /// When the key was last written through the API since start-up.
    pub(crate) updated_at: Option<std::time::SystemTime>,
    /// The process environment sets the key over a stored value (one the
    /// config held at start-up, or one written since): after a restart the
    /// process's value wins again.
    pub(crate) overridden_by_process: bool,
}

#[derive(Default)]
struct CommitQueue {
    next_ticket: u64,
    /// In arrival order.
    pending: Vec<Pending>,
    /// A thread is committing a batch; at most one at a time, which is what
    /// makes version checks and writes atomic.
    writing: bool,
    /// Outcomes not yet collected by their callers.
    done: HashMap<u64, Outcome>,
}

struct Pending {
    /// Who asked, and the id of the update's audit line.
    actor: Actor,
    audit_id: String,
    ticket: u64,
    changes: Vec<EnvChange>,
    expected: Option<u64>,
    /// The values of `changes` encrypted ahead of the write (one entry per
    /// change, or empty: `store::config_file::ConfigStore::preseal`).
    presealed: Vec<Option<String>>,
}

impl RuntimeEnv {
    /// Builds the start-up environment from the process environment and the
    /// config file's `[env]` table. Empty values count as unset.
    /// `hidden` keys (the host's own token) are not lent to plugins.
    pub fn new(
        process: impl IntoIterator<Item = (String, String)>,
        config_env: &BTreeMap<String, String>,
        hidden: &[&str],
        config: Arc<ConfigStore>,
        policy: KeyPolicy,
    ) -> Self {
        let mut vars: BTreeMap<String, (String, EnvSource)> = BTreeMap::new();
        for (k, v) in process {
            if !v.is_empty() && !hidden.contains(&k.as_str()) {
                vars.insert(k, (v, EnvSource::Process));
            }
        }
        for (k, v) in config_env {
            if !v.is_empty() && !hidden.contains(&k.as_str()) && !vars.contains_key(k) {
                vars.insert(k.clone(), (v.clone(), EnvSource::ConfigFile));
            }
        }
        let provenance = Provenance {
            process: vars
                .iter()
                .filter(|(_, (_, source))| *source == EnvSource::Process)
                .map(|(k, _)| k.clone())
                .collect(),
            stored_at_start: config_env
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.clone())
                .collect(),
            updated_at: Mutex::default(),
        };
        Self {
            current: RwLock::new(RArc::new(snapshot_from(1, vars))),
            queue: Mutex::new(CommitQueue::default()),
            committed: Condvar::new(),
            commits: AtomicU64::new(0),
            config,
            policy,
            provenance,
            at_rest: AtRestTable::default(),
            listener: Listener::default(),
            fleet: None,
            audit: EnvAudit::default(),
        }
    }

    /// The same environment knowing how the config file stores its keys
    /// (from [`crate::env::at_rest::open_config_env`] at start-up).
    pub(crate) fn with_at_rest(mut self, at_rest: BTreeMap<String, AtRest>) -> Self {
        self.at_rest = AtRestTable::new(at_rest);
        self
    }

    /// How each key of the config file is stored: encrypted or not,
    /// readable or not (and why), kept current by every write.
    pub fn at_rest(&self) -> &AtRestTable {
        &self.at_rest
    }

    /// When `key` was last written and whether the process environment
    /// overrides its stored value (for the per-key records plugins get).
    pub(crate) fn provenance(&self, key: &str) -> KeyProvenance {
        self.with_provenance(|provenance| provenance(key))
    }

    /// Calls `f` with a lookup of [`RuntimeEnv::provenance`] that takes
    /// the lock once for any number of keys (a re-render of every key).
    pub(crate) fn with_provenance<R>(
        &self,
        f: impl FnOnce(&dyn Fn(&str) -> KeyProvenance) -> R,
    ) -> R {
        let updated = self
            .provenance
            .updated_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let lookup = |key: &str| {
            let updated_at = updated.get(key).copied();
            KeyProvenance {
                updated_at,
                overridden_by_process: self.provenance.process.contains(key)
                    && (self.provenance.stored_at_start.contains(key) || updated_at.is_some()),
            }
        };
        f(&lookup)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> RArc<EnvSnapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The host's key rules.
    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// Sets the one listener told of every applied change (the host's
    /// change notifier); `false` when one was set already.
    pub(crate) fn listen(&self, listener: Arc<dyn ChangeListener>) -> bool {
        self.listener.set(listener)
    }

    /// The restart plan of the update that produced `version` and changed
    /// `keys` (see `env::notify`).
    pub(crate) fn restart_plan(&self, version: u64, keys: BTreeSet<String>) -> PlanFuture {
        self.listener.plan(version, keys)
    }

    /// The config file the environment is persisted to.
    pub(crate) fn config_path(&self) -> &std::path::Path {
        self.config.path()
    }

    /// How many config writes updates have made so far; with concurrent
    /// updates, fewer than the updates (see the module notes). For tests and
    /// the benchmark (`bench` feature) only.
    #[cfg(any(test, feature = "bench"))]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Applies every change or none: checks keys, then (in arrival order
    /// with any concurrent updates) checks `expected_version`, writes the
    /// config file durably and swaps in the new snapshot before returning.
    /// Blocking (disk I/O): call it off the async runtime.
    pub fn update_blocking(
        &self,
        changes: &[EnvChange],
        expected_version: Option<u64>,
    ) -> Result<EnvUpdate, HostError> {
        self.update_as(changes, expected_version, &Actor::default())
    }

    /// [`RuntimeEnv::update_blocking`] on behalf of `actor`, who the audit
    /// line of the update names (`env::audited`).
    pub(crate) fn update_as(
        &self,
        changes: &[EnvChange],
        expected_version: Option<u64>,
        actor: &Actor,
    ) -> Result<EnvUpdate, HostError> {
        let mut rejected = HostError::new(HostError::REJECTED, "");
        for change in changes {
            if let Some(reason) = self.policy.check(change.key()) {
                rejected = rejected.with_detail(change.key(), reason);
            } else if change
                .value()
                .is_some_and(|v| v.is_empty() || v.contains('\0'))
            {
                rejected = rejected.with_detail(change.key(), "value is empty or contains NUL");
            } else if let Some(reason) = change.value().and_then(|v| self.policy.check_value(v)) {
                rejected = rejected.with_detail(change.key(), &reason);
            }
        }
        if !rejected.details.is_empty() {
            rejected.message =
                format!("{} environment keys refused", rejected.details.len()).into();
            self.audit.rejected(actor, changes, &rejected)?;
            return Err(rejected);
        }

        let mut queue = self.lock_queue();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push(Pending {
            ticket,
            changes: changes.to_vec(),
            expected: expected_version,
            actor: actor.clone(),
            audit_id: crate::store::audit::new_id(),
            presealed: Vec::new(),
        });
        loop {
            if let Some(outcome) = queue.done.remove(&ticket) {
                return outcome;
            }
            if !queue.writing {
                // Commit everything queued so far, this update included.
                queue.writing = true;
                let batch = std::mem::take(&mut queue.pending);
                drop(queue);
                let writing = Writing {
                    env: self,
                    tickets: batch.iter().map(|p| p.ticket).collect(),
                    own: ticket,
                };
                let outcomes = self.commit_audited(batch);
                self.lock_queue().done.extend(outcomes);
                drop(writing);
                queue = self.lock_queue();
                continue;
            }
            queue = self
                .committed
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, CommitQueue> {
        // Nothing panics while the lock is held; ignore poisoning.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits a batch in one config write; returns each update's outcome.
    fn commit(&self, batch: Vec<Pending>) -> Vec<(u64, Outcome)> {
        if let Some(fleet) = self.fleet.clone() {
            return self.commit_fleet(&fleet, batch);
        }
        let current = self.snapshot();
        let mut version = current.version;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut accepted = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            if p.expected.is_some_and(|e| e != version) {
                outcomes.push((p.ticket, Err(conflict())));
            } else {
                version += 1;
                accepted.push(i);
            }
        }
        if accepted.is_empty() {
            return outcomes;
        }
        let changes: Vec<EnvChange> = accepted
            .iter()
            .flat_map(|&i| batch[i].changes.iter().cloned())
            .collect();
        let presealed: Vec<Option<String>> = if accepted
            .iter()
            .all(|&i| batch[i].presealed.len() == batch[i].changes.len())
        {
            accepted
                .iter()
                .flat_map(|&i| batch[i].presealed.iter().cloned())
                .collect()
        } else {
            Vec::new()
        };
        self.commits.fetch_add(1, Ordering::Relaxed);
        match self.config.apply_env_presealed(&changes, &presealed) {
            Ok(written) => {
                self.at_rest.record_write(&written, &changes);
                self.publish(&current, &changes, version);
                for (n, &i) in accepted.iter().enumerate() {
                    let version = current.version + 1 + n as u64;
                    outcomes.push((batch[i].ticket, Ok(EnvUpdate { version })));
                }
                outcomes
            }
            // Retry one write per update, in order, so each outcome (and the
            // version checks) are exactly those of updates made one by one.
            Err(_) if accepted.len() > 1 => batch
                .into_iter()
                .map(|p| (p.ticket, self.commit_one(p)))
                .collect(),
            Err(e) => {
                outcomes.push((batch[accepted[0]].ticket, Err(storage(&e))));
                outcomes
            }
        }
    }

    fn commit_one(&self, update: Pending) -> Outcome {
        let current = self.snapshot();
        if update.expected.is_some_and(|e| e != current.version) {
            return Err(conflict());
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let written = self
            .config
            .apply_env_presealed(&update.changes, &update.presealed)
            .map_err(|e| storage(&e))?;
        self.at_rest.record_write(&written, &update.changes);
        let version = current.version + 1;
        self.publish(&current, &update.changes, version);
        Ok(EnvUpdate { version })
    }

    /// Swaps in `current` with `changes` applied in order, as `version`.
    fn publish(&self, current: &EnvSnapshot, changes: &[EnvChange], version: u64) {
        self.publish_from(current, changes, version, ChangeOrigin::Api);
    }

    /// [`RuntimeEnv::publish`] of a change that came from `origin`.
    fn publish_from(
        &self,
        current: &EnvSnapshot,
        changes: &[EnvChange],
        version: u64,
        origin: ChangeOrigin,
    ) {
        let mut vars: BTreeMap<String, (String, EnvSource)> = current
            .vars
            .iter()
            .map(|v| (v.key.to_string(), (v.value.to_string(), v.source)))
            .collect();
        let now = std::time::SystemTime::now();
        let mut updated_at = self
            .provenance
            .updated_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for change in changes {
            match change.value() {
                Some(v) => {
                    updated_at.insert(change.key().to_owned(), now);
                    vars.insert(change.key().to_owned(), (v.to_owned(), EnvSource::Api))
                }
                None => {
                    updated_at.remove(change.key());
                    vars.remove(change.key())
                }
            };
        }
        drop(updated_at);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            RArc::new(snapshot_from(version, vars));
        // After the snapshot is in place: whoever is told reads the new values.
        self.listener.announce(AppliedChange {
            first_version: current.version + 1,
            version,
            keys: changes.iter().map(|c| c.key().to_owned()).collect(),
            origin,
        });
    }
}

/// Ends a writer's turn, also when it panics: the next update may write,
/// and every waiter of the batch gets an outcome (an error if none was set).
struct Writing<'a> {
    env: &'a RuntimeEnv,
    tickets: Vec<u64>,
    /// The writer's own update: a panic reaches its caller directly.
    own: u64,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut queue = self.env.lock_queue();
        queue.writing = false;
        for &ticket in self.tickets.iter().filter(|&&t| t != self.own) {
            queue.done.entry(ticket).or_insert_with(|| {
                Err(HostError::new(
                    HostError::INTERNAL,
                    "the environment update failed",
                ))
            });
        }
        drop(queue);
        self.env.committed.notify_all();
    }
}

fn conflict() -> HostError {
    HostError::new(
        HostError::CONFLICT,
        "the environment changed since it was read",
    )
}

/// The boundary error for a failed durable write: the client gets the cause
/// without internal paths; the log gets everything.
fn storage(e: &ConfigError) -> HostError {
    tracing::error!(error = %e, "could not write the config file");
    HostError::new(HostError::STORAGE, e.client_message())
}

fn snapshot_from(version: u64, vars: BTreeMap<String, (String, EnvSource)>) -> EnvSnapshot {
    EnvSnapshot {
        version,
        vars: vars
            .into_iter()
            .map(|(key, (value, source))| EnvVar {
                key: RString::from(key),
                value: RString::from(value),
                source,
            })
            .collect::<RVec<_>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(dir: &std::path::Path) -> RuntimeEnv {
        let config = Arc::new(ConfigStore::new(dir.join("milady.toml")));
        RuntimeEnv::new(
            [("FROM_PROCESS".to_owned(), "p".to_owned())],
            &BTreeMap::new(),
            &[],
            config,
            KeyPolicy::new(Vec::<String>::new()),
        )
    }

    fn set(key: &str, value: &str) -> EnvChange {
        EnvChange::set(key, value)
    }

    /// Runs `update(env, i)` on `threads` threads released at once; the
    /// outcomes in thread order.
    fn race(
        env: &Arc<RuntimeEnv>,
        threads: usize,
        update: impl Fn(&RuntimeEnv, usize) -> Outcome + Send + Sync + 'static,
    ) -> Result<Vec<Outcome>, &'static str> {
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let update = Arc::new(update);
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let (env, barrier, update) =
                    (Arc::clone(env), Arc::clone(&barrier), Arc::clone(&update));
                std::thread::spawn(move || {
                    barrier.wait();
                    update(&env, i)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "worker panicked"))
            .collect()
    }

    /// The write path with both overlaps on (audit log, encryption): the
    /// helper thread syncs the audit lines while writers encrypt, and
    /// checks each new text while it syncs. Toggles writing the same file
    /// at the same time wait for the helper's check of their text too;
    /// nothing may wait on a circle, and every write must land.
    #[test]
    fn audited_encrypted_updates_and_toggles_all_land() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cfg").join("milady.toml");
        std::fs::create_dir_all(dir.path().join("cfg"))?;
        let ring = Arc::new(crate::store::secrets_key::Keyring::new(
            crate::store::secrets_key::SecretsKey::File(dir.path().join("key").join("secrets.key")),
        ));
        let config = Arc::new(ConfigStore::new(&path).with_keyring(ring));
        let log = Arc::new(crate::store::audit::AuditLog::beside(&path));
        let env = Arc::new(
            RuntimeEnv::new(
                [],
                &BTreeMap::new(),
                &[],
                Arc::clone(&config),
                KeyPolicy::new(Vec::<String>::new()),
            )
            .with_audit(log),
        );
        let threads = 12;
        let toggles = {
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                (0..40).try_for_each(|i| {
                    config
                        .set_plugin_enabled(&format!("@elizaos/plugin-{}", i % 3), i % 2 == 0)
                        .map(|_| ())
                })
            })
        };
        let outcomes = race(&env, threads, |env, i| {
            let mut last = Err(HostError::new(HostError::INTERNAL, "no update"));
            for round in 0..5 {
                last = env.update_blocking(
                    &[set(&format!("KEY_{i}"), &format!("value-{i}-{round}"))],
                    None,
                );
                last.as_ref().map_err(Clone::clone)?;
            }
            last
        })?;
        for outcome in outcomes {
            outcome.map_err(|e| e.message.to_string())?;
        }
        toggles.join().map_err(|_| "toggles panicked")??;
        let loaded = config.load()?;
        assert_eq!(loaded.sealed.len(), threads, "every key stored, encrypted");
        assert_eq!(loaded.plugin_enabled.len(), 3);
        assert!(env.audit_writes() > 0);
        Ok(())
    }

    #[test]
    fn concurrent_updates_all_land_with_distinct_versions() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let env = Arc::new(env_in(dir.path()));
        let threads = 24;
        let outcomes = race(&env, threads, |env, i| {
            env.update_blocking(&[set(&format!("KEY_{i}"), &format!("value-{i}"))], None)
        })?;
        let mut versions = Vec::new();
        for outcome in outcomes {
            versions.push(outcome.map_err(|e| e.message.to_string())?.version);
        }
        versions.sort_unstable();
        assert_eq!(versions, (2..2 + threads as u64).collect::<Vec<_>>());
        let snap = env.snapshot();
        assert_eq!(snap.version, 1 + threads as u64);
        let on_disk = ConfigStore::new(dir.path().join("milady.toml")).load()?;
        for i in 0..threads {
            let key = format!("KEY_{i}");
            assert_eq!(
                snap.get(&key).map(|v| v.value.to_string()),
                Some(format!("value-{i}"))
            );
            assert_eq!(on_disk.env.get(&key), Some(&format!("value-{i}")));
        }
        assert_eq!(
            snap.get("FROM_PROCESS").map(|v| v.source),
            Some(EnvSource::Process)
        );
        assert!(env.commits() >= 1 && env.commits() <= threads as u64);
        Ok(())
    }

    #[test]
    fn compare_and_set_admits_one_of_racing_updates() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let env = Arc::new(env_in(dir.path()));
        let seen = env.snapshot().version;
        let outcomes = race(&env, 8, move |env, i| {
            env.update_blocking(&[set("SHARED", &format!("v{i}"))], Some(seen))
        })?;
        let mut won = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(update) => won.push(update.version),
                Err(e) => assert_eq!(e.code.as_str(), HostError::CONFLICT),
            }
        }
        assert_eq!(won, vec![seen + 1]);
        assert_eq!(env.snapshot().version, seen + 1);
        Ok(())
    }

    #[test]
    fn later_update_of_a_key_wins_and_clear_removes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let env = env_in(dir.path());
        env.update_blocking(&[set("A", "1"), set("A", "2"), set("B", "x")], None)
            .map_err(|e| e.message.to_string())?;
        env.update_blocking(&[EnvChange::clear("B")], None)
            .map_err(|e| e.message.to_string())?;
        let snap = env.snapshot();
        assert_eq!(snap.get("A").map(|v| v.value.to_string()), Some("2".into()));
        assert!(snap.get("B").is_none());
        let on_disk = ConfigStore::new(dir.path().join("milady.toml")).load()?;
        assert_eq!(on_disk.env.get("A"), Some(&"2".to_owned()));
        assert!(!on_disk.env.contains_key("B"));
        Ok(())
    }

    #[test]
    fn failed_write_changes_nothing_for_any_update() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("milady.toml");
        std::fs::write(&path, "[env\nbroken")?;
        let env = Arc::new(env_in(dir.path()));
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let env = Arc::clone(&env);
                std::thread::spawn(move || env.update_blocking(&[set(&format!("K{i}"), "v")], None))
            })
            .collect();
        for w in workers {
            let err = w
                .join()
                .map_err(|_| "worker panicked")?
                .expect_err("the file is invalid");
            assert_eq!(err.code.as_str(), HostError::STORAGE);
        }
        assert_eq!(env.snapshot().version, 1);
        assert_eq!(std::fs::read_to_string(&path)?, "[env\nbroken");
        Ok(())
    }

    #[test]
    fn refused_keys_never_reach_the_queue() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let env = env_in(dir.path());
        let err = env
            .update_blocking(&[set("LD_PRELOAD", "x"), set("OK_KEY", "v")], None)
            .expect_err("blocked key");
        assert_eq!(err.code.as_str(), HostError::REJECTED);
        assert_eq!(env.commits(), 0);
        assert!(!dir.path().join("milady.toml").exists());
        Ok(())
    }
}
