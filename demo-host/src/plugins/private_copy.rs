//! Private, immutable copies of plugin libraries: what the host probes,
//! hashes and loads, so that nothing done to the plugin folder afterwards
//! (`cp new.so plugins/old.so` truncates and rewrites the file in place)
//! can reach the running host. A loaded library is a mapped file; had the
//! host mapped the folder's file, the next call into a page that a rewrite
//! truncated away would die with `SIGBUS`.
//!
//! On Linux the copy is a sealed memfd: an anonymous in-memory file that
//! the copy fills and then seals against writing, shrinking and growing
//! (and against removing the seals), loaded through `/proc/self/fd/N`. The
//! probe child receives the same memfd as its standard input and loads it
//! as `/proc/self/fd/0`, so the bytes checked are the bytes loaded. Where
//! memfds are not available (other systems, no `/proc`), the copy is a file
//! in a fresh owner-only temporary folder, removed once the library is
//! open (a mapping outlives its name).

use std::{
    fs::File,
    io::{self, Seek as _, SeekFrom},
    path::{Path, PathBuf},
};

/// A private, immutable copy of a library.
#[derive(Debug)]
pub(crate) struct PrivateCopy {
    /// The copy, open for reading.
    file: File,
    /// The path the dynamic loader opens it by.
    load_path: PathBuf,
    /// Its size in bytes.
    len: u64,
    /// How the copy is kept.
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A sealed memfd (`load_path` is `/proc/self/fd/N`).
    #[cfg(target_os = "linux")]
    Memfd,
    /// A file in a private temporary folder, removed on drop.
    TempFile(tempfile::TempDir),
}

impl PrivateCopy {
    /// Copies everything in `source` (from its start) into a new private,
    /// immutable copy named after `name` (the library's file name).
    pub(crate) fn of(source: &mut File, name: &str) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        match memfd::sealed_copy(source, name) {
            Ok(copy) => return Ok(copy),
            Err(e) => tracing::debug!(
                error = %e,
                "no sealed in-memory copy of a plugin library; using a private temporary file"
            ),
        }
        Self::temp_file(source, name)
    }

    /// The fallback: a copy in a fresh owner-only temporary folder.
    pub(crate) fn temp_file(source: &mut File, name: &str) -> io::Result<Self> {
        let folder = tempfile::Builder::new()
            .prefix("demo-host-plugin-")
            .tempdir()?;
        // Owner-only before the copy goes in (the creation mode follows the
        // umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        let load_path = folder.path().join(safe_name(name));
        let mut copy = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&load_path)?;
        source.seek(SeekFrom::Start(0))?;
        let len = io::copy(source, &mut copy)?;
        copy.sync_data()?;
        let file = File::open(&load_path)?;
        Ok(Self {
            file,
            load_path,
            len,
            kind: Kind::TempFile(folder),
        })
    }

    /// The path the dynamic loader opens the copy by.
    pub(crate) fn load_path(&self) -> &Path {
        &self.load_path
    }

    /// The copy's size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// A new handle to the copy, reading from its start.
    pub(crate) fn reopen(&self) -> io::Result<File> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }

    /// How a child process reaches the same copy: the path it loads, and
    /// the file to give it as its standard input when that path is
    /// `/proc/self/fd/0` (a memfd has no other name).
    pub(crate) fn for_child(&self) -> io::Result<(PathBuf, Option<File>)> {
        match &self.kind {
            #[cfg(target_os = "linux")]
            Kind::Memfd => Ok((PathBuf::from("/proc/self/fd/0"), Some(self.reopen()?))),
            Kind::TempFile(_) => Ok((self.load_path.clone(), None)),
        }
    }

    /// Keeps the copy as long as the process lives. Called once the loader
    /// has opened a library from it, whatever came of it (libraries are
    /// never unloaded): a memfd's descriptor number must never be reused,
    /// because the dynamic loader knows the library by the name
    /// `/proc/self/fd/N` and would hand the old library out again for a new
    /// file of that name. A temporary copy's name may go: the mapping stays.
    pub(crate) fn keep_for_process(self) {
        match self.kind {
            #[cfg(target_os = "linux")]
            Kind::Memfd => {
                // Deliberately leaked: the descriptor stays open until exit.
                let _ = std::os::fd::IntoRawFd::into_raw_fd(self.file);
            }
            Kind::TempFile(folder) => drop(folder),
        }
    }

    /// Whether the copy is a sealed memfd.
    #[cfg(test)]
    pub(crate) fn is_sealed_memfd(&self) -> bool {
        match self.kind {
            #[cfg(target_os = "linux")]
            Kind::Memfd => true,
            Kind::TempFile(_) => false,
        }
    }
}

/// A file name safe to create: the library's own name, or a neutral one.
fn safe_name(name: &str) -> String {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && name.len() <= 200;
    if ok {
        name.to_owned()
    } else {
        format!("plugin.{}", crate::plugins::loader::LIBRARY_EXTENSION)
    }
}

#[cfg(target_os = "linux")]
mod memfd {
    use std::{
        fs::File,
        io::{self, Seek as _, SeekFrom},
        os::fd::AsRawFd as _,
        path::PathBuf,
    };

    use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};

    use super::{Kind, PrivateCopy};

    /// The longest memfd name the kernel takes (249 bytes plus `memfd:`).
    const MAX_NAME: usize = 200;

    pub(super) fn sealed_copy(source: &mut File, name: &str) -> io::Result<PrivateCopy> {
        let mut label = format!("plugin:{name}").replace('\0', "");
        while label.len() > MAX_NAME {
            label.pop();
        }
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        // Ask for an executable memfd explicitly where the kernel knows the
        // flag (6.3+; `vm.memfd_noexec` may otherwise make it non-executable);
        // older kernels refuse the flag, and their memfds are executable.
        let fd = match memfd_create(&label, flags | MemfdFlags::EXEC) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::INVAL) => memfd_create(&label, flags)?,
            Err(e) => return Err(e.into()),
        };
        let mut file = File::from(fd);
        source.seek(SeekFrom::Start(0))?;
        let len = io::copy(source, &mut file)?;
        fcntl_add_seals(
            &file,
            SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )?;
        let load_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        // The loader reaches the copy through /proc; without it, fall back.
        if !load_path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "/proc/self/fd is not available",
            ));
        }
        Ok(PrivateCopy {
            file,
            load_path,
            len,
            kind: Kind::Memfd,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn source(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libx.so");
        std::fs::write(&path, bytes).expect("write");
        (dir, path)
    }

    fn read_all(copy: &PrivateCopy) -> Vec<u8> {
        let mut out = Vec::new();
        File::open(copy.load_path())
            .expect("open by load path")
            .read_to_end(&mut out)
            .expect("read");
        out
    }

    #[test]
    fn the_copy_keeps_its_bytes_whatever_happens_to_the_source() {
        let (_dir, path) = source(b"original library bytes");
        let mut file = File::open(&path).expect("open");
        let copy = PrivateCopy::of(&mut file, "libx.so").expect("copied");
        assert_eq!(copy.len(), 22);
        // What `cp new.so plugins/old.so` does: truncate, rewrite in place.
        let mut rewrite = File::options()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("reopen");
        rewrite.write_all(b"new").expect("rewrite");
        drop(rewrite);
        assert_eq!(read_all(&copy), b"original library bytes");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(read_all(&copy), b"original library bytes");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_the_copy_is_a_sealed_memfd_nobody_can_change() {
        let (_dir, path) = source(b"sealed bytes");
        let copy =
            PrivateCopy::of(&mut File::open(&path).expect("open"), "libx.so").expect("copied");
        assert!(copy.is_sealed_memfd());
        assert!(copy.load_path().starts_with("/proc/self/fd"));
        // Even opened for writing through its name, it cannot change.
        let mut w = File::options()
            .write(true)
            .open(copy.load_path())
            .expect("open for writing");
        assert!(w.write_all(b"x").is_err(), "a sealed memfd refuses writes");
        assert!(w.set_len(0).is_err(), "and truncation");
        assert_eq!(read_all(&copy), b"sealed bytes");
        let (child_path, stdin) = copy.for_child().expect("for child");
        assert_eq!(child_path, PathBuf::from("/proc/self/fd/0"));
        assert!(stdin.is_some());
    }

    #[test]
    fn the_fallback_copy_is_private_and_goes_away() {
        let (_dir, path) = source(b"temp bytes");
        let copy = PrivateCopy::temp_file(&mut File::open(&path).expect("open"), "libx.so")
            .expect("copied");
        assert!(!copy.is_sealed_memfd());
        let folder = copy.load_path().parent().expect("folder").to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&folder)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert_eq!(read_all(&copy), b"temp bytes");
        let (child_path, stdin) = copy.for_child().expect("for child");
        assert_eq!(child_path, copy.load_path());
        assert!(stdin.is_none());
        copy.keep_for_process();
        assert!(!folder.exists(), "the name goes once the library is open");
    }

    #[test]
    fn odd_names_become_a_neutral_one() {
        assert_eq!(safe_name("libx.so"), "libx.so");
        assert!(safe_name("..").starts_with("plugin."));
        assert!(safe_name(&"x".repeat(300)).starts_with("plugin."));
    }
}
