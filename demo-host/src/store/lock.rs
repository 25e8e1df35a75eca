//! The advisory locks beside the config file (`flock`), shared by the host
//! and every `demo-host` command that writes the config.
//!
//! - `milady.toml.lock`, **the write lock**: every read-modify-write of the
//!   config file, by a running host or by a command (`secrets encrypt`,
//!   `secrets import`, `secrets rotate-key`), holds it exclusively from
//!   the re-read to the rename. Since each writer re-reads the file under
//!   it, a command never loses a host's write, nor a host a command's.
//! - `milady.toml.host.lock`, **the host lock**: a host holds it shared for
//!   as long as it runs. `secrets rotate-key` takes it exclusively, without
//!   waiting, so it refuses to rotate while a host still encrypts with the
//!   old key, and no host starts in the middle of a rotation (a starting
//!   host waits for the rotation to end).
//!
//! `flock` locks belong to the open file and go away with the process,
//! also on SIGKILL: a crash never leaves a lock behind. The lock files
//! are empty; they are never removed (removing one while another process
//! waits on it would split the lock in two).

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use rustix::fs::{FlockOperation, flock};

/// Mode of the lock files.
const LOCK_MODE: u32 = 0o600;

/// The write lock, held until dropped.
#[derive(Debug)]
pub(crate) struct WriteLock {
    _file: File,
}

/// The host lock held shared by a running host, until dropped.
#[derive(Debug)]
pub(crate) struct HostLock {
    _file: File,
}

/// The host lock held exclusively by a key rotation, until dropped.
#[derive(Debug)]
pub(crate) struct NoHost {
    _file: File,
}

/// The write lock's file for the config file `config`.
pub(crate) fn write_lock_file(config: &Path) -> PathBuf {
    beside(config, ".lock")
}

/// The host lock's file for the config file `config`.
pub(crate) fn host_lock_file(config: &Path) -> PathBuf {
    beside(config, ".host.lock")
}

/// Takes the write lock, waiting for the writer that holds it.
pub(crate) fn lock_writes(config: &Path) -> io::Result<WriteLock> {
    let file = open_lock_file(&write_lock_file(config))?;
    lock(&file, FlockOperation::LockExclusive)?;
    Ok(WriteLock { _file: file })
}

/// Takes the host lock shared, for a host's lifetime; waits while a key
/// rotation runs.
pub(crate) fn hold_host_lock(config: &Path) -> io::Result<HostLock> {
    let file = open_lock_file(&host_lock_file(config))?;
    if let Err(err) = lock(&file, FlockOperation::NonBlockingLockShared) {
        if err.kind() != io::ErrorKind::WouldBlock {
            return Err(err);
        }
        tracing::info!(
            config = %config.display(),
            "a secrets key rotation is running on this config; waiting for it to end"
        );
        lock(&file, FlockOperation::LockShared)?;
    }
    Ok(HostLock { _file: file })
}

/// Takes the host lock exclusively, without waiting: `None` while any host
/// holds it.
pub(crate) fn exclude_hosts(config: &Path) -> io::Result<Option<NoHost>> {
    let file = open_lock_file(&host_lock_file(config))?;
    match lock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(NoHost { _file: file })),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) => Err(err),
    }
}

/// `config` with `suffix` appended to its file name, beside the file it
/// names: a config that is a symbolic link (a dotfiles repository) is
/// locked beside its target, where writes land, whoever names it how.
fn beside(config: &Path, suffix: &str) -> PathBuf {
    let target = match fs::symlink_metadata(config) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(config).unwrap_or_else(|_| config.to_owned())
        }
        _ => config.to_owned(),
    };
    let mut name = target.file_name().map(|n| n.to_owned()).unwrap_or_default();
    name.push(suffix);
    target.with_file_name(name)
}

/// Opens (creating it, and a missing folder, owner-only) a lock file.
/// An existing one is opened read-only, which `flock` needs no more than,
/// so a read-only file system still locks.
fn open_lock_file(path: &Path) -> io::Result<File> {
    match File::open(path) {
        Ok(file) => return Ok(file),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    super::atomic::ensure_folder_of(path).map_err(|e| e.source)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_MODE)
        .open(path)
}

/// `flock`, retried when a signal interrupts the wait.
fn lock(file: &File, operation: FlockOperation) -> io::Result<()> {
    loop {
        match flock(file, operation) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Whether another open file could take `operation` on `path` now.
    fn could_take(path: &Path, operation: FlockOperation) -> io::Result<bool> {
        let file = File::open(path)?;
        match lock(&file, operation) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(err) => Err(err),
        }
    }

    #[test]
    fn the_write_lock_excludes_another_writer_until_dropped() -> TestResult {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("cfg").join("milady.toml");
        let held = lock_writes(&config)?;
        let file = write_lock_file(&config);
        assert_eq!(fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
        assert!(!could_take(
            &file,
            FlockOperation::NonBlockingLockExclusive
        )?);
        assert!(!could_take(&file, FlockOperation::NonBlockingLockShared)?);
        drop(held);
        assert!(could_take(&file, FlockOperation::NonBlockingLockExclusive)?);
        Ok(())
    }

    #[test]
    fn hosts_share_their_lock_and_exclude_a_rotation() -> TestResult {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("milady.toml");
        let first = hold_host_lock(&config)?;
        let second = hold_host_lock(&config)?;
        assert!(exclude_hosts(&config)?.is_none(), "hosts are running");
        drop(first);
        assert!(exclude_hosts(&config)?.is_none(), "one host still runs");
        drop(second);
        let rotation = exclude_hosts(&config)?.ok_or("no host runs")?;
        // A host cannot take its lock while the rotation holds it.
        let file = host_lock_file(&config);
        assert!(!could_take(&file, FlockOperation::NonBlockingLockShared)?);
        drop(rotation);
        assert!(could_take(&file, FlockOperation::NonBlockingLockShared)?);
        Ok(())
    }

    #[test]
    fn the_write_lock_is_independent_of_the_host_lock() -> TestResult {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("milady.toml");
        let _host = hold_host_lock(&config)?;
        let write = lock_writes(&config)?;
        drop(write);
        Ok(())
    }

    #[test]
    fn a_symlinked_config_is_locked_beside_its_target() -> TestResult {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("repo").join("milady.toml");
        fs::create_dir_all(target.parent().ok_or("folder")?)?;
        fs::write(&target, "")?;
        let link = dir.path().join("milady.toml");
        std::os::unix::fs::symlink(&target, &link)?;
        assert_eq!(
            write_lock_file(&link),
            fs::canonicalize(target.parent().ok_or("folder")?)?.join("milady.toml.lock")
        );
        Ok(())
    }
}
