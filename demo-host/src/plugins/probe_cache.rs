//! Probe results kept across starts, so a warm start spawns no probe
//! process: `probe-cache.json` in the cache folder (0700; the file 0600).
//! A result vouches that a library is safe to open in the host, so a cache
//! folder owned by another user or writable by others is not used.
//!
//! A result, refusals included, is stored under the SHA-256 of the bytes
//! probed (the private copy), and each file of the plugin folder under its
//! identity: device, inode, size, modification and change times. A file
//! whose identity is known and did not change while it was copied is not
//! hashed again (debug builds of a plugin are tens of megabytes); any other
//! file is hashed, and a known hash (the same library under another name,
//! or copied anew) reuses its result. The change time moves on every write
//! and cannot be set by hand, so a rewritten file never passes for the one
//! probed.
//!
//! Results are only valid for the program that probed: the cache belongs
//! to one `demo-host` executable (its version, interface version and file
//! identity) and starts empty for another. A refusal for a timeout is
//! reused only while the timeout is not longer than the one it ran out; a
//! probe process that could not be started says nothing about the library
//! and is not stored. An unreadable or damaged cache is ignored.

use std::{
    collections::BTreeMap,
    fs::Metadata,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    plugins::probe::{ProbeEnd, ProbeReport},
    store::atomic::{IfExists, write_atomically},
};

/// The cache file's name in the cache folder.
const CACHE_FILE: &str = "probe-cache.json";

/// The format of the cache file; another format starts empty.
const FORMAT: u32 = 1;

/// At most this many files are remembered (the most recently seen).
const MAX_FILES: usize = 512;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    /// Modification time: seconds and nanoseconds.
    mtime: (i64, i64),
    /// Change time (of the inode): seconds and nanoseconds.
    ctime: (i64, i64),
}

impl FileIdentity {
    /// The identity of an open file, from its metadata.
    #[cfg(unix)]
    pub(crate) fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The identity of an open file, from its metadata (no inode here: the
    /// size and modification time only).
    #[cfg(not(unix))]
    pub(crate) fn of(meta: &Metadata) -> Self {
        let nanos = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| {
                (d.as_secs() as i64, i64::from(d.subsec_nanos()))
            });
        Self {
            dev: 0,
            ino: 0,
            size: meta.len(),
            mtime: nanos,
            ctime: nanos,
        }
    }

    /// The file's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    /// The probing program, see [`host_key`].
    host: String,
    files: Vec<FileEntry>,
    /// Reports by SHA-256 (hex) of the library.
    reports: BTreeMap<String, CachedReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    identity: FileIdentity,
    sha256: String,
    /// When it was last seen (seconds since the epoch), for pruning.
    seen: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedReport {
    report: ProbeReport,
    /// For a timeout: the timeout it ran out (ms).
    #[serde(default)]
    timed_out_after_ms: Option<u64>,
}

/// The probe results of earlier starts, and those of this one.
#[derive(Debug)]
pub(crate) struct ProbeCache {
    /// The cache file; `None`: nothing is read or written.
    path: Option<PathBuf>,
    data: Mutex<(CacheFile, bool)>,
}

impl ProbeCache {
    /// The cache in `folder` for the probing program `host` (see
    /// [`host_key`]); empty when there is no folder, no file, a damaged
    /// file, or a file of another program.
    pub(crate) fn open(folder: Option<&Path>, host: String) -> Self {
        // A result says a library is safe to open in the host: only a
        // folder nobody else can write may vouch for that.
        let folder = folder.filter(|f| {
            let trusted = trusted_folder(f);
            if !trusted {
                tracing::warn!(
                    folder = %f.display(),
                    "the probe cache folder is not this user's alone (owned by another user, or writable by others); probe results are not cached"
                );
            }
            trusted
        });
        let path = folder.map(|f| f.join(CACHE_FILE));
        let loaded = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|c| c.format == FORMAT && c.host == host);
        let data = loaded.unwrap_or_else(|| CacheFile {
            format: FORMAT,
            host,
            ..CacheFile::default()
        });
        Self {
            path,
            data: Mutex::new((data, false)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut CacheFile, &mut bool) -> T) -> T {
        let mut guard = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let (data, dirty) = &mut *guard;
        f(data, dirty)
    }

    /// The hash of a file whose identity was seen before.
    pub(crate) fn hash_for(&self, identity: &FileIdentity) -> Option<String> {
        self.with(|data, dirty| {
            let entry = data.files.iter_mut().find(|e| e.identity == *identity)?;
            let now = now_secs();
            // Only a day's drift is worth a write.
            if now.saturating_sub(entry.seen) > 86_400 {
                entry.seen = now;
                *dirty = true;
            }
            Some(entry.sha256.clone())
        })
    }

    /// The stored report for the library with this hash, if it is still
    /// valid with `timeout`.
    pub(crate) fn report_for(&self, sha256: &str, timeout: Duration) -> Option<ProbeReport> {
        self.with(|data, _| {
            let cached = data.reports.get(sha256)?;
            match cached.timed_out_after_ms {
                Some(ms) if u128::from(ms) < timeout.as_millis() => None,
                _ => Some(cached.report.clone()),
            }
        })
    }

    /// Remembers that the file `identity` holds the library `sha256`.
    pub(crate) fn remember_file(&self, identity: FileIdentity, sha256: &str) {
        self.with(|data, dirty| {
            data.files.retain(|e| e.identity != identity);
            data.files.push(FileEntry {
                identity,
                sha256: sha256.to_owned(),
                seen: now_secs(),
            });
            *dirty = true;
        });
    }

    /// Remembers what probing the library `sha256` found, unless the probe
    /// did not run.
    pub(crate) fn remember_report(
        &self,
        sha256: &str,
        report: &ProbeReport,
        end: ProbeEnd,
        timeout: Duration,
    ) {
        let timed_out_after_ms = match end {
            ProbeEnd::NotRun => return,
            ProbeEnd::TimedOut => Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            ProbeEnd::Reported | ProbeEnd::Crashed => None,
        };
        self.with(|data, dirty| {
            data.reports.insert(
                sha256.to_owned(),
                CachedReport {
                    report: report.clone(),
                    timed_out_after_ms,
                },
            );
            *dirty = true;
        });
    }

    /// Writes the cache if this start changed it (atomically, 0600, in a
    /// 0700 folder), keeping the most recently seen files and their reports.
    pub(crate) fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = self.with(|data, dirty| {
            if !*dirty {
                return None;
            }
            data.files.sort_by_key(|f| std::cmp::Reverse(f.seen));
            data.files.truncate(MAX_FILES);
            let files = &data.files;
            data.reports
                .retain(|hash, _| files.iter().any(|f| &f.sha256 == hash));
            *dirty = false;
            serde_json::to_vec(&*data).ok()
        });
        let Some(text) = text else {
            return Ok(());
        };
        if let Some(folder) = path.parent() {
            create_private_dir(folder)?;
        }
        write_atomically(path, 0o600, &mut text.as_slice(), IfExists::Replace)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Whether `folder` may hold the cache: missing (it is created 0700), or a
/// real folder of this user that group and others cannot write.
fn trusted_folder(folder: &Path) -> bool {
    match std::fs::symlink_metadata(folder) {
        Err(e) => e.kind() == io::ErrorKind::NotFound,
        #[cfg(unix)]
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt as _;
            meta.is_dir()
                && meta.uid() == rustix::process::geteuid().as_raw()
                && meta.mode() & 0o022 == 0
        }
        #[cfg(not(unix))]
        Ok(meta) => meta.is_dir(),
    }
}

/// Creates `folder` (and its missing parents) owner-only.
fn create_private_dir(folder: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        if !folder.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(folder)?;
            // The mode given is filtered by the umask.
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(folder)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The SHA-256 of everything `reader` yields, in hex.
pub(crate) fn sha256_hex(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What the cache belongs to: this host's version and interface version,
/// and the identity of the probing program's file (a rebuilt host probes
/// afresh).
pub(crate) fn host_key(probe_program: &Path) -> String {
    let program = std::fs::metadata(probe_program)
        .map(|m| {
            let id = FileIdentity::of(&m);
            format!(
                "{}:{}:{}:{}.{}",
                id.dev, id.ino, id.size, id.mtime.0, id.mtime.1
            )
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "demo-host {} host-api {} {program}",
        env!("CARGO_PKG_VERSION"),
        host_api::INTERFACE_VERSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: u64) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: n,
            size: 10,
            mtime: (1, 2),
            ctime: (3, 4),
        }
    }

    fn ok_report(id: &str) -> ProbeReport {
        ProbeReport {
            ok: true,
            id: Some(id.into()),
            ..ProbeReport::default()
        }
    }

    #[test]
    fn results_survive_a_restart_and_belong_to_one_program() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("cache").join("milady");
        let timeout = Duration::from_secs(5);
        let cache = ProbeCache::open(Some(&folder), "host A".into());
        assert_eq!(cache.hash_for(&identity(1)), None);
        cache.remember_file(identity(1), "aa");
        cache.remember_report("aa", &ok_report("@a/a"), ProbeEnd::Reported, timeout);
        cache.remember_file(identity(2), "bb");
        let crash = ProbeReport::refused("crashed");
        cache.remember_report("bb", &crash, ProbeEnd::Crashed, timeout);
        cache.save().expect("saved");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&folder), 0o700);
            assert_eq!(mode(&folder.join(CACHE_FILE)), 0o600);
        }

        let again = ProbeCache::open(Some(&folder), "host A".into());
        assert_eq!(again.hash_for(&identity(1)).as_deref(), Some("aa"));
        assert_eq!(again.report_for("aa", timeout), Some(ok_report("@a/a")));
        assert_eq!(again.report_for("bb", timeout), Some(crash));
        assert_eq!(again.hash_for(&identity(3)), None);

        let other = ProbeCache::open(Some(&folder), "host B".into());
        assert_eq!(
            other.hash_for(&identity(1)),
            None,
            "another program probes afresh"
        );
    }

    #[test]
    fn a_changed_identity_misses() {
        let cache = ProbeCache::open(None, "h".into());
        cache.remember_file(identity(1), "aa");
        let mut touched = identity(1);
        touched.ctime = (3, 5);
        assert_eq!(cache.hash_for(&touched), None);
        let mut grown = identity(1);
        grown.size = 11;
        assert_eq!(cache.hash_for(&grown), None);
    }

    #[test]
    fn timeouts_are_retried_with_a_longer_timeout_and_unrun_probes_not_kept() {
        let cache = ProbeCache::open(None, "h".into());
        let hung = ProbeReport::refused("did not finish");
        cache.remember_report("aa", &hung, ProbeEnd::TimedOut, Duration::from_secs(5));
        assert!(cache.report_for("aa", Duration::from_secs(5)).is_some());
        assert!(cache.report_for("aa", Duration::from_secs(2)).is_some());
        assert!(cache.report_for("aa", Duration::from_secs(10)).is_none());
        let not_run = ProbeReport::refused("cannot start");
        cache.remember_report("bb", &not_run, ProbeEnd::NotRun, Duration::from_secs(5));
        assert!(cache.report_for("bb", Duration::from_secs(5)).is_none());
    }

    #[test]
    fn damaged_caches_are_ignored_and_unchanged_ones_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CACHE_FILE), b"{not json").expect("write");
        let cache = ProbeCache::open(Some(dir.path()), "h".into());
        assert_eq!(cache.hash_for(&identity(1)), None);
        cache.save().expect("nothing to save");
        assert_eq!(
            std::fs::read(dir.path().join(CACHE_FILE)).expect("read"),
            b"{not json",
            "an unchanged cache is not written"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("milady");
        let timeout = Duration::from_secs(5);
        let cache = ProbeCache::open(Some(&folder), "h".into());
        cache.remember_file(identity(1), "aa");
        cache.remember_report("aa", &ok_report("@a/a"), ProbeEnd::Reported, timeout);
        cache.save().expect("saved");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let loose = ProbeCache::open(Some(&folder), "h".into());
        assert_eq!(loose.hash_for(&identity(1)), None, "nothing read from it");
        loose.remember_file(identity(2), "bb");
        loose.save().expect("nothing written");
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let again = ProbeCache::open(Some(&folder), "h".into());
        assert_eq!(again.hash_for(&identity(1)).as_deref(), Some("aa"));
        assert_eq!(again.hash_for(&identity(2)), None, "nothing written to it");
        let symlink = dir.path().join("link");
        std::os::unix::fs::symlink(&folder, &symlink).expect("symlink");
        assert!(!trusted_folder(&symlink), "a symlink is not the folder");
    }

    #[test]
    fn hashes_are_sha256() {
        let hex = sha256_hex(&b"abc"[..]).expect("hashed");
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
