//! Start-up: from the files of the plugin folder to mounted plugins, with
//! no library able to take the host down (SPEC §5).
//!
//! 1. Each file is opened once and copied into a private, immutable copy
//!    (`plugins::private_copy`); everything afterwards uses that copy.
//! 2. Each copy is probed in a child process (`plugins::probe`): its
//!    constructors, the layout check, `manifest` and `openapi_json`, within
//!    the plugin timeout; a crash, an exit or a hang refuses the file. The
//!    result comes from the probe cache when the file (by identity) or its
//!    content (by hash) was probed before (`plugins::probe_cache`). Files
//!    are prepared in parallel.
//! 3. In folder order, a library that passed and collides with nothing
//!    served is loaded in this process from the same copy (on a thread of
//!    its own, within the plugin timeout), then mounted, its `init` within
//!    the plugin timeout too (`plugins::mount`).
//!
//! Each file that is not mounted gets one log line naming it and the reason.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    app::{MountedPlugin, SkippedPlugin},
    boundary::BoundaryOptions,
    env::runtime::RuntimeEnv,
    plugins::{
        deadline::{Overrun, run_within},
        listing::collision,
        loader::{self, LoadError, LoadedPlugin},
        mount::{Served, mount},
        private_copy::PrivateCopy,
        probe::{ProbeReport, probe_copy_in_child},
        probe_cache::{FileIdentity, ProbeCache, host_key, sha256_hex},
    },
    registry::Registry,
};

/// How many files are copied and probed at once.
const PREPARE_WORKERS: usize = 8;

/// What start-up needs from the host being assembled.
pub(crate) struct Startup<'a> {
    /// The registry plugins join.
    pub(crate) registry: &'a Arc<Registry>,
    /// The runtime environment lent to plugins.
    pub(crate) env: &'a Arc<RuntimeEnv>,
    /// Enabled states from the config file.
    pub(crate) enabled: &'a BTreeMap<String, bool>,
    /// Timeouts, the probe program and the cache folder.
    pub(crate) boundary: &'a BoundaryOptions,
}

/// A file ready to be loaded in-process.
pub(crate) struct Prepared {
    copy: PrivateCopy,
    /// What probing found; `None` when the host has no probe program.
    pub(crate) report: Option<ProbeReport>,
    /// The report came from the cache.
    cached: bool,
}

impl Startup<'_> {
    /// Prepares, probes, loads and mounts every file (see the module
    /// notes); extends `openapi` with each mounted plugin's document.
    pub(crate) fn mount_all(
        &self,
        files: Vec<PathBuf>,
        openapi: &mut serde_json::Value,
    ) -> (Vec<MountedPlugin>, Vec<SkippedPlugin>) {
        let timeout = self.boundary.plugin_timeout;
        // No cache folder: nothing to hash for.
        let cache = match (&self.boundary.probe_program, &self.boundary.probe_cache) {
            (Some(program), Some(folder)) => {
                Some(ProbeCache::open(Some(folder), host_key(program)))
            }
            _ => None,
        };
        let prepared = prepare_all(&files, |path| {
            prepare(
                path,
                self.boundary.probe_program.as_deref(),
                cache.as_ref(),
                timeout,
            )
        });
        if let Some(cache) = &cache
            && let Err(e) = cache.save()
        {
            tracing::debug!(error = %e, "the probe cache could not be saved");
        }

        let mut mounted: Vec<MountedPlugin> = Vec::new();
        let mut reports: Vec<(PathBuf, ProbeReport)> = Vec::new();
        let mut skipped = Vec::new();
        // Set once loading a library in-process overran: the dynamic
        // loader's lock may still be held by it, so no other library loads.
        let mut blocked_by: Option<PathBuf> = None;
        for (path, prepared) in files.into_iter().zip(prepared) {
            let started = Instant::now();
            // Where the probe result came from, for the log line.
            let probe = match &prepared {
                Ok(Prepared { report: None, .. }) | Err(_) => "none",
                Ok(Prepared { cached: true, .. }) => "cached",
                Ok(Prepared { cached: false, .. }) => "run",
            };
            let outcome = prepared.and_then(|prepared| {
                let routes = mounted
                    .iter()
                    .flat_map(|m| m.plugin.manifest.routes.iter().map(|r| r.as_str()))
                    .collect();
                self.load_and_mount(&path, prepared, routes, &reports, openapi, &mut blocked_by)
            });
            match outcome {
                Ok((plugin, report)) => {
                    tracing::info!(
                        file = %path.display(),
                        plugin = %plugin.manifest.id,
                        version = %plugin.manifest.version,
                        interface = %plugin.interface_version,
                        probe,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "plugin loaded"
                    );
                    if let Some(report) = report {
                        reports.push((path, report));
                    }
                    mounted.push(MountedPlugin { plugin });
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), %reason, probe, "plugin skipped");
                    skipped.push(SkippedPlugin { path, reason });
                }
            }
        }
        (mounted, skipped)
    }

    /// Step 3 of the module notes for one prepared file, next to plugins
    /// that serve `routes` (and were probed as `reports`). Also used for a
    /// library added while the host runs (`plugins::watch`).
    pub(crate) fn load_and_mount(
        &self,
        path: &Path,
        prepared: Prepared,
        routes: Vec<&str>,
        reports: &[(PathBuf, ProbeReport)],
        openapi: &mut serde_json::Value,
        blocked_by: &mut Option<PathBuf>,
    ) -> Result<(LoadedPlugin, Option<ProbeReport>), String> {
        let Prepared { copy, report, .. } = prepared;
        if let Some(report) = &report {
            if !report.ok {
                return Err(report.reason.clone().unwrap_or_else(|| "refused".into()));
            }
            // Refused without opening it in this process at all.
            if let Some(reason) = collision(report, reports) {
                return Err(reason);
            }
        }
        if let Some(other) = blocked_by {
            return Err(format!(
                "not loaded: loading {} in this process did not finish, and may still hold the dynamic loader",
                file_name(other)
            ));
        }
        let timeout = self.boundary.plugin_timeout;
        let load_path = copy.load_path().to_owned();
        let origin = path.to_owned();
        let loaded = run_within("load", timeout, move || {
            loader::load_plugin_from(&load_path, &origin)
        });
        // Opened (or being opened) from the copy: it stays for good.
        copy.keep_for_process();
        let plugin = match loaded {
            Ok(Ok(plugin)) => plugin,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(Overrun::TimedOut) => {
                *blocked_by = Some(path.to_owned());
                return Err(LoadError::TimedOut {
                    plugin: file_name(path),
                    entry: "loading",
                    seconds: timeout.as_secs_f64(),
                }
                .to_string());
            }
            Err(other) => return Err(format!("loading failed: {other}")),
        };
        let served = Served { routes, openapi };
        let plugin = mount(
            plugin,
            self.registry,
            self.env,
            self.enabled,
            served,
            timeout,
        )
        .map_err(|e| e.to_string())?;
        Ok((plugin, report))
    }
}

/// Step 1 and 2 of the module notes for one file: its private copy and
/// what probing it found (from the cache when possible).
pub(crate) fn prepare(
    path: &Path,
    probe_program: Option<&Path>,
    cache: Option<&ProbeCache>,
    timeout: Duration,
) -> Result<Prepared, String> {
    let unreadable = |e: std::io::Error| LoadError::Io(e).to_string();
    let mut file = File::open(path).map_err(unreadable)?;
    let before = FileIdentity::of(&file.metadata().map_err(unreadable)?);
    let copy = PrivateCopy::of(&mut file, &file_name(path))
        .map_err(|e| format!("cannot make a private copy of the library: {e}"))?;
    let Some(program) = probe_program else {
        return Ok(Prepared {
            copy,
            report: None,
            cached: false,
        });
    };
    let after = FileIdentity::of(&file.metadata().map_err(unreadable)?);
    // Unchanged while it was copied: the identity stands for the content.
    let stable = before == after && after.size() == copy.len();
    if let Some(cache) = cache
        && stable
        && let Some(hash) = cache.hash_for(&after)
        && let Some(report) = cache.report_for(&hash, timeout)
    {
        return Ok(Prepared {
            copy,
            report: Some(report),
            cached: true,
        });
    }
    let hash = match cache {
        Some(_) => Some(
            copy.reopen()
                .and_then(sha256_hex)
                .map_err(|e| format!("cannot read the private copy of the library: {e}"))?,
        ),
        None => None,
    };
    if let (Some(cache), Some(hash)) = (cache, &hash)
        && let Some(report) = cache.report_for(hash, timeout)
    {
        if stable {
            cache.remember_file(after, hash);
        }
        return Ok(Prepared {
            copy,
            report: Some(report),
            cached: true,
        });
    }
    let (report, end) = probe_copy_in_child(program, &copy, path, timeout);
    if let (Some(cache), Some(hash)) = (cache, &hash) {
        cache.remember_report(hash, &report, end, timeout);
        if stable {
            cache.remember_file(after, hash);
        }
    }
    Ok(Prepared {
        copy,
        report: Some(report),
        cached: false,
    })
}

type Preparation = Result<Prepared, String>;

/// Runs `prepare` on every file, a few at a time; results in file order.
fn prepare_all(
    files: &[PathBuf],
    prepare: impl Fn(&Path) -> Preparation + Sync,
) -> Vec<Preparation> {
    let slots: Vec<Mutex<Option<Preparation>>> = files.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = PREPARE_WORKERS.min(files.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(path)))
                            .unwrap_or_else(|_| {
                                Err("the host failed while checking the library".into())
                            });
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
        .map(|r| r.unwrap_or_else(|| Err("the library was not checked".into())))
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
