//! The secrets key (SPEC §7): an age X25519 identity kept apart from the
//! config file, which opens the values of `[env]` stored encrypted.
//!
//! Where it comes from ([`SecretsKey`]): a key file given with
//! `--secrets-key FILE` (or `MILADY_SECRETS_KEY_FILE`), by default
//! `$XDG_DATA_HOME/milady/secrets.key`, i.e.
//! `~/.local/share/milady/secrets.key`; or the key itself in
//! `MILADY_SECRETS_KEY` (containers, systemd credentials). A key file never
//! sits in the config file's folder: a copy of that folder (a backup, a
//! dotfiles repository) must not carry the key to its values.
//!
//! The key file is created on first use, when the host first encrypts a
//! value: mode 0600, in a folder created 0700. It is written in full to a
//! temporary file (created `O_EXCL`), synced, and linked into place without
//! replacing anything (`atomic`, [`IfExists::Fail`]): two processes creating
//! it at once cannot both win, and the loser reads the key that won
//! (`EEXIST`). Temporary files a killed creation left are removed once
//! they are old (hosts with other configs may share the key file, so a
//! fresh one may be another process's creation in progress).
//!
//! The file has the layout of `age-keygen`: `#` comments (the public key
//! among them) and one `AGE-SECRET-KEY-1…` line, so `age -d -i` can read it.
//! A rotation (`demo-host secrets rotate-key`) writes the next key beside
//! it as `secrets.key.next` before re-encrypting; until the rotation ends
//! the host opens values with either key ([`Keys::identities`]).
//!
//! The key's text is only ever held in zeroizing buffers; its `Debug`
//! never shows it.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    fs::{self, File},
    io::{self, Read as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    str::FromStr as _,
    sync::{Arc, Mutex, PoisonError},
};

use age::x25519::{Identity, Recipient};
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use super::atomic::{self, IfExists};

/// The environment variable that may carry the key itself.
pub const SECRETS_KEY_ENV: &str = "MILADY_SECRETS_KEY";
/// The environment variable naming the key file (like `--secrets-key`).
pub const SECRETS_KEY_FILE_ENV: &str = "MILADY_SECRETS_KEY_FILE";

/// Mode of a key file: owner only.
const KEY_MODE: u32 = 0o600;
/// The largest key file read (a real one is about 200 bytes).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Where the secrets key comes from.
#[derive(Clone)]
pub enum SecretsKey {
    /// A key file, created on first use.
    File(PathBuf),
    /// The key itself, from `MILADY_SECRETS_KEY`; never written anywhere.
    Inline(Arc<SecretString>),
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Inline(_) => f.write_str("Inline(<from MILADY_SECRETS_KEY>)"),
        }
    }
}

impl SecretsKey {
    /// The default key file: `$XDG_DATA_HOME/milady/secrets.key` when
    /// `XDG_DATA_HOME` is an absolute path (the XDG rule), else
    /// `$HOME/.local/share/milady/secrets.key`.
    pub fn default_file(xdg_data_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
        let data = xdg_data_home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| {
                home.map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".local")
                    .join("share")
            });
        data.join("milady").join("secrets.key")
    }

    /// The source the command line and environment ask for: the key file
    /// given (`--secrets-key` / `MILADY_SECRETS_KEY_FILE`), else the key in
    /// `MILADY_SECRETS_KEY`, else the default key file. Giving both a file
    /// and the key itself is refused: which one wins would be a guess.
    pub fn choose(
        file: Option<PathBuf>,
        inline: Option<String>,
        xdg_data_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Result<Self, KeyError> {
        let inline = inline.filter(|k| !k.trim().is_empty());
        match (file, inline) {
            (Some(_), Some(_)) => Err(KeyError::TwoSources),
            (Some(path), None) => Ok(Self::File(path)),
            (None, Some(key)) => Ok(Self::Inline(Arc::new(SecretString::from(key)))),
            (None, None) => Ok(Self::File(Self::default_file(xdg_data_home, home))),
        }
    }

    /// The key file, if the key comes from one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Inline(_) => None,
        }
    }

    /// Refuses a key file in the folder of the config file `config`.
    pub fn check_apart_from(&self, config: &Path) -> Result<(), KeyError> {
        let Some(key) = self.file() else {
            return Ok(());
        };
        let (key_dir, config_dir) = (folder_id(key), folder_id(config));
        if key_dir == config_dir {
            return Err(KeyError::BesideConfig {
                path: key.to_owned(),
            });
        }
        Ok(())
    }
}

/// The next key of a rotation in progress: `<key file>.next`.
pub(crate) fn next_key_file(key: &Path) -> PathBuf {
    let mut name = key.file_name().map(OsStr::to_owned).unwrap_or_default();
    name.push(".next");
    key.with_file_name(name)
}

/// A folder compared by what it is: canonical when it exists, otherwise
/// made absolute.
fn folder_id(file: &Path) -> PathBuf {
    let folder = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::canonicalize(folder)
        .or_else(|_| std::path::absolute(folder))
        .unwrap_or_else(|_| folder.to_owned())
}

/// Why the secrets key cannot be used. Never carries the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file does not exist (and was not to be created).
    #[error("the secrets key file {} does not exist", path.display())]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// Reading, creating or inspecting the key file failed.
    #[error("cannot {action} the secrets key file {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key file, or its folder, is open to other users.
    #[error("refusing the secrets key file {}: {problem}; fix: {fix}", path.display())]
    Unsafe {
        /// The key file or its folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// No `AGE-SECRET-KEY-1…` line, or more than one, or a broken one.
    #[error("{origin} does not hold exactly one valid age X25519 secret key (AGE-SECRET-KEY-1...)")]
    Invalid {
        /// The key file, or `MILADY_SECRETS_KEY`.
        origin: String,
    },
    /// The key file is in the config file's folder.
    #[error(
        "the secrets key file {} is in the config file's folder; keep it apart \
         (--secrets-key FILE elsewhere, or the default ~/.local/share/milady/secrets.key)",
        path.display()
    )]
    BesideConfig {
        /// The key file.
        path: PathBuf,
    },
    /// Both a key file and `MILADY_SECRETS_KEY` were given.
    #[error(
        "both a secrets key file (--secrets-key / MILADY_SECRETS_KEY_FILE) and MILADY_SECRETS_KEY \
         are set; give one"
    )]
    TwoSources,
}

impl KeyError {
    /// The cause without paths, for API clients and for the reason an
    /// unreadable value is shown with.
    pub fn client_message(&self) -> String {
        match self {
            Self::Missing { .. } => "the secrets key file does not exist".to_owned(),
            Self::Io { action, source, .. } => {
                format!("cannot {action} the secrets key file: {}", source.kind())
            }
            Self::Unsafe { problem, .. } => format!("the secrets key file is unsafe: {problem}"),
            Self::Invalid { .. } => "the secrets key is not a valid age X25519 key".to_owned(),
            Self::BesideConfig { .. } => {
                "the secrets key file is in the config file's folder".to_owned()
            }
            Self::TwoSources => "two secrets keys are configured".to_owned(),
        }
    }
}

/// The identities that open values: the key, and the next key of an
/// unfinished rotation.
pub(crate) struct Keys {
    current: Identity,
    next: Option<Identity>,
    /// `current`'s public half, derived once (a scalar multiplication).
    recipient: Recipient,
}

impl Keys {
    /// Every identity to try when opening a value.
    pub(crate) fn identities(&self) -> Vec<Identity> {
        std::iter::once(self.current.clone())
            .chain(self.next.clone())
            .collect()
    }

    /// The recipient new values are encrypted to (the key, not the next
    /// one: a rotation re-encrypts every value before it switches).
    pub(crate) fn recipient(&self) -> Recipient {
        self.recipient.clone()
    }

    fn new(current: Identity, next: Option<Identity>) -> Self {
        let recipient = current.to_public();
        Self {
            current,
            next,
            recipient,
        }
    }
}

/// The host's secrets key, read (or created) on first use and then kept.
pub struct Keyring {
    source: SecretsKey,
    loaded: Mutex<Option<Arc<Keys>>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring for `source`; nothing is read yet.
    pub fn new(source: SecretsKey) -> Self {
        Self {
            source,
            loaded: Mutex::new(None),
        }
    }

    /// Where the key comes from.
    pub fn source(&self) -> &SecretsKey {
        &self.source
    }

    /// The existing key (never creates one).
    pub(crate) fn load(&self) -> Result<Arc<Keys>, KeyError> {
        self.get(false)
    }

    /// The key, created when its file does not exist yet. Call it under
    /// the config's write lock (see the module notes).
    pub(crate) fn load_or_create(&self) -> Result<Arc<Keys>, KeyError> {
        self.get(true)
    }

    fn get(&self, create: bool) -> Result<Arc<Keys>, KeyError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(keys) = &*loaded {
            return Ok(Arc::clone(keys));
        }
        let keys = Arc::new(match &self.source {
            SecretsKey::Inline(text) => {
                Keys::new(parse_key(text.expose_secret(), SECRETS_KEY_ENV)?, None)
            }
            SecretsKey::File(path) => {
                let current = match read_key_file(path) {
                    Err(KeyError::Missing { .. }) if create => create_key_file(path)?,
                    other => other?,
                };
                let next = match read_key_file(&next_key_file(path)) {
                    Ok(next) => Some(next),
                    Err(KeyError::Missing { .. }) => None,
                    Err(err) => return Err(err),
                };
                Keys::new(current, next)
            }
        });
        *loaded = Some(Arc::clone(&keys));
        Ok(keys)
    }
}

/// The text of a new key file holding `identity`.
pub(crate) fn key_file_text(identity: &Identity) -> Zeroizing<String> {
    let secret = identity.to_string();
    Zeroizing::new(format!(
        "# The secrets key of a Milady agent host (an age X25519 identity).\n\
         # It opens the encrypted values of the config file's [env] table.\n\
         # Keep it apart from the config file and back it up: without it\n\
         # those values cannot be read.\n\
         # public key: {}\n{}\n",
        identity.to_public(),
        secret.expose_secret()
    ))
}

/// Creates the key file at `path` (see the module notes); on `EEXIST`
/// reads the key that won.
pub(crate) fn create_key_file(path: &Path) -> Result<Identity, KeyError> {
    let folder = atomic::ensure_folder_of(path).map_err(|e| KeyError::Io {
        action: e.step.action(),
        path: path.to_owned(),
        source: e.source,
    })?;
    check_folder(path, folder)?;
    remove_abandoned_temp_files(path);
    let identity = Identity::generate();
    let text = key_file_text(&identity);
    match atomic::write_atomically(path, KEY_MODE, &mut text.as_bytes(), IfExists::Fail) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the secrets key file");
            Ok(identity)
        }
        Err(err) if err.source.kind() == io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(err) => Err(KeyError::Io {
            action: err.step.action(),
            path: path.to_owned(),
            source: err.source,
        }),
    }
}

/// How old a temporary key file must be to count as abandoned by a killed
/// creation: far longer than a creation takes.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the temporary files killed creations of the key file `path`
/// left (see `atomic` for their names). Only old ones: hosts on other
/// configs may share the key file and be creating it right now.
fn remove_abandoned_temp_files(path: &Path) {
    let (Some(name), Some(folder)) = (path.file_name(), path.parent()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let abandoned = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ABANDONED_AFTER);
        if file_name.starts_with(&prefix) && file_name.ends_with(".tmp") && abandoned {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Reads the key file at `path`: a regular file of this user, not open to
/// group or others, in a folder others cannot write.
pub(crate) fn read_key_file(path: &Path) -> Result<Identity, KeyError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(KeyError::Io {
                action: "inspect",
                path: path.to_owned(),
                source,
            });
        }
    };
    let unsafe_file = |problem: String, fix: String| KeyError::Unsafe {
        path: path.to_owned(),
        problem,
        fix,
    };
    if !meta.is_file() {
        return Err(unsafe_file(
            "it is not a regular file".to_owned(),
            "point --secrets-key at the key file".to_owned(),
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(unsafe_file(
            format!("it is owned by uid {}, not by this user", meta.uid()),
            format!("chown {euid} {}", path.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_file(
            format!(
                "it is readable or writable by group or others (mode {:04o})",
                meta.mode() & 0o7777
            ),
            format!("chmod 600 {}", path.display()),
        ));
    }
    if let Some(folder) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_folder(path, folder)?;
    }
    let mut text = Zeroizing::new(String::with_capacity(
        usize::try_from(meta.len().min(MAX_KEY_FILE_BYTES)).unwrap_or(0) + 1,
    ));
    File::open(path)
        .and_then(|file| file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text))
        .map_err(|source| KeyError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
    parse_key(&text, &path.display().to_string())
}

/// Refuses a key folder that group or others may write (they could
/// replace the key).
fn check_folder(path: &Path, folder: &Path) -> Result<(), KeyError> {
    let meta = fs::metadata(folder).map_err(|source| KeyError::Io {
        action: "inspect the folder of",
        path: path.to_owned(),
        source,
    })?;
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(KeyError::Unsafe {
            path: folder.to_owned(),
            problem: format!(
                "the key's folder is writable by group or others (mode {:04o})",
                meta.mode() & 0o7777
            ),
            fix: format!("chmod go-w {}", folder.display()),
        });
    }
    Ok(())
}

/// The one identity in `text`: `#` comments and blank lines aside, exactly
/// one `AGE-SECRET-KEY-1…` line.
fn parse_key(text: &str, origin: &str) -> Result<Identity, KeyError> {
    let invalid = || KeyError::Invalid {
        origin: origin.to_owned(),
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or_else(invalid)?;
    if lines.next().is_some() {
        return Err(invalid());
    }
    Identity::from_str(line).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs::Permissions, os::unix::fs::PermissionsExt as _};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn the_default_follows_xdg_then_home() {
        let xdg = |v: &str| Some(OsString::from(v));
        assert_eq!(
            SecretsKey::default_file(xdg("/data"), xdg("/home/u")),
            Path::new("/data/milady/secrets.key")
        );
        // A relative XDG_DATA_HOME is ignored, as the XDG rules say.
        assert_eq!(
            SecretsKey::default_file(xdg("rel"), xdg("/home/u")),
            Path::new("/home/u/.local/share/milady/secrets.key")
        );
        assert_eq!(
            SecretsKey::default_file(None, xdg("/home/u")),
            Path::new("/home/u/.local/share/milady/secrets.key")
        );
    }

    #[test]
    fn a_file_and_an_inline_key_together_are_refused() {
        let chosen = SecretsKey::choose(
            Some("/k".into()),
            Some("AGE-SECRET-KEY-1X".into()),
            None,
            None,
        );
        assert!(matches!(chosen, Err(KeyError::TwoSources)));
        let inline = SecretsKey::choose(None, Some("AGE-SECRET-KEY-1X".into()), None, None);
        assert!(format!("{inline:?}").contains("<from MILADY_SECRETS_KEY>"));
        assert!(!format!("{inline:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn created_once_private_and_read_back() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("data").join("milady").join("secrets.key");
        let ring = Keyring::new(SecretsKey::File(path.clone()));
        assert!(matches!(ring.load(), Err(KeyError::Missing { .. })));
        let created = ring.load_or_create()?.recipient();
        assert_eq!(fs::metadata(&path)?.mode() & 0o777, 0o600);
        let folder = path.parent().ok_or("folder")?;
        assert_eq!(fs::metadata(folder)?.mode() & 0o777, 0o700);
        // A second keyring (another process) reads the same key.
        let again = Keyring::new(SecretsKey::File(path.clone())).load()?;
        assert_eq!(again.recipient(), created);
        // Creating again never replaces it.
        assert_eq!(create_key_file(&path)?.to_public(), created);
        let names: Vec<_> = fs::read_dir(folder)?.collect::<Result<_, _>>()?;
        assert_eq!(names.len(), 1, "no temporary file left");
        Ok(())
    }

    #[test]
    fn racing_creators_agree_on_one_key() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("keys").join("secrets.key");
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || create_key_file(&path).map(|id| id.to_public()))
            })
            .collect();
        let mut keys = Vec::new();
        for w in workers {
            keys.push(w.join().map_err(|_| "worker panicked")??);
        }
        keys.dedup();
        assert_eq!(keys.len(), 1, "every creator reads the key that won");
        Ok(())
    }

    #[test]
    fn open_files_and_bad_contents_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secrets.key");
        let identity = Identity::generate();
        fs::write(&path, key_file_text(&identity).as_bytes())?;
        fs::set_permissions(&path, Permissions::from_mode(0o644))?;
        let Err(err) = read_key_file(&path) else {
            return Err("a key file of mode 0644 was accepted".into());
        };
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, Permissions::from_mode(0o600))?;
        assert_eq!(read_key_file(&path)?.to_public(), identity.to_public());
        for bad in ["", "# only a comment\n", "AGE-SECRET-KEY-1NOTAKEY\n"] {
            fs::write(&path, bad)?;
            let Err(err) = read_key_file(&path) else {
                return Err(format!("{bad:?} was accepted as a key file").into());
            };
            assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
        }
        let two = format!(
            "{}{}",
            key_file_text(&identity).as_str(),
            key_file_text(&Identity::generate()).as_str()
        );
        fs::write(&path, two)?;
        assert!(matches!(
            read_key_file(&path),
            Err(KeyError::Invalid { .. })
        ));
        Ok(())
    }

    #[test]
    fn a_key_file_beside_the_config_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("milady.toml");
        let beside = SecretsKey::File(dir.path().join("secrets.key"));
        assert!(matches!(
            beside.check_apart_from(&config),
            Err(KeyError::BesideConfig { .. })
        ));
        let apart = SecretsKey::File(dir.path().join("keys").join("secrets.key"));
        apart.check_apart_from(&config)?;
        Ok(())
    }

    #[test]
    fn the_key_file_text_never_shows_in_debug() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k").join("secrets.key");
        let ring = Keyring::new(SecretsKey::File(path.clone()));
        ring.load_or_create()?;
        let text = fs::read_to_string(&path)?;
        let secret = text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .ok_or("no key line")?;
        assert!(!format!("{ring:?}").contains(secret));
        Ok(())
    }
}
