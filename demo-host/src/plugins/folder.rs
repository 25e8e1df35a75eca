//! The plugin folder under the host's file rules (`store::file_safety`,
//! OpenSSH's StrictModes): the folder must not be writable by group or
//! others nor owned by another user, and each library must pass the same
//! rules before anything of it runs, in a probe child or in the host. A
//! library another user could have planted or changed is refused with the
//! reason and the fix; a folder others can write stops start-up, since any
//! file in it could be swapped.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::{
    plugins::loader,
    store::file_safety::{self, CheckError, FilePolicy, UnsafeFile},
};

/// One library file of the folder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Library {
    /// It passed the file rules.
    Trusted(PathBuf),
    /// It did not: the file and why, with the fix.
    Refused(PathBuf, String),
}

/// The plugin folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FolderError {
    /// The folder is not safe to trust.
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    /// It could not be listed or inspected.
    #[error("cannot list the plugin folder {}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Every library in `dir` (sorted by name, as the host loads them), each
/// trusted or refused under `policy`. A missing folder holds none; an
/// unsafe one is an error.
pub(crate) fn libraries(dir: &Path, policy: FilePolicy) -> Result<Vec<Library>, FolderError> {
    check_folder(dir, policy)?;
    let files = loader::library_files(dir).map_err(|source| FolderError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(files
        .into_iter()
        .map(|file| match file_safety::check_file(&file, policy) {
            Ok(_) => Library::Trusted(file),
            Err(CheckError::Unsafe(e)) => {
                let reason = format!("not trusted: {}", e.explain());
                Library::Refused(file, reason)
            }
            Err(CheckError::Io { source, .. }) => {
                let reason = format!("cannot inspect the file: {source}");
                Library::Refused(file, reason)
            }
        })
        .collect())
}

/// Checks the plugin folder itself; a missing folder passes (it holds
/// nothing, and is created owner-only when something is installed).
pub(crate) fn check_folder(dir: &Path, policy: FilePolicy) -> Result<(), FolderError> {
    match file_safety::check_folder(dir, policy) {
        Ok(()) => Ok(()),
        Err(CheckError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(CheckError::Io { path, source }) => Err(FolderError::Io { path, source }),
        Err(CheckError::Unsafe(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;
    use crate::plugins::loader::LIBRARY_EXTENSION;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_library_others_can_write_is_refused_and_the_rest_trusted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let good = dir.path().join(format!("a.{LIBRARY_EXTENSION}"));
        let open = dir.path().join(format!("b.{LIBRARY_EXTENSION}"));
        fs::write(&good, b"x")?;
        fs::write(&open, b"x")?;
        fs::set_permissions(&open, fs::Permissions::from_mode(0o666))?;
        let listed = libraries(dir.path(), FilePolicy::strict())?;
        assert_eq!(listed[0], Library::Trusted(good.clone()));
        let Library::Refused(file, reason) = &listed[1] else {
            panic!("{listed:?}");
        };
        assert_eq!(file, &open);
        assert!(reason.contains("chmod go-w"), "{reason}");
        assert_eq!(
            libraries(dir.path(), FilePolicy::permissive())?,
            [Library::Trusted(good), Library::Trusted(open)]
        );
        Ok(())
    }

    #[test]
    fn a_folder_others_can_write_is_an_error_and_a_missing_one_is_empty() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert_eq!(
            libraries(&dir.path().join("none"), FilePolicy::strict())?,
            []
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
        let err = libraries(dir.path(), FilePolicy::strict()).expect_err("refused");
        assert!(matches!(err, FolderError::Unsafe(_)), "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        Ok(())
    }
}
