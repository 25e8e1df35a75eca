//! The host's one atomic file replace. The new content goes into a temporary
//! file in the destination's folder (same file system, so the rename is
//! atomic), which gets its mode, is fully written and fsynced, and is then
//! renamed over the destination; last the folder is fsynced so the rename
//! itself survives a crash. A reader sees either the old file or the new one,
//! never a mix. On a failure before the rename the temporary file is removed
//! (dropping a `NamedTempFile` deletes it) and the destination is untouched.
//!
//! The config store writes its file through it (mode 0600: the file holds
//! secrets); the plugin installer can copy libraries with it (content from a
//! reader). A missing destination folder is created owner-only (0700).
//!
//! Temporary files are named `.<destination file name>.<random>.tmp`: hidden,
//! and never with the destination's extension, so a host starting meanwhile
//! does not load a half-copied plugin library. A write killed mid-way
//! (SIGKILL, power loss) leaves one behind; [`remove_stale_temp_files`]
//! removes them.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a destination folder the helper creates: owner only.
const DIR_MODE: u32 = 0o700;

/// What to do when the destination already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfExists {
    /// Replace it.
    Replace,
    /// Leave it alone and fail the [`Step::Rename`] step with
    /// `io::ErrorKind::AlreadyExists` (a no-clobber rename).
    Fail,
}

/// One step of an atomic write; an error names the step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Creating the missing destination folder.
    CreateFolder,
    /// Setting the mode of the folder just created.
    SetFolderMode,
    /// Creating the temporary file.
    CreateTemp,
    /// Setting the mode of the temporary file.
    SetMode,
    /// Writing the content into the temporary file (reading it from the
    /// reader included).
    Write,
    /// Flushing the temporary file to disk.
    Sync,
    /// Renaming the temporary file over the destination.
    Rename,
    /// Flushing the folder, which makes the rename durable.
    SyncFolder,
}

impl Step {
    /// The step as a verb phrase whose object is the destination, as in
    /// "cannot {action} {destination}".
    pub(crate) fn action(self) -> &'static str {
        match self {
            Self::CreateFolder => "create folder for",
            Self::SetFolderMode => "set folder permissions for",
            Self::CreateTemp => "create temp file for",
            Self::SetMode => "set permissions of",
            Self::Write => "write",
            Self::Sync => "sync",
            Self::Rename => "replace",
            Self::SyncFolder => "sync folder of",
        }
    }
}

/// Why an atomic write failed. Before [`Step::SyncFolder`] the destination is
/// untouched; at that step the rename happened but may not be durable.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} {}: {source}", .step.action(), .dest.display())]
pub(crate) struct AtomicWriteError {
    /// The step that failed.
    pub(crate) step: Step,
    /// The destination of the write.
    pub(crate) dest: PathBuf,
    /// The underlying error.
    #[source]
    pub(crate) source: io::Error,
}

/// Replaces `dest` atomically with everything `content` yields, as a file
/// of mode `mode` (see the module notes for the steps).
///
/// Bytes are a reader too: `write_atomically(dest, 0o600, &mut
/// text.as_bytes(), IfExists::Replace)`; a file to copy is `&mut file` (or
/// any `&mut dyn Read`). A `dest` that is a symlink is replaced by the new
/// file; resolve it first to write through it.
pub(crate) fn write_atomically<R: Read + ?Sized>(
    dest: &Path,
    mode: u32,
    content: &mut R,
    if_exists: IfExists,
) -> Result<(), AtomicWriteError> {
    match write_atomically_gated(dest, mode, content, if_exists, &|_| Ok(()), || {
        Ok::<(), std::convert::Infallible>(())
    })? {
        Ok(()) => Ok(()),
        Err(never) => match never {},
    }
}

/// [`write_atomically`] with `before_step` called before each step (an
/// error it returns fails that step as if the step itself had failed: the
/// seam for injected faults) and `approve` called once the temporary file
/// is written and synced, just before the rename. When `approve` refuses,
/// the temporary file is removed, the destination is left untouched and its
/// error is returned as `Ok(Err(..))`. This lets a check of the content (the
/// config's re-parse) run on another thread while the disk syncs.
pub(crate) fn write_atomically_gated<R: Read + ?Sized, E>(
    dest: &Path,
    mode: u32,
    content: &mut R,
    if_exists: IfExists,
    before_step: &dyn Fn(Step) -> io::Result<()>,
    approve: impl FnOnce() -> Result<(), E>,
) -> Result<Result<(), E>, AtomicWriteError> {
    let step = |step: Step| -> Result<(), AtomicWriteError> {
        before_step(step).map_err(failed(step, dest))
    };
    let dir = folder_of(dest);
    ensure_private_dir(dir, &step, dest)?;

    step(Step::CreateTemp)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(dest))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(failed(Step::CreateTemp, dest))?;
    // Explicit chmod: the creation mode is filtered by the umask.
    step(Step::SetMode)?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(failed(Step::SetMode, dest))?;
    step(Step::Write)?;
    io::copy(content, tmp.as_file_mut()).map_err(failed(Step::Write, dest))?;
    step(Step::Sync)?;
    tmp.as_file().sync_all().map_err(failed(Step::Sync, dest))?;
    if let Err(refused) = approve() {
        // Dropping the temp file deletes it.
        return Ok(Err(refused));
    }

    step(Step::Rename)?;
    let persisted = match if_exists {
        IfExists::Replace => tmp.persist(dest),
        IfExists::Fail => tmp.persist_noclobber(dest),
    };
    // `PersistError` drops the temp file with it, which deletes it.
    persisted.map_err(|err| failed(Step::Rename, dest)(err.error))?;

    step(Step::SyncFolder)?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(failed(Step::SyncFolder, dest))
        .map(Ok)
}

/// Removes the temporary files that atomic writes of `dest` killed mid-way
/// left in its folder (see the module notes for their names); returns how
/// many. Only call it when no write of `dest` can be in progress. Failures
/// are ignored: a file that cannot be removed is simply left.
pub(crate) fn remove_stale_temp_files(dest: &Path) -> usize {
    let Some(name) = dest.file_name() else {
        return 0;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(folder_of(dest)) else {
        return 0;
    };
    let mut removed = 0usize;
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with(&prefix)
            && file_name.ends_with(".tmp")
            && entry.file_type().is_ok_and(|t| t.is_file())
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Creates `dest`'s folder (and its parents) owner-only when it is
/// missing, as a write of `dest` would, for files that are not written
/// through [`write_atomically`] or whose folder is checked first; returns
/// the folder.
pub(crate) fn ensure_folder_of(dest: &Path) -> Result<&Path, AtomicWriteError> {
    let dir = folder_of(dest);
    ensure_private_dir(dir, &|_| Ok(()), dest)?;
    Ok(dir)
}

/// The folder holding `dest` (`.` for a bare file name).
fn folder_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The start of the temporary file names of writes of `dest`.
fn temp_prefix(dest: &Path) -> String {
    match dest.file_name() {
        Some(name) => format!(".{}.", name.to_string_lossy()),
        None => ".".to_owned(),
    }
}

/// Creates a missing folder (and parents) with mode 0700.
fn ensure_private_dir(
    dir: &Path,
    step: &dyn Fn(Step) -> Result<(), AtomicWriteError>,
    dest: &Path,
) -> Result<(), AtomicWriteError> {
    if dir.is_dir() {
        return Ok(());
    }
    step(Step::CreateFolder)?;
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(failed(Step::CreateFolder, dest))?;
    // Explicit chmod: the creation mode is filtered by the umask.
    step(Step::SetFolderMode)?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
        .map_err(failed(Step::SetFolderMode, dest))
}

/// Maps an I/O error of `step` to an [`AtomicWriteError`] about `dest`.
fn failed(step: Step, dest: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError + '_ {
    move |source| AtomicWriteError {
        step,
        dest: dest.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn a_reader_is_copied_into_a_new_private_folder() -> TestResult {
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("libplugin.so");
        fs::write(&source, b"library bytes")?;
        let folder = dir.path().join("plugins");
        let dest = folder.join("libplugin.so");
        let mut input: Box<dyn Read> = Box::new(File::open(&source)?);
        write_atomically(&dest, 0o755, input.as_mut(), IfExists::Replace)?;
        assert_eq!(fs::read(&dest)?, b"library bytes");
        assert_eq!(fs::metadata(&dest)?.mode() & 0o777, 0o755);
        assert_eq!(fs::metadata(&folder)?.mode() & 0o777, 0o700);
        assert_eq!(names(&folder)?, ["libplugin.so"]);
        Ok(())
    }

    #[test]
    fn no_clobber_keeps_the_existing_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("milady.toml");
        fs::write(&dest, "theirs")?;
        let err = write_atomically(&dest, 0o600, &mut &b"ours"[..], IfExists::Fail)
            .expect_err("the destination exists");
        assert_eq!(err.step, Step::Rename);
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&dest)?, "theirs");
        assert_eq!(names(dir.path())?, ["milady.toml"]);
        Ok(())
    }

    #[test]
    fn a_refused_write_leaves_the_destination_and_no_temp_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("milady.toml");
        fs::write(&dest, "before")?;
        let mut seen = None;
        let refused = write_atomically_gated(
            &dest,
            0o600,
            &mut &b"after"[..],
            IfExists::Replace,
            &|_| Ok(()),
            || {
                // The content is on disk, synced, under a temporary name.
                seen = Some(names(dir.path())?.len());
                Err::<(), io::Error>(io::Error::other("the check refused"))
            },
        )?;
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("the check refused".to_owned())
        );
        assert_eq!(seen, Some(2));
        assert_eq!(fs::read_to_string(&dest)?, "before");
        assert_eq!(names(dir.path())?, ["milady.toml"]);
        let approved = write_atomically_gated(
            &dest,
            0o600,
            &mut &b"after"[..],
            IfExists::Replace,
            &|_| Ok(()),
            || Ok::<(), io::Error>(()),
        )?;
        assert!(approved.is_ok());
        assert_eq!(fs::read_to_string(&dest)?, "after");
        assert_eq!(names(dir.path())?, ["milady.toml"]);
        Ok(())
    }

    #[test]
    fn stale_temp_files_of_the_destination_only_are_removed() -> TestResult {
        let dir = tempfile::tempdir()?;
        for name in [".milady.toml.a1B2c3.tmp", ".other.toml.x.tmp", "notes.tmp"] {
            fs::write(dir.path().join(name), "x")?;
        }
        assert_eq!(remove_stale_temp_files(&dir.path().join("milady.toml")), 1);
        assert_eq!(names(dir.path())?, [".other.toml.x.tmp", "notes.tmp"]);
        Ok(())
    }
}
