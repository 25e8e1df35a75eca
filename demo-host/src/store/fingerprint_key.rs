//! The fingerprint key (SPEC §8): the HMAC key behind every fingerprint the
//! host shows (`GET /api/secrets`, the audit log, token fingerprints).
//!
//! It lives with the secrets key, as `fingerprint.key` in the same folder
//! (`$XDG_DATA_HOME/milady/fingerprint.key` by default; beside the file of
//! `--secrets-key`; in the default folder when `MILADY_SECRETS_KEY` carries
//! the secrets key itself). It is a file of its own, so rotating the
//! encryption key (`demo-host secrets rotate-key`) never changes a
//! fingerprint, and it is shareable on purpose: `demo-host secrets
//! export-fingerprint-key` prints it, `import-fingerprint-key FILE` installs
//! it on another host of the same owner, and equal values then have equal
//! fingerprints on both. Created 0600 in a 0700 folder on first use,
//! without clobbering a key another process created at the same moment.
//!
//! The file: comment lines (`#`) and one line of 64 hex digits.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::store::{
    atomic::{self, IfExists},
    secrets_key::SecretsKey,
};

/// The file name, in the folder of the secrets key.
pub(crate) const FILE_NAME: &str = "fingerprint.key";

const KEY_MODE: u32 = 0o600;

/// The fingerprint key could not be read, created or installed.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintKeyError {
    /// The file could not be read or written.
    #[error("cannot {action} the fingerprint key {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file holds no key of the right shape.
    #[error("the fingerprint key {path} is not a line of 64 hex digits")]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// The file is open to other users.
    #[error("the fingerprint key {path} is readable by other users (chmod 600 it)")]
    TooOpen {
        /// The key file.
        path: PathBuf,
    },
}

/// A fingerprint key: 32 bytes, wiped when dropped, never printed.
#[derive(Clone)]
pub(crate) struct FingerprintKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(<hidden>)")
    }
}

impl FingerprintKey {
    /// The key bytes.
    pub(crate) fn bytes(&self) -> [u8; 32] {
        *self.0
    }

    /// The text of a key file holding this key.
    pub(crate) fn file_text(&self) -> Zeroizing<String> {
        let mut text = String::from(
            "# milady fingerprint key (HMAC-SHA256). Hosts holding the same key show equal\n\
             # fingerprints for equal values. Keep it private; it is not the secrets key.\n",
        );
        for byte in self.0.iter() {
            text.push_str(&format!("{byte:02x}"));
        }
        text.push('\n');
        Zeroizing::new(text)
    }

    /// Parses a key file's text.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, FingerprintKeyError> {
        let malformed = || FingerprintKeyError::Malformed {
            path: path.to_owned(),
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(malformed)?;
        if lines.next().is_some() || line.len() != 64 {
            return Err(malformed());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = line
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(malformed)?;
        }
        Ok(Self(key))
    }

    fn generate(path: &Path) -> Result<Self, FingerprintKeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).map_err(|e| FingerprintKeyError::Io {
            action: "generate",
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(Self(key))
    }
}

/// Where the fingerprint key of a host whose secrets key is `secrets`
/// lives (see the module notes).
pub(crate) fn file_for(
    secrets: &SecretsKey,
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let key_file = match secrets.file() {
        Some(file) => file.to_owned(),
        None => SecretsKey::default_file(xdg_data_home, home),
    };
    key_file.with_file_name(FILE_NAME)
}

/// Reads the key at `path`.
pub(crate) fn read(path: &Path) -> Result<FingerprintKey, FingerprintKeyError> {
    let io = |action| {
        move |source| FingerprintKeyError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let meta = fs::metadata(path).map_err(io("read"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(FingerprintKeyError::TooOpen {
            path: path.to_owned(),
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io("read"))?);
    FingerprintKey::parse(&text, path)
}

/// Reads the key at `path`, creating it first when there is none.
pub(crate) fn load_or_create(path: &Path) -> Result<FingerprintKey, FingerprintKeyError> {
    match read(path) {
        Err(FingerprintKeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
        }
        other => return other,
    }
    let key = FingerprintKey::generate(path)?;
    match write(path, &key, IfExists::Fail) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the fingerprint key file");
            Ok(key)
        }
        // Another process created it meanwhile: its key wins.
        Err(FingerprintKeyError::Io { source, .. })
            if source.kind() == io::ErrorKind::AlreadyExists =>
        {
            read(path)
        }
        Err(e) => Err(e),
    }
}

/// Installs `text` (a key file's content, as `export` prints it) as the
/// key at `path`, replacing any key there. Returns whether a different key
/// was replaced.
pub(crate) fn install(path: &Path, text: &str) -> Result<bool, FingerprintKeyError> {
    let key = FingerprintKey::parse(text, Path::new("(the imported text)"))?;
    let replaced = match read(path) {
        Ok(old) => old.bytes() != key.bytes(),
        Err(_) => false,
    };
    write(path, &key, IfExists::Replace)?;
    Ok(replaced)
}

fn write(
    path: &Path,
    key: &FingerprintKey,
    if_exists: IfExists,
) -> Result<(), FingerprintKeyError> {
    // The write creates a missing folder owner-only.
    let text = key.file_text();
    atomic::write_atomically(path, KEY_MODE, &mut text.as_bytes(), if_exists).map_err(|e| {
        FingerprintKeyError::Io {
            action: e.step.action(),
            path: path.to_owned(),
            source: e.source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    #[test]
    fn created_once_private_and_stable() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("milady").join(FILE_NAME);
        let first = load_or_create(&path)?;
        let again = load_or_create(&path)?;
        assert_eq!(first.bytes(), again.bytes());
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().ok_or("no folder")?)?
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert!(!format!("{first:?}").contains(&format!("{:02x}", first.bytes()[0]).repeat(2)));
        Ok(())
    }

    #[test]
    fn exported_text_installs_the_same_key_elsewhere() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("a").join(FILE_NAME);
        let b = dir.path().join("b").join(FILE_NAME);
        let key = load_or_create(&a)?;
        let other = load_or_create(&b)?;
        assert_ne!(key.bytes(), other.bytes());
        assert!(
            install(&b, &key.file_text())?,
            "a different key was replaced"
        );
        assert_eq!(read(&b)?.bytes(), key.bytes());
        assert!(!install(&b, &key.file_text())?);
        Ok(())
    }

    #[test]
    fn malformed_and_open_files_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "not hex\n")?;
        fs::set_permissions(&path, Permissions::from_mode(0o600))?;
        assert!(matches!(
            read(&path),
            Err(FingerprintKeyError::Malformed { .. })
        ));
        assert!(install(&path, "abc").is_err());
        fs::write(&path, format!("{}\n", "ab".repeat(32)))?;
        assert_eq!(read(&path)?.bytes(), [0xab; 32]);
        fs::set_permissions(&path, Permissions::from_mode(0o644))?;
        assert!(matches!(
            read(&path),
            Err(FingerprintKeyError::TooOpen { .. })
        ));
        Ok(())
    }

    #[test]
    fn it_lives_with_the_secrets_key() {
        let file = SecretsKey::File(PathBuf::from("/keys/milady/secrets.key"));
        assert_eq!(
            file_for(&file, None, None),
            PathBuf::from("/keys/milady/fingerprint.key")
        );
        let inline = SecretsKey::Inline(std::sync::Arc::new("x".to_owned().into()));
        assert_eq!(
            file_for(&inline, Some("/data".into()), None),
            PathBuf::from("/data/milady/fingerprint.key")
        );
    }
}
