//! What OpenSSH calls StrictModes, for the files the host trusts: the config
//! file (it holds secrets and says which plugins run) and its folder, the
//! plugin folder and its libraries (code the host loads into itself).
//!
//! On a machine shared with other users, such a file is refused when:
//!
//! - it, or the folder it sits in, is writable by group or others (anyone
//!   who can write the folder can replace the file);
//! - it is owned by another user (only the host's user and root are
//!   trusted);
//! - it is a symbolic link that is not, or whose target is not, owned by
//!   the host's user or root (a link planted by another user would make the
//!   host read, and rewrite, a file of the attacker's choosing);
//! - it is not a regular file: a FIFO blocks a reader for ever, a device
//!   such as `/dev/zero` never ends.
//!
//! Every refusal names the path and the command that fixes it. Reads are
//! bounded in size and never block on a special file ([`read_bounded`]).
//!
//! [`FilePolicy::permissive`] is the escape hatch for unusual set-ups
//! (`--no-strict-modes`): it skips the owner, mode and link-owner rules;
//! the file-type rule and the bounded read stay, since they guard against
//! hangs, not other users.

use std::{
    fs::{self, File, Metadata},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags};

/// How strictly files are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilePolicy {
    strict: bool,
}

impl Default for FilePolicy {
    fn default() -> Self {
        Self::strict()
    }
}

impl FilePolicy {
    /// Every rule (the default).
    pub const fn strict() -> Self {
        Self { strict: true }
    }

    /// The escape hatch: no owner, mode or link-owner rule; special files
    /// are still refused and reads still bounded.
    pub const fn permissive() -> Self {
        Self { strict: false }
    }

    /// Whether the owner, mode and link-owner rules apply.
    pub const fn is_strict(self) -> bool {
        self.strict
    }
}

/// A file or folder the host refuses to trust. The message names the path
/// and how to fix it; [`UnsafeFile::problem`] is the same without the path,
/// for API clients.
#[derive(Debug, thiserror::Error)]
#[error("refusing {}: {problem}; fix: {fix}", path.display())]
pub struct UnsafeFile {
    /// The offending path (the link itself, or the file or folder).
    pub path: PathBuf,
    /// What is wrong, e.g. "it is writable by group or others (mode 0777)".
    problem: String,
    /// The command or action that fixes it.
    fix: String,
}

impl UnsafeFile {
    /// What is wrong, without the path.
    pub fn problem(&self) -> &str {
        &self.problem
    }

    /// What is wrong and the fix, without the leading path (for a message
    /// that names the file already).
    pub fn explain(&self) -> String {
        format!("{}; fix: {}", self.problem, self.fix)
    }
}

/// A check failed: the file is unsafe, or it could not be inspected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// The rules refuse it.
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    /// It could not be inspected (`NotFound` included).
    #[error("cannot inspect {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The most symbolic links followed in a row.
const MAX_LINKS: usize = 8;

/// What is expected at a path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    File,
    Folder,
}

/// Checks the folder at `path` (following links the rules allow).
pub(crate) fn check_folder(path: &Path, policy: FilePolicy) -> Result<(), CheckError> {
    check(path, Expect::Folder, policy).map(|_| ())
}

/// Checks the file at `path` and the folder it sits in (and, when `path`
/// is a link, the folder of its target, where writes land); returns the
/// path of the file itself (the link's target, or `path`).
pub(crate) fn check_file(path: &Path, policy: FilePolicy) -> Result<PathBuf, CheckError> {
    check_folder(folder_of(path), policy)?;
    let target = check(path, Expect::File, policy)?;
    if target != path {
        check_folder(folder_of(&target), policy)?;
    }
    Ok(target)
}

/// Opens the regular file at `path` for reading. Never blocks on a FIFO
/// and never opens a device for good: anything but a regular file (checked
/// on the open file, so it cannot be swapped after the check) is an error
/// of kind `InvalidInput`.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    // Non-blocking, so opening a FIFO does not wait for a writer; no
    // controlling terminal from a tty device. (Reads of a regular file
    // ignore the flag.)
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_of(&meta)),
        ));
    }
    Ok(file)
}

/// Reads the regular file at `path` ([`open_regular`]), at most `max`
/// bytes (more is an `InvalidData` error).
pub(crate) fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(max)).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// The folder holding `path` (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Follows `path` through the links the rules allow and checks what it
/// ends at; returns that path.
fn check(path: &Path, expect: Expect, policy: FilePolicy) -> Result<PathBuf, CheckError> {
    let mut current = path.to_owned();
    for _ in 0..=MAX_LINKS {
        let meta = fs::symlink_metadata(&current).map_err(|source| CheckError::Io {
            path: current.clone(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            if policy.strict {
                check_owner(&current, &meta, "symbolic link", |p| {
                    format!("replace the link {} with a file of your own", p.display())
                })?;
            }
            let target = fs::read_link(&current).map_err(|source| CheckError::Io {
                path: current.clone(),
                source,
            })?;
            current = folder_of(&current).join(target);
            continue;
        }
        check_final(&current, &meta, expect, policy)?;
        return Ok(current);
    }
    Err(UnsafeFile {
        path: path.to_owned(),
        problem: format!("it is a chain of more than {MAX_LINKS} symbolic links"),
        fix: "point it at the file directly".to_owned(),
    }
    .into())
}

fn check_final(
    path: &Path,
    meta: &Metadata,
    expect: Expect,
    policy: FilePolicy,
) -> Result<(), CheckError> {
    if expect == Expect::File && meta.file_type().is_dir() {
        // Harmless (reading it fails at once): the error a read would give.
        return Err(CheckError::Io {
            path: path.to_owned(),
            source: io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error()),
        });
    }
    let right_type = match expect {
        Expect::File => meta.file_type().is_file(),
        Expect::Folder => meta.file_type().is_dir(),
    };
    if !right_type {
        let wanted = match expect {
            Expect::File => "a regular file",
            Expect::Folder => "a folder",
        };
        return Err(UnsafeFile {
            path: path.to_owned(),
            problem: format!("it is not {wanted} but {}", kind_of(meta)),
            fix: format!("put {wanted} there"),
        }
        .into());
    }
    if !policy.strict {
        return Ok(());
    }
    let what = match expect {
        Expect::File => "file",
        Expect::Folder => "folder",
    };
    check_owner(path, meta, what, |p| {
        format!(
            "chown {} {}",
            rustix::process::geteuid().as_raw(),
            p.display()
        )
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(UnsafeFile {
            path: path.to_owned(),
            problem: format!("the {what} is writable by group or others (mode {mode:04o})"),
            fix: format!("chmod go-w {}", path.display()),
        }
        .into());
    }
    Ok(())
}

/// Only the host's own user and root are trusted owners.
fn check_owner(
    path: &Path,
    meta: &Metadata,
    what: &str,
    fix: impl FnOnce(&Path) -> String,
) -> Result<(), UnsafeFile> {
    let me = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    if owner == me || owner == 0 {
        return Ok(());
    }
    Err(UnsafeFile {
        path: path.to_owned(),
        problem: format!(
            "the {what} is owned by another user (uid {owner}; this host runs as uid {me})"
        ),
        fix: fix(path),
    })
}

/// A file type in words.
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn chmod(path: &Path, mode: u32) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    fn unsafe_message(result: Result<impl std::fmt::Debug, CheckError>) -> String {
        match result {
            Err(CheckError::Unsafe(e)) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_private_file_in_a_private_folder_passes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("milady.toml");
        fs::write(&file, "[env]\n")?;
        chmod(&file, 0o644)?;
        assert_eq!(check_file(&file, FilePolicy::strict())?, file);
        chmod(dir.path(), 0o755)?;
        check_folder(dir.path(), FilePolicy::strict())?;
        Ok(())
    }

    #[test]
    fn writable_by_others_is_refused_with_the_chmod_that_fixes_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("milady.toml");
        fs::write(&file, "")?;
        chmod(&file, 0o666)?;
        let msg = unsafe_message(check_file(&file, FilePolicy::strict()));
        assert!(msg.contains("mode 0666"), "{msg}");
        assert!(
            msg.contains(&format!("chmod go-w {}", file.display())),
            "{msg}"
        );
        check_file(&file, FilePolicy::permissive())?;

        chmod(&file, 0o600)?;
        chmod(dir.path(), 0o777)?;
        let msg = unsafe_message(check_file(&file, FilePolicy::strict()));
        assert!(
            msg.contains(&format!("chmod go-w {}", dir.path().display())),
            "{msg}"
        );
        chmod(dir.path(), 0o700)?;
        Ok(())
    }

    #[test]
    fn special_files_are_refused_even_by_the_permissive_policy() -> TestResult {
        let msg = unsafe_message(check_file(Path::new("/dev/zero"), FilePolicy::permissive()));
        assert!(msg.contains("character device"), "{msg}");
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("plain");
        fs::write(&file, "")?;
        let msg = unsafe_message(check_folder(&file, FilePolicy::permissive()));
        assert!(msg.contains("not a folder"), "{msg}");
        Ok(())
    }

    #[test]
    fn links_of_this_user_are_followed_to_a_checked_target() -> TestResult {
        let dir = tempfile::tempdir()?;
        let real = dir.path().join("real.toml");
        fs::write(&real, "")?;
        let link = dir.path().join("milady.toml");
        symlink("real.toml", &link)?;
        assert_eq!(check_file(&link, FilePolicy::strict())?, real);
        chmod(&real, 0o646)?;
        let msg = unsafe_message(check_file(&link, FilePolicy::strict()));
        assert!(msg.contains("real.toml"), "the target is named: {msg}");
        let loop_a = dir.path().join("a");
        symlink("a", &loop_a)?;
        let msg = unsafe_message(check_file(&loop_a, FilePolicy::strict()));
        assert!(msg.contains("chain"), "{msg}");
        Ok(())
    }

    #[test]
    fn bounded_reads_refuse_fifos_devices_and_large_files_without_blocking() -> TestResult {
        let dir = tempfile::tempdir()?;
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600))?;
        let err = read_bounded(&fifo, 1024).expect_err("a FIFO");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = read_bounded(Path::new("/dev/zero"), 1024).expect_err("a device");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let file = dir.path().join("big");
        fs::write(&file, vec![b'x'; 1025])?;
        let err = read_bounded(&file, 1024).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(read_bounded(&file, 1025)?.len(), 1025);
        Ok(())
    }
}
