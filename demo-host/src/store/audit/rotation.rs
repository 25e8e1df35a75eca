//! Size-based rotation of the audit log, with a fixed retention: the live
//! file and at most `keep` older ones (`audit.jsonl.1` newest).
//!
//! A rotation renames only (no copy), under the log's append lock, and
//! syncs the folder, so a crash mid-way loses no line: at worst a numbered
//! file is missing its successor, and queries read whatever files exist.

use std::{
    io,
    path::{Path, PathBuf},
};

/// The default size at which the live file rotates: 16 MiB.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// The default number of rotated files kept.
pub(crate) const DEFAULT_KEEP: usize = 4;

/// When the audit log rotates and how many old files it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// The live file rotates before an append would take it past this.
    pub(crate) max_bytes: u64,
    /// Rotated files kept (`.1` to `.keep`); older ones are deleted.
    pub(crate) keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        }
    }
}

impl Rotation {
    /// Whether a file of `size` bytes rotates before `adding` more.
    pub(crate) fn due(&self, size: u64, adding: usize) -> bool {
        size > 0 && size.saturating_add(adding as u64) > self.max_bytes
    }

    /// The `n`th rotated file of `live`.
    fn numbered(live: &Path, n: usize) -> PathBuf {
        let mut name = live.file_name().map(|n| n.to_owned()).unwrap_or_default();
        name.push(format!(".{n}"));
        live.with_file_name(name)
    }

    /// The live file, then the rotated ones, newest first.
    pub(crate) fn files_newest_first(&self, live: &Path) -> Vec<PathBuf> {
        std::iter::once(live.to_owned())
            .chain((1..=self.keep).map(|n| Self::numbered(live, n)))
            .collect()
    }

    /// Shifts `.k-1` → `.k` … `.1` → `.2`, then `live` → `.1` (the oldest,
    /// `.keep`, is replaced, i.e. deleted), and syncs the folder.
    pub(crate) fn rotate(&self, live: &Path) -> io::Result<()> {
        if self.keep == 0 {
            return std::fs::remove_file(live);
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(Self::numbered(live, n), Self::numbered(live, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(live, Self::numbered(live, 1))?;
        let folder = match live.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(folder).and_then(|dir| dir.sync_all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditLog;
    use abi_stable::std_types::RVec;
    use host_api::{AuditEntry, AuditKey, AuditQuery};

    fn entry(n: usize) -> AuditEntry {
        AuditEntry {
            time: "2025-01-01T00:00:00Z".into(),
            action: "env.update".into(),
            outcome: format!("o{n}").into(),
            keys: RVec::from(vec![AuditKey {
                key: "K".into(),
                operation: "set".into(),
                fingerprint: "hmac-sha256:0011223344556677".into(),
            }]),
            ..AuditEntry::default()
        }
    }

    #[test]
    fn rotates_by_size_keeps_the_retention_and_queries_across_files()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let live = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 600,
            keep: 2,
        };
        let log = AuditLog::at(live.clone()).with_rotation(rotation);
        for n in 0..40 {
            log.append(&entry(n))?;
        }
        assert!(std::fs::metadata(&live)?.len() <= 600);
        assert!(Rotation::numbered(&live, 1).exists());
        assert!(Rotation::numbered(&live, 2).exists());
        assert!(
            !Rotation::numbered(&live, 3).exists(),
            "retention: 2 old files"
        );
        // Every line whole, in every file.
        for file in rotation.files_newest_first(&live) {
            for line in std::fs::read_to_string(&file)?.lines() {
                serde_json::from_str::<serde_json::Value>(line)?;
            }
        }
        let all = log.query(&AuditQuery {
            limit: 1000,
            key: "".into(),
        })?;
        assert_eq!(all[0].outcome.as_str(), "o39", "newest first");
        let outcomes: Vec<usize> = all
            .iter()
            .filter_map(|e| e.outcome.as_str()[1..].parse().ok())
            .collect();
        assert!(
            outcomes.windows(2).all(|w| w[0] == w[1] + 1),
            "{outcomes:?}"
        );
        assert!(all.len() < 40, "the oldest lines were dropped");
        Ok(())
    }
}
