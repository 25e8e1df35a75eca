//! `demo-host plugin install`: checking a library in a child process and
//! copying it into the plugin folder.
//!
//! The source is opened once, and everything after works on that open
//! file: a private, immutable copy of it (`plugins::private_copy`) is what
//! the probe child checks and what lands in the folder, so neither another
//! user swapping the file after the check nor the dynamic loader's search
//! path (a bare `libx.so` would be looked up along `LD_LIBRARY_PATH`; the
//! path is made absolute first) can make the command install something
//! other than what it checked.
//!
//! Installing copies the library to a temporary file in the plugin folder
//! (a name the host never loads), syncs it to disk and renames it into place,
//! so a host starting meanwhile sees either no file or the whole file. The
//! installed file is mode 0644 and owned by the user who runs the command,
//! whatever the source's mode (a set-uid or world-writable source stays
//! outside). The plugin folder must pass the host's file rules
//! (`plugins::folder`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::plugins::{
    folder::{self, FolderError, Library},
    listing::collision,
    loader::LIBRARY_EXTENSION,
    private_copy::PrivateCopy,
    probe::{PROBE_TIMEOUT, ProbeReport, probe_copy_in_child, probe_in_child},
};
use crate::store::{
    atomic::{IfExists, write_atomically},
    file_safety::{self, FilePolicy, UnsafeFile},
};

/// The mode of an installed library: readable by all, written by its owner
/// only; never set-uid, whatever the source's mode.
const INSTALLED_MODE: u32 = 0o644;

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
    /// The plugin folder is not safe to trust (StrictModes).
    #[error(transparent)]
    UnsafeFolder(#[from] UnsafeFile),
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
/// The bytes checked are the bytes installed (see the module notes);
/// `policy` is the file rules the plugin folder must pass.
pub fn install(
    exe: &Path,
    dir: &Path,
    source: &Path,
    replace: bool,
    policy: FilePolicy,
) -> Result<Installed, InstallError> {
    // Absolute, so no loader ever searches for it.
    let source = &std::path::absolute(source).map_err(io("read", source))?;
    folder::check_folder(dir, policy).map_err(from_folder)?;
    let name = library_file_name(source)?;
    let mut opened = file_safety::open_regular(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            InstallError::NotAFile(source.to_owned())
        } else {
            io("read", source)(e)
        }
    })?;
    let copy = PrivateCopy::of(&mut opened, &name).map_err(io("copy", source))?;
    drop(opened);
    let (report, _) = probe_copy_in_child(exe, &copy, source, PROBE_TIMEOUT);
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
    for library in folder::libraries(dir, policy).map_err(from_folder)? {
        // A library the file rules refuse is skipped by the host: nothing
        // of it runs, and it collides with nothing.
        let Library::Trusted(file) = library else {
            continue;
        };
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
        None => dir.join(&name),
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
    copy_atomically(&copy, &dest)?;
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

/// Copies the checked private copy to `dest` with the store's atomic
/// replace (temporary file, sync, rename, sync of the folder; a missing
/// folder is created owner-only), as a file of mode 0644 owned by this
/// process's user. The temporary name has no library extension, so a host
/// starting meanwhile never tries to load it.
pub(crate) fn copy_atomically(copy: &PrivateCopy, dest: &Path) -> Result<(), InstallError> {
    let mut input = copy
        .reopen()
        .map_err(io("read the private copy of", dest))?;
    write_atomically(dest, INSTALLED_MODE, &mut input, IfExists::Replace).map_err(|e| {
        InstallError::Io {
            action: e.step.action(),
            path: e.dest,
            source: e.source,
        }
    })
}

fn from_folder(e: FolderError) -> InstallError {
    match e {
        FolderError::Unsafe(e) => InstallError::UnsafeFolder(e),
        FolderError::Io { path, source } => InstallError::Io {
            action: "list the plugin folder",
            path,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_copy_leaves_only_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.bin");
        fs::write(&source, b"library bytes").expect("write");
        // A set-uid, world-writable source must not pass its mode on.
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&source, fs::Permissions::from_mode(0o4777)).expect("chmod");
        }
        let plugins = dir.path().join("plugins");
        let dest = plugins.join(library_file_name(&source).expect("name"));
        let mut opened = fs::File::open(&source).expect("open");
        let copy = PrivateCopy::of(&mut opened, "source.bin").expect("private copy");
        // What happens to the source after the copy no longer matters.
        fs::write(&source, b"swapped").expect("swap");
        copy_atomically(&copy, &dest).expect("copied");
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
            let mode = fs::metadata(&dest).expect("file").permissions().mode();
            assert_eq!(
                mode & 0o7777,
                0o644,
                "installed 0644 whatever the source's mode"
            );
        }
    }
}
