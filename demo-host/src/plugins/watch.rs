//! The plugin folder of a running host, watched: a library dropped into it
//! (copied then renamed, or by `plugin install`) is probed, loaded and
//! mounted without a restart (SPEC §6).
//!
//! A thread polls the folder every [`POLL`] (a directory listing and one
//! `stat` per library: no platform notification API, so it works the same
//! on every file system, network and container mounts included). A file
//! is taken once its identity (device, inode, size, times) has stood still
//! for [`SETTLE`]; a file still being written keeps changing and waits. A
//! file that changed while it was being checked is taken again once it
//! settles. Each file goes through what start-up does
//! (`plugins::startup`): the file rules, a private copy, the child-process
//! probe (required here: nothing unprobed enters a running host), the
//! collision checks, loading within the plugin timeout, mounting, `init`.
//! Mounted, it joins the plugins in service and every router is rebuilt
//! and swapped in (`plugins::live`).
//!
//! Libraries are never unloaded: a file that brings a new version of a
//! plugin the host serves already is not loaded at all, and the plugin is
//! marked `pendingRestart` (`GET /api/plugins`, and the log). Files that
//! disappear change nothing. What the host did with each file is recorded
//! for `plugin install` (`plugins::pickup`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    boundary::BoundaryOptions,
    env::runtime::RuntimeEnv,
    plugins::{
        folder::{self, Library},
        listing::collision,
        live::{LivePlugins, ServedPlugin},
        pickup::{Pickup, Recorder},
        probe_cache::{FileIdentity, ProbeCache, host_key},
        startup::{Startup, prepare},
    },
    registry::{PendingRestart, Registry},
    store::{config_file::ConfigStore, file_safety::FilePolicy},
};

/// How often the folder is listed.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How long a file's identity must stand still before it is taken.
pub(crate) const SETTLE: Duration = Duration::from_millis(200);

/// Everything the watcher works with.
pub(crate) struct Watcher {
    /// The plugin folder.
    pub(crate) dir: PathBuf,
    /// Its file rules.
    pub(crate) policy: FilePolicy,
    /// Timeouts, the probe program and the cache folder.
    pub(crate) boundary: BoundaryOptions,
    /// The registry plugins join.
    pub(crate) registry: Arc<Registry>,
    /// The runtime environment lent to plugins.
    pub(crate) env: Arc<RuntimeEnv>,
    /// Where enabled states are read when a plugin is added.
    pub(crate) config: Arc<ConfigStore>,
    /// Enabled states from the config file at start-up (when it cannot be
    /// read again).
    pub(crate) enabled: BTreeMap<String, bool>,
    /// The plugins in service.
    pub(crate) live: Arc<LivePlugins>,
    /// The libraries start-up dealt with, and their identities then.
    pub(crate) baseline: HashMap<PathBuf, FileIdentity>,
}

/// The running watcher; stops (and waits for its thread) when dropped.
pub(crate) struct FolderWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            // At most one file in progress, bounded by the plugin timeout.
            let _ = thread.join();
        }
    }
}

impl Watcher {
    /// Starts watching on a thread of its own.
    pub(crate) fn start(self) -> std::io::Result<FolderWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("plugin-folder-watch".into())
            .spawn(move || self.run(&stopping))?;
        Ok(FolderWatch {
            stop,
            thread: Some(thread),
        })
    }

    fn run(self, stop: &AtomicBool) {
        let cache = match (&self.boundary.probe_program, &self.boundary.probe_cache) {
            (Some(program), Some(folder)) => {
                Some(ProbeCache::open(Some(folder), host_key(program)))
            }
            _ => None,
        };
        tracing::info!(folder = %self.dir.display(), "watching the plugin folder for new libraries");
        let mut state = WatchState {
            known: self.baseline.clone(),
            settling: HashMap::new(),
            recorder: Recorder::new(&self.dir),
            cache,
            blocked_by: None,
            folder_error: None,
        };
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(POLL);
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.poll(&mut state)));
            if outcome.is_err() {
                tracing::error!("the plugin folder watcher failed (panicked); it goes on");
            }
        }
    }

    /// One look at the folder.
    fn poll(&self, state: &mut WatchState) {
        state.recorder.hold_lock();
        let listed = match folder::libraries(&self.dir, self.policy) {
            Ok(listed) => {
                state.folder_error = None;
                listed
            }
            Err(e) => {
                // Once per distinct error, not every poll.
                let text = e.to_string();
                if state.folder_error.as_deref() != Some(&text) {
                    tracing::warn!(error = %text, "cannot watch the plugin folder");
                    state.folder_error = Some(text);
                }
                return;
            }
        };
        let mut present = HashSet::new();
        for library in listed {
            let path = match &library {
                Library::Trusted(path) | Library::Refused(path, _) => path.clone(),
            };
            present.insert(path.clone());
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let identity = FileIdentity::of(&meta);
            if state.known.get(&path) == Some(&identity) {
                state.settling.remove(&path);
                continue;
            }
            match state.settling.get(&path) {
                Some((seen, since)) if *seen == identity => {
                    if since.elapsed() >= SETTLE {
                        state.settling.remove(&path);
                        self.take(state, library, identity);
                    }
                }
                _ => {
                    state.settling.insert(path, (identity, Instant::now()));
                }
            }
        }
        state.known.retain(|path, _| present.contains(path));
        state.settling.retain(|path, _| present.contains(path));
    }

    /// Takes one settled file: loads it, or says why not.
    fn take(&self, state: &mut WatchState, library: Library, identity: FileIdentity) {
        let started = Instant::now();
        let (path, pickup) = match library {
            Library::Refused(path, reason) => {
                tracing::warn!(file = %path.display(), %reason, "plugin skipped");
                (path, Pickup::Skipped { reason })
            }
            Library::Trusted(path) => {
                let pickup = self.load(state, &path);
                (path, pickup)
            }
        };
        // Changed while it was checked (still being written): it settles
        // again and is taken again; this outcome is not the file's.
        let now = std::fs::metadata(&path).map(|m| FileIdentity::of(&m));
        if now.as_ref().ok() != Some(&identity) {
            tracing::debug!(file = %path.display(), "the library changed while it was checked; checking it again once it settles");
            return;
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &pickup {
            Pickup::Loaded { id, version } => tracing::info!(
                file = %path.display(), plugin = %id, %version, elapsed_ms,
                "plugin loaded while running: its routes answer"
            ),
            Pickup::PendingRestart { id, version } => tracing::warn!(
                file = %path.display(), plugin = %id, %version,
                "plugin replaced while running: the loaded version serves until the host restarts (pendingRestart)"
            ),
            Pickup::Skipped { reason } => {
                tracing::warn!(file = %path.display(), %reason, "plugin skipped")
            }
        }
        state.known.insert(path.clone(), identity);
        state.recorder.record(&path, identity, pickup);
    }

    fn load(&self, state: &mut WatchState, path: &Path) -> Pickup {
        let skipped = |reason: String| Pickup::Skipped { reason };
        let timeout = self.boundary.plugin_timeout;
        let Some(program) = self.boundary.probe_program.as_deref() else {
            return skipped(
                "not loaded while running: this host has no child-process probe; restart it to load the library".into(),
            );
        };
        let prepared = match prepare(path, Some(program), state.cache.as_ref(), timeout) {
            Ok(prepared) => prepared,
            Err(reason) => return skipped(reason),
        };
        if let Some(cache) = &state.cache
            && let Err(e) = cache.save()
        {
            tracing::debug!(error = %e, "the probe cache could not be saved");
        }
        let Some(report) = prepared.report.clone() else {
            return skipped("the library was not probed".into());
        };
        if !report.ok {
            return skipped(report.reason.unwrap_or_else(|| "refused".into()));
        }
        let served = self.live.plugins();
        let id = report.id.clone().unwrap_or_default();
        let version = report.version.clone().unwrap_or_default();
        if served.iter().any(|p| p.id == id) {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.registry.mark_pending_restart(
                &id,
                PendingRestart {
                    file,
                    version: version.clone(),
                },
            );
            return Pickup::PendingRestart { id, version };
        }
        let reports: Vec<(PathBuf, _)> = served
            .iter()
            .map(|p| (p.file.clone(), p.report.clone()))
            .collect();
        if let Some(reason) = collision(&report, &reports) {
            return skipped(reason);
        }
        // The config's word now (a toggle since start-up is in it).
        let enabled = self
            .config
            .load()
            .map(|snapshot| snapshot.plugin_enabled)
            .unwrap_or_else(|_| self.enabled.clone());
        let startup = Startup {
            registry: &self.registry,
            env: &self.env,
            enabled: &enabled,
            boundary: &self.boundary,
        };
        let mut openapi = self.live.openapi().as_ref().clone();
        let routes = served
            .iter()
            .flat_map(|p| p.routes.iter().map(String::as_str))
            .collect();
        match startup.load_and_mount(
            path,
            prepared,
            routes,
            &reports,
            &mut openapi,
            &mut state.blocked_by,
        ) {
            Ok((plugin, _)) => {
                self.live.add(ServedPlugin::of(&plugin), openapi);
                Pickup::Loaded { id, version }
            }
            Err(reason) => skipped(reason),
        }
    }
}

/// What the watcher remembers between polls.
struct WatchState {
    /// Files taken (or dealt with at start-up), with their identity then.
    known: HashMap<PathBuf, FileIdentity>,
    /// New or changed files: their identity and since when it stands.
    settling: HashMap<PathBuf, (FileIdentity, Instant)>,
    recorder: Recorder,
    cache: Option<ProbeCache>,
    /// Set once loading a library overran the plugin timeout: nothing else
    /// loads in this process (`plugins::startup`).
    blocked_by: Option<PathBuf>,
    /// The last error listing the folder, logged once.
    folder_error: Option<String>,
}

/// The identities of `files` now: what start-up dealt with.
pub(crate) fn baseline(files: &[PathBuf]) -> HashMap<PathBuf, FileIdentity> {
    files
        .iter()
        .filter_map(|f| Some((f.clone(), FileIdentity::of(&std::fs::metadata(f).ok()?))))
        .collect()
}
