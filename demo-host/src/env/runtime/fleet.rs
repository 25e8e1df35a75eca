//! The runtime environment over a shared KV v2 store (SPEC §9): the write
//! path's store side and the follower that keeps every host of a fleet on
//! the store's latest version.
//!
//! - Versions: a snapshot's version is [`host_api::SHARED_VERSION_BASE`]
//!   plus the KV version, the same on every host and across restarts, so
//!   an `ETag` read from one host is an `If-Match` for any other.
//! - Writes: the group-committed batch (see `env::runtime`) becomes one KV
//!   write with `cas` = the version it was validated against. On a `cas`
//!   mismatch (another host wrote first) the host reads the new version,
//!   publishes it, validates the batch again (an update with an expected
//!   version now conflicts: 412) and retries, a bounded number of times.
//! - Following: a thread polls the secret's metadata version every
//!   [`POLL`] and, when it moved, reads the secret and publishes the keys
//!   that changed, under the same writer slot as commits, so the plugins'
//!   change notification hears of them as of a local write.
//! - Faults: a store that does not answer, is sealed or refuses the token
//!   marks the snapshot stale (GET says so, `http::stale`); a write then
//!   fails with `store_unavailable` and applies nothing. The next successful
//!   poll catches up. The last snapshot is kept on disk, sealed with the
//!   secrets key (`store::sealed`), for a host that starts while the store
//!   is down.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant, SystemTime},
};

use host_api::{EnvChange, HostError, SHARED_VERSION_BASE};

use super::{ChangeOrigin, Outcome, Pending, RuntimeEnv, conflict};
use crate::store::{
    atomic::{IfExists, write_atomically},
    backend::{StoreBackend, read_store_backend},
    kv::{KvClient, KvError, KvRead},
    sealed,
    secrets_key::Keyring,
};

/// How often the follower asks the store for its version.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// How many times one batch is validated and written again after other
/// hosts' writes came first.
const MAX_ATTEMPTS: u32 = 24;
/// The name bound into the sealed snapshot file.
const SNAPSHOT_NAME: &str = "milady-store-snapshot";
/// The error code of a write the store could not take (503).
pub(crate) const STORE_UNAVAILABLE: &str = host_api::ErrorCode::StoreUnavailable.as_str();

/// What GET says of a snapshot the store has not confirmed lately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Staleness {
    /// Since when the store has not answered.
    pub(crate) since: SystemTime,
    /// What failed (never the token).
    pub(crate) reason: String,
}

/// A host's link to the fleet's store.
pub(crate) struct Fleet {
    client: KvClient,
    /// The store's keys as of its version: what the next write starts from.
    state: Mutex<KvRead>,
    /// `Some` while the store does not answer.
    stale: Mutex<Option<Staleness>>,
    /// The sealed snapshot file and the key that seals it.
    snapshot_file: Option<(PathBuf, Arc<Keyring>)>,
    /// A write sent without an answer, not yet fenced out or undone.
    in_doubt: Mutex<Option<InDoubt>>,
    /// The fleet's fingerprint key, read (or made) at start-up.
    fingerprint_key: Option<[u8; 32]>,
}

/// A write the store may still apply: it named `cas` and would turn
/// `before` into `attempted`.
#[derive(Clone)]
struct InDoubt {
    cas: u64,
    before: BTreeMap<String, String>,
    attempted: BTreeMap<String, String>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects to the store and reads the fleet's secret; when the store
    /// does not answer, starts from the snapshot kept in `snapshot_file`
    /// (or an empty set), marked stale.
    pub(crate) fn start(client: KvClient, snapshot_file: Option<(PathBuf, Arc<Keyring>)>) -> Self {
        let fleet = Self {
            client,
            state: Mutex::new(KvRead::default()),
            stale: Mutex::new(None),
            snapshot_file,
            in_doubt: Mutex::new(None),
            fingerprint_key: None,
        };
        match fleet.client.read() {
            Ok(read) => {
                tracing::info!(
                    store = ?fleet.client.settings().addresses,
                    version = read.version,
                    keys = read.data.len(),
                    "secrets from the store"
                );
                fleet.save(&read);
                *fleet.lock_state() = read;
            }
            Err(e) => {
                let kept = fleet.load_saved();
                tracing::warn!(
                    error = %e,
                    kept_version = kept.as_ref().map(|k| k.version),
                    "the secret store does not answer; serving the last snapshot kept on disk, \
                     marked stale, until it does"
                );
                *fleet.lock_state() = kept.unwrap_or_default();
                fleet.mark_stale(&e);
            }
        }
        fleet
    }

    /// The fleet's fingerprint key, kept in the store beside the secrets
    /// (`<path>-fingerprint-key`) and made by the first host that finds
    /// none, so equal values have equal fingerprints on every host
    /// (SPEC §8). `None` while the store does not answer.
    fn read_fingerprint_key(&self) -> Option<[u8; 32]> {
        let path = format!("{}-fingerprint-key", self.client.settings().path);
        for _ in 0..3 {
            let read = match self.client.read_at(&path) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the fleet's fingerprint key");
                    return None;
                }
            };
            if let Some(key) = read.data.get("key").and_then(|hex| parse_key(hex)) {
                return Some(key);
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).ok()?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let data = BTreeMap::from([("key".to_owned(), hex)]);
            match self.client.write_at(&path, &data, read.version) {
                Ok(_) => return Some(key),
                // Another host made it first: read theirs.
                Err(KvError::CasMismatch) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep a fingerprint key in the store");
                    return None;
                }
            }
        }
        None
    }

    /// The fleet's fingerprint key (SPEC §8): the host makes its
    /// fingerprints under it. `None` when the store did not answer at
    /// start-up.
    pub(crate) fn fingerprint_key(&self) -> Option<[u8; 32]> {
        self.fingerprint_key
    }

    /// The store's keys as last seen.
    pub(crate) fn data(&self) -> BTreeMap<String, String> {
        self.lock_state().data.clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, KvRead> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_stale(&self, error: &KvError) {
        let mut stale = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        if stale.is_none() {
            tracing::warn!(error = %error, "the secret store stopped answering; GET serves the snapshot marked stale, PUT answers 503");
            *stale = Some(Staleness {
                since: SystemTime::now(),
                reason: error.to_string(),
            });
        }
    }

    fn mark_healthy(&self) {
        let mut stale = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(was) = stale.take() {
            let for_secs = was.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            tracing::info!(stale_for_secs = for_secs, "the secret store answers again");
        }
    }

    /// `Some` while the snapshot is not confirmed by the store.
    pub(crate) fn staleness(&self) -> Option<Staleness> {
        self.stale.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps `read` on disk, sealed, for a start while the store is down.
    fn save(&self, read: &KvRead) {
        let Some((path, keyring)) = &self.snapshot_file else {
            return;
        };
        let keys = match keyring.load_or_create() {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the store snapshot on disk: no secrets key");
                return;
            }
        };
        let json = zeroize::Zeroizing::new(
            serde_json::json!({ "version": read.version, "data": read.data }).to_string(),
        );
        let sealed = match sealed::seal(&keys.recipient(), SNAPSHOT_NAME, &json) {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal the store snapshot");
                return;
            }
        };
        if let Err(e) = write_atomically(path, 0o600, &mut sealed.as_bytes(), IfExists::Replace) {
            tracing::warn!(error = %e, path = %path.display(), "cannot keep the store snapshot on disk");
        }
    }

    fn load_saved(&self) -> Option<KvRead> {
        let (path, keyring) = self.snapshot_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let keys = keyring.load().ok()?;
        let opened = match sealed::open(&keys.identities(), SNAPSHOT_NAME, &text) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "the kept store snapshot cannot be opened");
                return None;
            }
        };
        let value: serde_json::Value =
            serde_json::from_str(secrecy::ExposeSecret::expose_secret(&opened)).ok()?;
        Some(KvRead {
            version: value["version"].as_u64().unwrap_or(0),
            data: value["data"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
        })
    }
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The fleet of `[store]` in the config at `config`, when it names a
/// secret store: connected, its secret read (or the kept snapshot), the
/// fleet's fingerprint key read. `None` for the file store.
pub(crate) fn start_fleet(
    config: &std::path::Path,
    process: &[(String, String)],
    keyring: &Arc<Keyring>,
) -> Result<Option<Arc<Fleet>>, StartFleetError> {
    let process: BTreeMap<String, String> = process.iter().cloned().collect();
    let settings = match read_store_backend(config, &process)? {
        StoreBackend::File => return Ok(None),
        StoreBackend::OpenBao(settings) => settings,
    };
    let client = KvClient::new(settings)?;
    let kept = config.with_file_name(snapshot_file_name(config));
    let mut fleet = Fleet::start(client, Some((kept, Arc::clone(keyring))));
    fleet.fingerprint_key = fleet.read_fingerprint_key();
    if fleet.fingerprint_key.is_none() {
        tracing::warn!(
            "no fleet fingerprint key (the store does not answer): this host's fingerprints \
             differ from other hosts' until it restarts with the store up"
        );
    }
    Ok(Some(Arc::new(fleet)))
}

/// The sealed snapshot's file name beside the config (`milady.toml` →
/// `milady.store-snapshot.age`).
fn snapshot_file_name(config: &std::path::Path) -> String {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "milady".into());
    format!("{stem}.store-snapshot.age")
}

/// Why the fleet's store cannot be used at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartFleetError {
    /// `[store]` is not usable.
    #[error(transparent)]
    Config(#[from] crate::store::backend::StoreConfigError),
    /// The client could not be set up.
    #[error(transparent)]
    Client(#[from] KvError),
}

/// The snapshot version of a KV version.
fn shared(kv_version: u64) -> u64 {
    SHARED_VERSION_BASE + kv_version
}

fn unavailable(e: &KvError) -> HostError {
    tracing::error!(error = %e, "the secret store did not take the write; nothing applied");
    HostError::new(
        STORE_UNAVAILABLE,
        "the secret store is unavailable; nothing was changed",
    )
}

/// The changes that turn `old` into `new`.
fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<EnvChange> {
    let mut changes: Vec<EnvChange> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| EnvChange::set(k, v))
        .collect();
    changes.extend(
        old.keys()
            .filter(|k| !new.contains_key(*k))
            .map(EnvChange::clear),
    );
    changes
}

impl RuntimeEnv {
    /// This environment on the fleet's store: the snapshot takes the
    /// store's version, and [`RuntimeEnv::follow_store`] keeps it current.
    pub(crate) fn with_fleet(mut self, fleet: Option<Arc<Fleet>>) -> Self {
        let Some(fleet) = fleet else { return self };
        let version = shared(fleet.lock_state().version);
        {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            let mut snapshot = (**current).clone();
            snapshot.version = version;
            *current = abi_stable::std_types::RArc::new(snapshot);
        }
        self.fleet = Some(fleet);
        self
    }

    /// `Some` while the snapshot is not confirmed by the fleet's store.
    pub(crate) fn staleness(&self) -> Option<Staleness> {
        self.fleet.as_ref().and_then(|f| f.staleness())
    }

    /// Makes sure a write that got no answer can never apply, or is undone
    /// if it did, before anything else is written or followed: a `PUT`
    /// answered 503 applies nothing. The caller holds the writer slot.
    ///
    /// Not applied yet (the store is still at its `cas`): a write of the
    /// unchanged data with that `cas` takes the version, so the lost write
    /// fails its check whenever it arrives. Applied: the keys it changed
    /// that still hold its values get their values from before it back.
    fn settle_in_doubt(&self, fleet: &Fleet) -> Result<(), KvError> {
        let Some(doubt) = fleet
            .in_doubt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let mut settled = false;
        for _ in 0..MAX_ATTEMPTS {
            let read = fleet.client.read()?;
            let (data, cas) = if read.version == doubt.cas {
                (read.data.clone(), doubt.cas)
            } else {
                let mut data = read.data.clone();
                let mut undo = false;
                for (key, attempted) in diff(&doubt.before, &doubt.attempted)
                    .iter()
                    .map(|c| (c.key().to_owned(), c.value().map(str::to_owned)))
                {
                    if read.data.get(&key) == attempted.as_ref() {
                        undo = true;
                        match doubt.before.get(&key) {
                            Some(v) => data.insert(key, v.clone()),
                            None => data.remove(&key),
                        };
                    }
                }
                if !undo {
                    settled = true;
                    break;
                }
                tracing::warn!("a write that got no answer was applied late; undoing it");
                (data, read.version)
            };
            match fleet.client.write(&data, cas) {
                Ok(_) => {
                    settled = true;
                    break;
                }
                Err(KvError::CasMismatch | KvError::InDoubt(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        if !settled {
            return Err(KvError::InDoubt("the store kept changing".into()));
        }
        *fleet.in_doubt.lock().unwrap_or_else(|e| e.into_inner()) = None;
        tracing::info!("a write that got no answer is settled: it cannot apply");
        self.follow_locked(fleet)
    }

    /// Commits a batch as one KV write (see the module notes).
    pub(super) fn commit_fleet(&self, fleet: &Fleet, batch: Vec<Pending>) -> Vec<(u64, Outcome)> {
        let mut outcomes: Vec<(u64, Outcome)> = Vec::with_capacity(batch.len());
        if let Err(e) = self.settle_in_doubt(fleet) {
            fleet.mark_stale(&e);
            return batch
                .iter()
                .map(|p| (p.ticket, Err(unavailable(&e))))
                .collect();
        }
        let mut open: Vec<Pending> = batch;
        for attempt in 0..MAX_ATTEMPTS {
            let current = self.snapshot();
            let base = fleet.lock_state().clone();
            let mut dirty = false;
            let mut accepted = Vec::with_capacity(open.len());
            for p in open {
                if p.expected.is_some_and(|e| dirty || e != current.version) {
                    outcomes.push((p.ticket, Err(conflict())));
                } else {
                    dirty = true;
                    accepted.push(p);
                }
            }
            if accepted.is_empty() {
                return outcomes;
            }
            let changes: Vec<EnvChange> = accepted
                .iter()
                .flat_map(|p| p.changes.iter().cloned())
                .collect();
            let mut data = base.data.clone();
            for change in &changes {
                match change.value() {
                    Some(v) => data.insert(change.key().to_owned(), v.to_owned()),
                    None => data.remove(change.key()),
                };
            }
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match fleet.client.write(&data, base.version) {
                Ok(version) => {
                    fleet.mark_healthy();
                    let read = KvRead { version, data };
                    fleet.save(&read);
                    *fleet.lock_state() = read;
                    self.publish(&current, &changes, shared(version));
                    outcomes.extend(accepted.iter().map(|p| {
                        (
                            p.ticket,
                            Ok(host_api::EnvUpdate {
                                version: shared(version),
                            }),
                        )
                    }));
                    return outcomes;
                }
                Err(KvError::CasMismatch) => {
                    tracing::debug!(attempt, "another host wrote first; validating again");
                    if let Err(e) = self.follow_locked(fleet) {
                        fleet.mark_stale(&e);
                        outcomes.extend(accepted.iter().map(|p| (p.ticket, Err(unavailable(&e)))));
                        return outcomes;
                    }
                    // A short pause that differs per host, so racing hosts
                    // do not collide again in lockstep.
                    let jitter = u64::from(std::process::id() % 7) + u64::from(attempt) * 3;
                    std::thread::sleep(Duration::from_millis(2 + jitter));
                    open = accepted;
                }
                Err(e) => {
                    if let KvError::InDoubt(_) = e {
                        *fleet.in_doubt.lock().unwrap_or_else(|e| e.into_inner()) = Some(InDoubt {
                            cas: base.version,
                            before: base.data,
                            attempted: data,
                        });
                        // Settled now if the store answers again at once;
                        // otherwise before the next write or follow.
                        if self.settle_in_doubt(fleet).is_err() {
                            fleet.mark_stale(&e);
                        }
                    } else {
                        fleet.mark_stale(&e);
                    }
                    outcomes.extend(accepted.iter().map(|p| (p.ticket, Err(unavailable(&e)))));
                    return outcomes;
                }
            }
        }
        tracing::error!("the secret store kept changing under a write; nothing applied");
        outcomes.extend(open.iter().map(|p| {
            (
                p.ticket,
                Err(HostError::new(
                    STORE_UNAVAILABLE,
                    "the secret store kept changing under this write; nothing was changed, try again",
                )),
            )
        }));
        outcomes
    }

    /// Reads the store and publishes what changed; the caller holds the
    /// writer slot.
    fn follow_locked(&self, fleet: &Fleet) -> Result<(), KvError> {
        let read = fleet.client.read()?;
        fleet.mark_healthy();
        let old = fleet.lock_state().clone();
        if read.version == old.version && read.data == old.data {
            return Ok(());
        }
        let changes = diff(&old.data, &read.data);
        let version = read.version;
        fleet.save(&read);
        *fleet.lock_state() = read;
        let current = self.snapshot();
        // Another host's write (or the first read): plugins hear `store`.
        self.publish_from(&current, &changes, shared(version), ChangeOrigin::Store);
        tracing::debug!(version, keys = changes.len(), "followed the store");
        Ok(())
    }

    /// Runs `f` as the one writer: no commit runs meanwhile.
    fn as_writer<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut queue = self.lock_queue();
        while queue.writing {
            queue = self
                .committed
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
        queue.writing = true;
        drop(queue);
        struct Release<'a>(&'a RuntimeEnv);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.lock_queue().writing = false;
                self.0.committed.notify_all();
            }
        }
        let _release = Release(self);
        f()
    }

    /// One poll: the store's version, and the secret when it moved.
    fn poll_store(&self, fleet: &Fleet) {
        match fleet.client.version() {
            Ok(version) => {
                let doubt = fleet
                    .in_doubt
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some();
                if doubt {
                    // Healthy only once the lost write cannot apply.
                    match self.as_writer(|| self.settle_in_doubt(fleet)) {
                        Ok(()) => fleet.mark_healthy(),
                        Err(e) => fleet.mark_stale(&e),
                    }
                    return;
                }
                fleet.mark_healthy();
                if version != fleet.lock_state().version
                    && let Err(e) = self.as_writer(|| self.follow_locked(fleet))
                {
                    fleet.mark_stale(&e);
                }
            }
            Err(e) => fleet.mark_stale(&e),
        }
    }

    /// Starts the follower thread (once): polls the store's version, follows
    /// it, renews the token before it expires. Ends with the environment.
    pub(crate) fn follow_store(self: &Arc<Self>) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let env: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("store-follower".into())
            .spawn(move || {
                let mut renew = Renewal::default();
                loop {
                    std::thread::sleep(POLL);
                    // Ends with the environment.
                    let Some(env) = env.upgrade() else { break };
                    env.poll_store(&fleet);
                    renew.tick(&fleet);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the store follower; this host will not see other hosts' changes");
        }
    }
}

/// When to look at the token's lifetime and renew it (half-way through).
#[derive(Default)]
struct Renewal {
    next_check: Option<Instant>,
}

impl Renewal {
    fn tick(&mut self, fleet: &Fleet) {
        let now = Instant::now();
        if self.next_check.is_some_and(|at| now < at) {
            return;
        }
        self.next_check = Some(match fleet.client.lookup_self() {
            // A token that never expires: look again in an hour.
            Ok(info) if info.ttl == 0 => now + Duration::from_secs(3600),
            Ok(info) if info.renewable && info.ttl <= 120 => match fleet.client.renew_self() {
                Ok(ttl) => {
                    tracing::info!(ttl_secs = ttl, "renewed the store token");
                    now + Duration::from_secs((ttl / 2).max(1))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the store token");
                    now + Duration::from_secs(10)
                }
            },
            Ok(info) if info.renewable => now + Duration::from_secs(info.ttl / 2),
            Ok(info) => {
                tracing::warn!(
                    ttl_secs = info.ttl,
                    "the store token cannot be renewed; it expires"
                );
                now + Duration::from_secs(info.ttl.max(60))
            }
            Err(_) => now + Duration::from_secs(10),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_sets_changed_and_clears_removed() {
        let old = BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]);
        let new = BTreeMap::from([("A".into(), "1".into()), ("C".into(), "3".into())]);
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![EnvChange::set("C", "3"), EnvChange::clear("B")]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
