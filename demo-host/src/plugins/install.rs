//! `demo-host plugin install`: checking a library in a child process and
//! copying it into the plugin folder.
//!
//! Installing copies the library to a temporary file in the plugin folder
//! (a name the host never loads), syncs it to disk and renames it into place,
//! so a host starting meanwhile sees either no file or the whole file.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use crate::plugins::{
    listing::collision,
    loader::{self, LIBRARY_EXTENSION},
    probe::{PROBE_TIMEOUT, ProbeReport, probe_in_child},
};
use crate::store::atomic::{IfExists, write_atomically};

/// Why a library was not installed. Nothing was copied in any case.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file could not be read, created, copied, synced or renamed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `"read"`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The source is not a regular file (or has no usable name).
    #[error("{0} is not a file with a usable name")]
    NotAFile(PathBuf),
    /// The probe refused the library.
    #[error("{path} is not a plugin this host can load: {reason}")]
    Refused {
        /// The library.
        path: PathBuf,
        /// The probe's reason.
        reason: String,
    },
    /// The source already is a file of the plugin folder.
    #[error("{0} is already in the plugin folder")]
    AlreadyInFolder(PathBuf),
    /// Several installed files hold the plugin to replace.
    #[error("several files hold plugin `{id}` ({files}); remove all but one first")]
    Ambiguous {
        /// The plugin id.
        id: String,
        /// The files, comma-separated.
        files: String,
    },
    /// The host would not serve it next to the installed plugins.
    #[error("plugin `{id}` would not be served: {reason}{hint}")]
    Collision {
        /// The plugin id.
        id: String,
        /// What it collides with.
        reason: String,
        /// How to proceed, if there is a way.
        hint: &'static str,
    },
    /// The destination file name holds another plugin.
    #[error(
        "{file} already holds plugin `{other}`; rename the new file or use --replace for the same plugin"
    )]
    NameTaken {
        /// The destination.
        file: PathBuf,
        /// The plugin it holds.
        other: String,
    },
    /// The destination file exists (a library the host skips).
    #[error("{0} already exists in the plugin folder (a library the host skips); remove it first")]
    Exists(PathBuf),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + use<> {
    let path = path.to_owned();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    /// The library's path in the plugin folder.
    pub path: PathBuf,
    /// What checking it found.
    pub report: ProbeReport,
    /// The file of the same plugin it replaced (`--replace`), if any.
    pub replaced: Option<PathBuf>,
}

/// Checks `source` in a child process and, when the host would load it next
/// to the plugins already in `dir`, copies it into `dir` atomically.
///
/// Refuses (with the reason) a file that is not a compatible plugin, and a
/// plugin whose id, route prefixes or OpenAPI paths collide with an
/// installed plugin's or the host's. With `replace`, an installed plugin
/// with the same id is replaced in place (its file is atomically swapped).
pub fn install(
    exe: &Path,
    dir: &Path,
    source: &Path,
    replace: bool,
) -> Result<Installed, InstallError> {
    let meta = fs::metadata(source).map_err(io("read", source))?;
    if !meta.is_file() {
        return Err(InstallError::NotAFile(source.to_owned()));
    }
    let report = probe_in_child(exe, source, PROBE_TIMEOUT);
    if !report.ok {
        return Err(InstallError::Refused {
            path: source.to_owned(),
            reason: report.reason.clone().unwrap_or_else(|| "refused".into()),
        });
    }
    let id = report.id.clone().unwrap_or_default();

    let source_canon = fs::canonicalize(source).map_err(io("read", source))?;
    let mut installed = Vec::new();
    let mut same_id = Vec::new();
    for file in loader::library_files(dir).map_err(io("list the plugin folder", dir))? {
        if fs::canonicalize(&file).ok().as_ref() == Some(&source_canon) {
            return Err(InstallError::AlreadyInFolder(source.to_owned()));
        }
        let existing = probe_in_child(exe, &file, PROBE_TIMEOUT);
        // Files the host skips anyway cannot collide with anything.
        if !existing.ok {
            continue;
        }
        if replace && existing.id.as_deref() == Some(id.as_str()) {
            same_id.push(file);
            continue;
        }
        installed.push((file, existing));
    }
    if same_id.len() > 1 {
        let names: Vec<String> = same_id.iter().map(|f| f.display().to_string()).collect();
        return Err(InstallError::Ambiguous {
            id,
            files: names.join(", "),
        });
    }
    let replaced = same_id.pop();
    if let Some(reason) = collision(&report, &installed) {
        let hint = if installed
            .iter()
            .any(|(_, o)| o.id.as_deref() == Some(id.as_str()))
        {
            " (use --replace to replace the installed version)"
        } else {
            ""
        };
        return Err(InstallError::Collision { id, reason, hint });
    }

    let dest = match &replaced {
        Some(old) => old.clone(),
        None => dir.join(library_file_name(source)?),
    };
    if replaced.is_none()
        && let Some((file, other)) = installed.iter().find(|(f, _)| f == &dest)
    {
        return Err(InstallError::NameTaken {
            file: file.clone(),
            other: other.id.clone().unwrap_or_else(|| "?".into()),
        });
    }
    if replaced.is_none() && dest.exists() {
        return Err(InstallError::Exists(dest));
    }
    copy_atomically(source, &dest)?;
    Ok(Installed {
        path: dest,
        report,
        replaced,
    })
}

/// The file name a library gets in the plugin folder: its own, with this
/// platform's library extension added when missing (the host loads only
/// files with that extension).
pub(crate) fn library_file_name(source: &Path) -> Result<String, InstallError> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| InstallError::NotAFile(source.to_owned()))?;
    if source.extension().is_some_and(|e| e == LIBRARY_EXTENSION) {
        Ok(name.to_owned())
    } else {
        Ok(format!("{name}.{LIBRARY_EXTENSION}"))
    }
}

/// Copies `source` to `dest` (in `dir`) with the store's atomic replace
/// (temporary file, sync, rename, sync of the folder; a missing folder is
/// created owner-only). The temporary name has no library extension, so a
/// host starting meanwhile never tries to load it. The copy keeps the
/// source's permission bits.
pub(crate) fn copy_atomically(source: &Path, dest: &Path) -> Result<(), InstallError> {
    let mut input = fs::File::open(source).map_err(io("read", source))?;
    let mode = input
        .metadata()
        .map_err(io("read", source))?
        .permissions()
        .mode()
        & 0o7777;
    write_atomically(dest, mode, &mut input, IfExists::Replace).map_err(|e| InstallError::Io {
        action: e.step.action(),
        path: e.dest,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_copy_leaves_only_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.bin");
        fs::write(&source, b"library bytes").expect("write");
        let plugins = dir.path().join("plugins");
        let dest = plugins.join(library_file_name(&source).expect("name"));
        copy_atomically(&source, &dest).expect("copied");
        assert_eq!(fs::read(&dest).expect("read"), b"library bytes");
        let names: Vec<_> = fs::read_dir(&plugins)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(
            dest.extension().and_then(|e| e.to_str()),
            Some(LIBRARY_EXTENSION)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&plugins).expect("folder").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "a new plugin folder is owner-only");
        }
    }
}
