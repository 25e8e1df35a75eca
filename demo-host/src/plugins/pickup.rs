//! Whether a running host picked up a library added to its plugin folder,
//! so that `plugin install` can say so.
//!
//! A host that watches its plugin folder (`plugins::watch`) holds a shared
//! `flock` on [`WATCH_LOCK`] in that folder for as long as it watches, and
//! records what it did with each library it took while running in
//! [`STATUS_FILE`] (JSON, replaced atomically, 0600): the file's identity
//! (device, inode, size, times) and the outcome. `plugin install` finds
//! out whether any host watches (an exclusive lock it cannot take), then
//! waits, bounded, for the entry of the file it installed. Neither file is
//! a library, so loading and listing never see them. A `flock` goes away
//! with its process, also on SIGKILL: a crashed host never looks alive.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use crate::{
    plugins::probe_cache::FileIdentity,
    store::atomic::{IfExists, write_atomically},
};

/// The lock a watching host holds shared, in the plugin folder.
pub(crate) const WATCH_LOCK: &str = ".demo-host-watch.lock";
/// What watching hosts did with the libraries they took, in the plugin
/// folder.
pub(crate) const STATUS_FILE: &str = ".demo-host-live.json";

/// How long `plugin install` waits for a running host's word: the
/// watcher's settling, then probing, loading and `init`, each within the
/// default plugin timeout.
pub const PICKUP_WAIT: Duration = Duration::from_secs(20);

/// What a running host did with a library added to its folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Pickup {
    /// Probed, loaded and mounted: its routes answer.
    Loaded {
        /// The plugin id.
        id: String,
        /// The plugin's version.
        version: String,
    },
    /// A new version of a plugin the host serves already: the loaded one
    /// stays (libraries are never unloaded) until the host restarts.
    PendingRestart {
        /// The plugin id.
        id: String,
        /// The version that waits for the restart.
        version: String,
    },
    /// Not loaded, and why.
    Skipped {
        /// One line, naming no file content.
        reason: String,
    },
}

/// What `plugin install` learnt from the running host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickupWait {
    /// No running host watches the folder: the library loads at the next
    /// start.
    NoHost,
    /// A running host took the file.
    Picked(Pickup),
    /// A host watches the folder, but did not say within the wait.
    TimedOut,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StatusFile {
    /// By file name.
    files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    identity: FileIdentity,
    #[serde(flatten)]
    pickup: Pickup,
}

/// The watching host's side: its lock, and the record it keeps.
pub(crate) struct Recorder {
    folder: PathBuf,
    /// Held shared while the host watches; `None` until the folder exists.
    lock: Option<File>,
    status: StatusFile,
}

impl Recorder {
    /// A recorder for `folder`; takes the lock when the folder exists.
    pub(crate) fn new(folder: &Path) -> Self {
        let mut recorder = Self {
            folder: folder.to_owned(),
            lock: None,
            status: StatusFile::default(),
        };
        recorder.hold_lock();
        recorder
    }

    /// Takes the watch lock if not held yet (the folder may appear later).
    pub(crate) fn hold_lock(&mut self) {
        if self.lock.is_some() || !self.folder.is_dir() {
            return;
        }
        let path = self.folder.join(WATCH_LOCK);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path);
        match opened.and_then(|file| lock(&file, FlockOperation::LockShared).map(|()| file)) {
            Ok(file) => self.lock = Some(file),
            Err(e) => tracing::debug!(error = %e, "cannot take the plugin folder's watch lock"),
        }
    }

    /// Records what was done with `file` (of `identity`), keeping entries
    /// of files still in the folder only.
    pub(crate) fn record(&mut self, file: &Path, identity: FileIdentity, pickup: Pickup) {
        let Some(name) = file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        self.status.files.insert(name, Entry { identity, pickup });
        let folder = self.folder.clone();
        self.status
            .files
            .retain(|name, _| folder.join(name).exists());
        let written = serde_json::to_vec_pretty(&self.status)
            .map_err(io::Error::other)
            .and_then(|text| {
                write_atomically(
                    &self.folder.join(STATUS_FILE),
                    0o600,
                    &mut text.as_slice(),
                    IfExists::Replace,
                )
                .map_err(io::Error::other)
            });
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot record what the host did with a new library");
        }
    }
}

fn lock(file: &File, operation: FlockOperation) -> io::Result<()> {
    loop {
        match flock(file, operation) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Whether a running host watches `folder` now.
pub(crate) fn host_watches(folder: &Path) -> bool {
    let Ok(file) = File::open(folder.join(WATCH_LOCK)) else {
        return false;
    };
    match lock(&file, FlockOperation::NonBlockingLockExclusive) {
        // Taken: nobody holds it. Closing the file releases it.
        Ok(()) => false,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// What the host watching `folder` did with `installed`, waiting at most
/// `wait` for it to say.
pub fn await_pickup(folder: &Path, installed: &Path, wait: Duration) -> PickupWait {
    if !host_watches(folder) {
        return PickupWait::NoHost;
    }
    let (Ok(meta), Some(name)) = (std::fs::metadata(installed), installed.file_name()) else {
        return PickupWait::TimedOut;
    };
    let identity = FileIdentity::of(&meta);
    let name = name.to_string_lossy().into_owned();
    let start = Instant::now();
    loop {
        let entry = std::fs::read(folder.join(STATUS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StatusFile>(&bytes).ok())
            .and_then(|mut status| status.files.remove(&name));
        if let Some(entry) = entry.filter(|e| e.identity == identity) {
            return PickupWait::Picked(entry.pickup);
        }
        if start.elapsed() >= wait {
            return if host_watches(folder) {
                PickupWait::TimedOut
            } else {
                PickupWait::NoHost
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn nobody_watches_until_a_recorder_holds_the_lock() -> TestResult {
        let dir = tempfile::tempdir()?;
        let library = dir.path().join("libx.so");
        std::fs::write(&library, b"x")?;
        assert_eq!(
            await_pickup(dir.path(), &library, Duration::from_secs(5)),
            PickupWait::NoHost
        );
        let mut recorder = Recorder::new(dir.path());
        assert!(host_watches(dir.path()));
        let identity = FileIdentity::of(&std::fs::metadata(&library)?);
        let pickup = Pickup::Loaded {
            id: "@t/x".into(),
            version: "1.0.0".into(),
        };
        recorder.record(&library, identity, pickup.clone());
        assert_eq!(
            await_pickup(dir.path(), &library, Duration::from_secs(5)),
            PickupWait::Picked(pickup)
        );
        // Another file with the same name is another install: not picked yet.
        std::fs::remove_file(&library)?;
        std::fs::write(&library, b"other content")?;
        assert_eq!(
            await_pickup(dir.path(), &library, Duration::from_millis(200)),
            PickupWait::TimedOut
        );
        drop(recorder);
        assert!(!host_watches(dir.path()));
        Ok(())
    }
}
