//! The config-file store of the host (`milady.toml`): it reads the `[env]`
//! secrets, the `[plugins.entries."<id>"].enabled` switches and the
//! `[security].blocked_env_keys` list, and writes changes back without losing
//! anything the user typed. Every write is a read-modify-write of the file on
//! disk under a writer lock, edited with `toml_edit` (helpers in `toml_doc`)
//! so comments, formatting and unrelated tables survive, and replaced
//! atomically (`atomic`: temp file in the same folder, fsync, rename, fsync
//! of the folder) with mode 0600 because the file holds secrets. Errors carry
//! paths, key names and positions, never values.
//!
//! A file that existed once and has since been removed is not silently
//! recreated: that would drop every secret it held from disk while the
//! runtime still used them, so such a write fails until the file is restored
//! or the host restarted.
//!
//! The file and its folder must pass the host's StrictModes rules
//! (`file_safety`: not writable by group or others, owned by the host's user
//! or root, links only of those users, a regular file), checked at every
//! read, i.e. at start-up and before every write; reads are bounded
//! ([`MAX_CONFIG_BYTES`]) and never block on a FIFO.
//!
//! Values written to `[env]` are stored encrypted unless the file says
//! `[security] encrypt_env = false` (`sealed`, with the key of
//! `secrets_key`); a string in `[env]` is always plaintext, and values of
//! either form are read back as they are stored ([`ConfigSnapshot::env`],
//! [`ConfigSnapshot::sealed`]): opening encrypted ones is the runtime
//! environment's job, once at start-up. Every read-modify-write also holds
//! the write lock beside the file (`lock`), which `demo-host` commands
//! writing the config take too.
//!
//! Debug builds can inject disk faults into its writes
//! (`fault_injection`, `DEMO_HOST_FAULT_FILE`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use host_api::EnvChange;

use crate::beside::beside;
use toml_edit::{DocumentMut, Item, Table, Value};
use zeroize::Zeroizing;

use super::atomic::{self, IfExists};
#[cfg(debug_assertions)]
use super::fault_injection;
use super::file_safety::{self, CheckError, FilePolicy, UnsafeFile};
use super::lock::{self, WriteLock};
use super::sealed::{self, SealError, Stored};
use super::secrets_key::{KeyError, Keyring};
use super::toml_doc::{basic_string, child_table, error_position, set_value_keep_decor};

/// Mode of the config file: it holds secrets, so only the owner may read it.
const FILE_MODE: u32 = 0o600;

/// The largest config file read: far above any real one (values are at
/// most 64 KiB by default), far below what would exhaust memory.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Content of the starter file written by [`ConfigStore::create_default_if_missing`].
/// `[env]` comes last and nothing follows it, so keys and tables the host
/// appends later land after it instead of in the middle of these comments.
const DEFAULT_CONFIG: &str = r#"# Configuration of the agent host.
#
# The host rewrites this file when settings change (for example from the UI);
# your comments and formatting are kept. It holds secrets: keep it private
# (the host keeps it at mode 0600).

# Plugins, by package id. `enabled = false` keeps an installed plugin off:
#
#   [plugins.entries."@elizaos/plugin-openai"]
#   enabled = true

# Extra environment variable names (`*` wildcards allowed) that the API must
# never write, on top of the host's built-in block list:
#
#   [security]
#   blocked_env_keys = ["MY_EXTRA_KEY", "*_SECRET_PATH"]

# Secrets and environment variables handed to the runtime and its plugins,
# one `NAME = "value"` line each (values are strings), for example:
#
#   OPENAI_API_KEY = "sk-..."
[env]
"#;

/// The text a store last wrote (or found unchanged) and the document it
/// was written from. The text may hold hand-written plaintext values: wiped
/// when dropped.
struct LastWrite {
    text: Arc<Zeroizing<String>>,
    doc: DocumentMut,
}

impl fmt::Debug for LastWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the text: it may hold values.
        f.debug_struct("LastWrite")
            .field("bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// The durable store of one TOML config file.
///
/// Reads need no lock (writes replace the file atomically, so a reader sees
/// either the old or the new file); writes are serialised by an in-process
/// mutex so concurrent read-modify-writes cannot lose each other's changes.
#[derive(Debug)]
pub struct ConfigStore {
    /// Path of the config file.
    path: PathBuf,
    /// Serialises writers within this process, and keeps what the last
    /// write left on disk.
    write_lock: Mutex<Option<LastWrite>>,
    /// The file has been seen on disk (read or written) by this store.
    existed: AtomicBool,
    /// The file as last read or written says `[security] encrypt_env =
    /// false`: [`ConfigStore::preseal`] has nothing to do.
    opted_out: AtomicBool,
    /// How strictly the file and its folder are checked.
    policy: FilePolicy,
    /// The secrets key values are encrypted with (none: plaintext).
    keyring: Option<std::sync::Arc<Keyring>>,
    /// Debug builds: the file that switches injected write faults on.
    #[cfg(debug_assertions)]
    fault_file: Option<PathBuf>,
}

/// Why the config file could not be read or written.
///
/// No variant ever carries a value or a snippet of the file: only paths, key
/// names and positions, because the file holds secrets.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// File unreadable/unwritable, folder not creatable, rename failed, disk full...
    #[error("cannot {action} config file {path}: {source}")]
    Io {
        /// What was being done, e.g. `"read"`, `"replace"`.
        action: &'static str,
        /// The config file path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Invalid TOML (or not UTF-8): position and the parser's short reason only.
    #[error("config file {path} is not valid TOML at line {line}, column {column}: {reason}")]
    Parse {
        /// The config file path.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's short reason, without any file content.
        reason: String,
    },
    /// The file existed and was removed while the host ran: recreating it
    /// would lose every secret it held, so nothing is written.
    #[error(
        "config file {path} was removed while the host was running; nothing was written \
         (restore the file or restart the host)"
    )]
    Vanished {
        /// The config file path.
        path: PathBuf,
    },
    /// The file, its folder or a link to it is not safe to trust (StrictModes).
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    /// The secrets key needed to encrypt a value cannot be used.
    #[error(transparent)]
    SecretsKey(#[from] KeyError),
    /// A value could not be encrypted.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Valid TOML of the wrong shape, e.g. `env = 3` or `enabled = "yes"`.
    #[error("config file {path}: {message}")]
    Shape {
        /// The config file path.
        path: PathBuf,
        /// Which table/key is wrong and what was expected; never a value.
        message: String,
    },
}

impl ConfigError {
    /// The message for an API client: the cause without the file's path
    /// (an internal detail the log keeps) and, like every variant, without
    /// any value.
    pub fn client_message(&self) -> String {
        match self {
            Self::Io { action, source, .. } => match source.raw_os_error() {
                Some(code) => format!(
                    "cannot {action} the config file: {} (os error {code})",
                    source.kind()
                ),
                None => format!("cannot {action} the config file: {}", source.kind()),
            },
            Self::Parse {
                line,
                column,
                reason,
                ..
            } => format!(
                "the config file is not valid TOML at line {line}, column {column}: {reason}; \
                 fix it by hand (nothing was written)"
            ),
            Self::Vanished { .. } => "the config file was removed while the host was running; \
                 nothing was written (restore the file or restart the host)"
                .to_owned(),
            Self::Unsafe(unsafe_file) => format!(
                "the config file is not safe to use: {}; nothing was written",
                unsafe_file.problem()
            ),
            Self::SecretsKey(err) => format!(
                "cannot encrypt the value: {}; nothing was written",
                err.client_message()
            ),
            Self::Seal(err) => format!("{err}; nothing was written"),
            Self::Shape { message, .. } => format!("the config file is malformed: {message}"),
        }
    }
}

/// What the host reads from the config file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// `[env]` plaintext values (TOML strings), by variable name.
    pub env: BTreeMap<String, String>,
    /// `[env]` encrypted values (`{ age = "…" }`), by variable name: the
    /// ciphertext, still sealed.
    pub sealed: BTreeMap<String, String>,
    /// `[security].encrypt_env`, when the file sets it (`false` opts out
    /// of encrypting `[env]` values).
    pub encrypt_env: Option<bool>,
    /// `[plugins.entries."<id>"].enabled`, for the entries that set it.
    pub plugin_enabled: BTreeMap<String, bool>,
    /// `[plugins.entries."<id>"].manage_secrets`, for the entries that set
    /// it: whether the host grants that plugin the capability to list and
    /// change every secret (when its manifest asks for it).
    pub plugin_manage_secrets: BTreeMap<String, bool>,
    /// `[security].blocked_env_keys`, in file order (empty if absent).
    pub blocked_env_keys: Vec<String>,
}

/// Hand-written so that logging a snapshot never leaks a secret: env values
/// are omitted, only their keys are shown.
impl fmt::Debug for ConfigSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSnapshot")
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("sealed_keys", &self.sealed.keys().collect::<Vec<_>>())
            .field("encrypt_env", &self.encrypt_env)
            .field("plugin_enabled", &self.plugin_enabled)
            .field("plugin_manage_secrets", &self.plugin_manage_secrets)
            .field("blocked_env_keys", &self.blocked_env_keys)
            .finish()
    }
}

impl ConfigStore {
    /// A store for the config file at `path` (nothing is read or created yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            write_lock: Mutex::new(None),
            existed: AtomicBool::new(false),
            opted_out: AtomicBool::new(false),
            policy: FilePolicy::strict(),
            keyring: None,
            #[cfg(debug_assertions)]
            fault_file: fault_injection::fault_file_from_env(),
        }
    }

    /// The same store encrypting the `[env]` values it writes with the key
    /// of `keyring` (unless the file opts out).
    pub fn with_keyring(mut self, keyring: std::sync::Arc<Keyring>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// The keyring values are encrypted with, if any.
    pub(crate) fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// The same store under another file policy (the `--no-strict-modes`
    /// escape hatch is [`FilePolicy::permissive`]).
    pub fn with_policy(mut self, policy: FilePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The config file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, parses and extracts the config. A missing file is an empty
    /// snapshot (and is not created); invalid content is a `Parse` or `Shape` error.
    pub fn load(&self) -> Result<ConfigSnapshot, ConfigError> {
        self.remove_stale_temp_files();
        match self.read_text()? {
            None => Ok(ConfigSnapshot::default()),
            Some(text) => {
                self.existed.store(true, Ordering::Relaxed);
                let doc = self.parse(&text)?;
                let snapshot = extract(&self.path, doc.as_table())?;
                self.note_opt_out(&snapshot);
                Ok(snapshot)
            }
        }
    }

    /// Applies `changes` to `[env]` in order (a later change of the same key
    /// wins) in one durable write, and returns the snapshot as written.
    ///
    /// Existing keys keep their place and trailing comment; new keys are
    /// appended to `[env]`, which is created only if something is set.
    /// With a keyring, and unless the file says `[security] encrypt_env =
    /// false`, each value set is stored encrypted (`{ age = "…" }`, the
    /// key created on first use); other keys keep their bytes.
    pub fn apply_env(&self, changes: &[EnvChange]) -> Result<ConfigSnapshot, ConfigError> {
        self.apply_env_presealed(changes, &[])
    }

    /// Encrypts, ahead of a write, the values `changes` set, to the key the
    /// write will use (the keyring keeps the key it loaded), so that this
    /// CPU work can overlap the write's wait for the audit log's fsync
    /// (`env::runtime`). One entry per change (`None` for a removal);
    /// `None` when there is nothing to encrypt ahead: no keyring, no key
    /// file yet (the write creates it under the write lock), nothing set.
    /// Whether the file opts out of encryption stays the write's decision:
    /// it then ignores these.
    pub(crate) fn preseal(&self, changes: &[EnvChange]) -> Option<Vec<Option<String>>> {
        if !self.seals_values() || !changes.iter().any(|c| c.value().is_some()) {
            return None;
        }
        let to = self.keyring.as_ref()?.load().ok()?.recipient();
        Some(
            changes
                .iter()
                .map(|c| {
                    c.value()
                        .and_then(|value| sealed::seal(&to, c.key(), value).ok())
                })
                .collect(),
        )
    }

    /// Whether values written are likely to be encrypted: there is a
    /// keyring and the file, as last read or written, does not opt out.
    /// (The write itself decides, from the file as it then is.)
    pub(crate) fn seals_values(&self) -> bool {
        self.keyring.is_some() && !self.opted_out.load(Ordering::Relaxed)
    }

    /// Remembers whether `snapshot`, the file as read or written, opts out
    /// of encryption.
    fn note_opt_out(&self, snapshot: &ConfigSnapshot) {
        self.opted_out
            .store(snapshot.encrypt_env == Some(false), Ordering::Relaxed);
    }

    /// [`ConfigStore::apply_env`] with values [`ConfigStore::preseal`]
    /// encrypted ahead: `presealed` is empty or has one entry per change;
    /// a change without one is encrypted here.
    pub(crate) fn apply_env_presealed(
        &self,
        changes: &[EnvChange],
        presealed: &[Option<String>],
    ) -> Result<ConfigSnapshot, ConfigError> {
        let presealed = if presealed.len() == changes.len() {
            presealed
        } else {
            &[]
        };
        self.try_update(|doc| {
            let recipient = match &self.keyring {
                Some(keyring)
                    if sealed::encrypts(doc) && changes.iter().any(|c| c.value().is_some()) =>
                {
                    Some(keyring.load_or_create()?.recipient())
                }
                _ => None,
            };
            let root = doc.as_table_mut();
            if !root.contains_key("env") {
                if changes.iter().all(|change| change.value().is_none()) {
                    // Removing keys from a missing table: nothing to do, and no
                    // reason to add an empty `[env]` header.
                    return Ok(());
                }
                root.insert("env", Item::Table(Table::new()));
            }
            // A non-table `env` is left alone: the shape check then reports it.
            let Some(env) = root.get_mut("env").and_then(Item::as_table_like_mut) else {
                return Ok(());
            };
            for (i, change) in changes.iter().enumerate() {
                match change.value() {
                    Some(value) => {
                        let stored = match &recipient {
                            Some(to) => match presealed.get(i).and_then(Option::as_deref) {
                                Some(ahead) => sealed::sealed_value(ahead),
                                None => {
                                    sealed::sealed_value(&sealed::seal(to, change.key(), value)?)
                                }
                            },
                            None => basic_string(value),
                        };
                        set_value_keep_decor(env, change.key(), stored);
                    }
                    None => {
                        env.remove(change.key());
                    }
                }
            }
            Ok(())
        })
    }

    /// Sets `[plugins.entries."<id>"].enabled` in one durable write, creating
    /// the entry as a normal `[plugins.entries."<id>"]` table if needed.
    pub fn set_plugin_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<ConfigSnapshot, ConfigError> {
        self.update(|doc| {
            // Intermediate tables are implicit so no bare `[plugins]` or
            // `[plugins.entries]` headers appear. A non-table on the way is
            // left alone: the shape check then reports it.
            let Some(plugins) = child_table(doc.as_item_mut(), "plugins", true) else {
                return;
            };
            let Some(entries) = child_table(plugins, "entries", true) else {
                return;
            };
            let Some(entry) = child_table(entries, id, false) else {
                return;
            };
            // An entry that only existed as a parent of a sub-table must now
            // get its own header.
            if let Item::Table(table) = entry
                && !table.is_dotted()
            {
                table.set_implicit(false);
            }
            if let Some(entry) = entry.as_table_like_mut() {
                set_value_keep_decor(entry, "enabled", Value::from(enabled));
            }
        })
    }

    /// The general read-modify-write behind every write.
    ///
    /// Under the writer lock (this process's mutex, and the write lock file
    /// beside the config that other processes take too): re-reads the file (so hand edits made since the
    /// last write are kept; a missing file is an empty document), parses it
    /// (if invalid, returns the `Parse` error and leaves the file alone), calls
    /// `edit`, checks the result still parses and has the right shape, then
    /// replaces the file atomically. If the edited document is byte-identical
    /// to the file, nothing is written (a too-open mode is still fixed).
    pub fn update(
        &self,
        edit: impl FnOnce(&mut DocumentMut),
    ) -> Result<ConfigSnapshot, ConfigError> {
        self.try_update(|doc| {
            edit(doc);
            Ok(())
        })
    }

    /// [`ConfigStore::update`] with an edit that may fail: its error is
    /// returned and nothing is written.
    pub(crate) fn try_update(
        &self,
        edit: impl FnOnce(&mut DocumentMut) -> Result<(), ConfigError>,
    ) -> Result<ConfigSnapshot, ConfigError> {
        let held = self.lock_writes()?;
        self.update_locked(&held, edit)
    }

    /// Takes the write lock beside the config (other processes' writers
    /// wait for it), for a command that must hold it across several steps.
    pub(crate) fn lock_writes(&self) -> Result<WriteLock, ConfigError> {
        lock::lock_writes(&self.path).map_err(|err| self.io("lock", err))
    }

    /// [`ConfigStore::try_update`] for a caller already holding the write
    /// lock.
    pub(crate) fn update_locked(
        &self,
        _held: &WriteLock,
        edit: impl FnOnce(&mut DocumentMut) -> Result<(), ConfigError>,
    ) -> Result<ConfigSnapshot, ConfigError> {
        // The guarded state is only a cache that is checked before use, so
        // a panic in another writer leaves nothing inconsistent behind:
        // ignore poisoning.
        let mut last = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);

        let original = self.read_text()?;
        if original.is_some() {
            self.existed.store(true, Ordering::Relaxed);
        } else if self.existed.load(Ordering::Relaxed) {
            return Err(ConfigError::Vanished {
                path: self.path.clone(),
            });
        }
        // The file as this store last wrote it is not parsed again: the
        // document it was written from is edited again (writes from it and
        // from a fresh parse agree byte for byte: a property test). An
        // encrypted `[env]` is long text, and parsing is most of a write's
        // CPU. Any other byte on disk (a hand edit) is parsed as usual.
        let mut doc = match (last.take(), original.as_deref()) {
            (Some(last), Some(original)) if last.text.as_str() == original => last.doc,
            (_, original) => self.parse(original.unwrap_or(""))?,
        };
        edit(&mut doc)?;
        let text = Arc::new(Zeroizing::new(doc.to_string()));
        // What is written is parsed back before it replaces the file, so the
        // host can always load what it wrote. The bytes go to disk while
        // the helper thread parses them: the rename waits for the parse,
        // and a text that does not parse or has the wrong shape never
        // replaces the file.
        let snapshot = if original.as_deref() == Some(text.as_str()) {
            let checked = check_written(&self.path, &text)?;
            self.tighten_mode()?;
            checked
        } else if original.is_some() || !text.is_empty() {
            let checking = {
                let (path, text) = (self.path.clone(), Arc::clone(&text));
                beside(move || check_written(&path, &text))
            };
            let checked = self.write_atomic_approved(text.as_bytes(), IfExists::Replace, || {
                checking.join().unwrap_or_else(|| {
                    Err(self.shape("checking the edited config failed".to_owned()))
                })
            })?;
            self.existed.store(true, Ordering::Relaxed);
            checked
        } else {
            check_written(&self.path, &text)?
        };
        self.note_opt_out(&snapshot);
        *last = Some(LastWrite { text, doc });
        Ok(snapshot)
    }

    /// Writes a starter file with commented sections explaining `[env]` and
    /// `[plugins.entries]` if no file exists (mode 0600, a missing folder is
    /// created with mode 0700). Returns `Ok(true)` if it created the file,
    /// `Ok(false)` if one was already there (it is then left untouched).
    pub fn create_default_if_missing(&self) -> Result<bool, ConfigError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match fs::symlink_metadata(&self.path) {
            Ok(_) => return Ok(false),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(self.io("inspect", err)),
        }
        // A folder others can write is refused before anything lands in it.
        match file_safety::check_folder(folder_of(&self.path), self.policy) {
            Ok(()) => {}
            Err(CheckError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(CheckError::Io { source, .. }) => {
                return Err(self.io("inspect the folder of", source));
            }
            Err(CheckError::Unsafe(e)) => return Err(e.into()),
        }
        // No-clobber rename: another process may create the file meanwhile,
        // and its content must win over our template.
        match self.write_atomic(DEFAULT_CONFIG.as_bytes(), IfExists::Fail) {
            Ok(()) => {
                self.existed.store(true, Ordering::Relaxed);
                Ok(true)
            }
            Err(ConfigError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Checks the file (StrictModes) and reads it, bounded, as UTF-8;
    /// `None` if it (or its folder) does not exist.
    fn read_text(&self) -> Result<Option<String>, ConfigError> {
        let Some(target) = self.checked_target()? else {
            return Ok(None);
        };
        let bytes = match file_safety::read_bounded(&target, MAX_CONFIG_BYTES) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.io("read", err)),
        };
        String::from_utf8(bytes).map(Some).map_err(|err| {
            // Locate the bad byte from the valid prefix; report no content.
            let valid = err.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&err.as_bytes()[..valid]);
            let (line, column) = error_position(&prefix, Some(valid));
            ConfigError::Parse {
                path: self.path.clone(),
                line,
                column,
                reason: "invalid UTF-8".to_owned(),
            }
        })
    }

    /// Checks the file and its folder under the file rules (StrictModes,
    /// see `file_safety`) without reading it: what start-up does before
    /// anything else touches the config's folder. A missing file passes.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.checked_target().map(|_| ())
    }

    /// The file to read after the file rules passed (a link's target), or
    /// `None` when it (or its folder) does not exist.
    fn checked_target(&self) -> Result<Option<PathBuf>, ConfigError> {
        match file_safety::check_file(&self.path, self.policy) {
            Ok(target) => Ok(Some(target)),
            Err(CheckError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(CheckError::Io { source, .. }) => Err(self.io("read", source)),
            Err(CheckError::Unsafe(e)) => Err(e.into()),
        }
    }

    /// Parses `text`, mapping errors to position + short reason only (the
    /// `Display` of `TomlError` quotes the offending line, which may be a secret).
    fn parse(&self, text: &str) -> Result<DocumentMut, ConfigError> {
        text.parse::<DocumentMut>().map_err(|err| {
            let (line, column) = error_position(text, err.span().map(|s| s.start));
            ConfigError::Parse {
                path: self.path.clone(),
                line,
                column,
                reason: err.message().to_owned(),
            }
        })
    }

    /// Replaces the file with `bytes` through the atomic replace (temp file
    /// in the same folder, mode 0600, fsync, rename, fsync of the folder; see
    /// `atomic`): on failure the original is untouched and no temp file is
    /// left. `IfExists::Fail` refuses to replace an existing file
    /// (`AlreadyExists`).
    fn write_atomic(&self, bytes: &[u8], if_exists: IfExists) -> Result<(), ConfigError> {
        self.write_atomic_approved(bytes, if_exists, || Ok(()))
    }

    /// [`ConfigStore::write_atomic`] that renames only when `approve`, called
    /// once the bytes are synced to the temporary file, returns `Ok`; its
    /// value is returned, and on its error the file is left untouched.
    fn write_atomic_approved<T>(
        &self,
        bytes: &[u8],
        if_exists: IfExists,
        approve: impl FnOnce() -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let target = self.write_target()?;
        let mut content = bytes;
        let mut approved = None;
        let gate = || {
            approved = Some(approve()?);
            Ok::<(), ConfigError>(())
        };
        #[cfg(debug_assertions)]
        let fault = |step| match &self.fault_file {
            Some(file) => fault_injection::injected_fault(file, step),
            None => Ok(()),
        };
        #[cfg(not(debug_assertions))]
        let fault = |_| Ok(());
        atomic::write_atomically_gated(&target, FILE_MODE, &mut content, if_exists, &fault, gate)
            .map_err(|err| self.io(err.step.action(), err.source))??;
        tracing::debug!(path = %self.path.display(), "config file written");
        approved.ok_or_else(|| self.shape("the config write was not checked".to_owned()))
    }

    /// Removes the temporary files that writes killed mid-way (SIGKILL,
    /// power loss) left next to the config file: they may hold secrets and
    /// nothing will ever read them. Done when the config is loaded, i.e. at
    /// start-up, before any write of this process; failures are ignored.
    fn remove_stale_temp_files(&self) {
        let Ok(target) = self.write_target() else {
            return;
        };
        let removed = atomic::remove_stale_temp_files(&target);
        if removed > 0 {
            tracing::info!(
                path = %self.path.display(),
                removed,
                "removed temporary files left by an interrupted write"
            );
        }
    }

    /// The file to replace: the target of a symlink rather than the link, so
    /// a config kept elsewhere (e.g. in a dotfiles repo) stays linked.
    fn write_target(&self) -> Result<PathBuf, ConfigError> {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                fs::canonicalize(&self.path).map_err(|err| self.io("resolve symlink of", err))
            }
            _ => Ok(self.path.clone()),
        }
    }

    /// When a write is skipped, still remove group/other access from an
    /// existing file, so the file ends up 0600 as after a real write.
    fn tighten_mode(&self) -> Result<(), ConfigError> {
        let meta = fs::metadata(&self.path).map_err(|err| self.io("inspect", err))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.path, Permissions::from_mode(FILE_MODE))
                .map_err(|err| self.io("set permissions of", err))?;
        }
        Ok(())
    }

    /// An `Io` error about this store's file.
    fn io(&self, action: &'static str, source: io::Error) -> ConfigError {
        ConfigError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }

    /// A `Shape` error about this store's file.
    fn shape(&self, message: String) -> ConfigError {
        shape_error(&self.path, message)
    }
}

/// A `Shape` error about the config file at `path`.
fn shape_error(path: &Path, message: String) -> ConfigError {
    ConfigError::Shape {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses `text`, the edited config about to be written to `path`, with
/// the parser that loads it and checks its shape: the snapshot of what
/// will be on disk. (A borrowing parse: the document it builds is only
/// looked at.)
fn check_written(path: &Path, text: &str) -> Result<ConfigSnapshot, ConfigError> {
    let written = toml_edit::Document::parse(text).map_err(|err| {
        let (line, column) = error_position(text, err.span().map(|s| s.start));
        shape_error(
            path,
            format!(
                "the edit would produce invalid TOML at line {line}, column {column}: {}",
                err.message()
            ),
        )
    })?;
    extract(path, written.as_table())
}

/// Checks the shape of `doc` and extracts what the host uses. Unknown
/// tables and keys are ignored (they belong to other tools or versions).
fn extract(path: &Path, doc: &Table) -> Result<ConfigSnapshot, ConfigError> {
    let shape = |message: String| shape_error(path, message);
    let mut snapshot = ConfigSnapshot::default();

    if let Some(env) = doc.get("env") {
        let env = env
            .as_table_like()
            .ok_or_else(|| shape(format!("`env` must be a table, found {}", env.type_name())))?;
        for (key, item) in env.iter() {
            match sealed::read_item(item) {
                Some(Stored::Plain(value)) => {
                    snapshot.env.insert(key.to_owned(), value.to_owned());
                }
                Some(Stored::Sealed(text)) => {
                    snapshot.sealed.insert(key.to_owned(), text.to_owned());
                }
                None => {
                    return Err(shape(format!(
                        "[env] key {key:?} must be a string or an encrypted value \
                         {{ age = \"...\" }}, found {}",
                        item.type_name()
                    )));
                }
            }
        }
    }

    if let Some(plugins) = doc.get("plugins") {
        let plugins = plugins.as_table_like().ok_or_else(|| {
            shape(format!(
                "`plugins` must be a table, found {}",
                plugins.type_name()
            ))
        })?;
        if let Some(entries) = plugins.get("entries") {
            let entries = entries.as_table_like().ok_or_else(|| {
                shape(format!(
                    "`plugins.entries` must be a table, found {}",
                    entries.type_name()
                ))
            })?;
            for (id, entry) in entries.iter() {
                let entry = entry.as_table_like().ok_or_else(|| {
                    shape(format!(
                        "plugin entry {id:?} in `plugins.entries` must be a table, found {}",
                        entry.type_name()
                    ))
                })?;
                if let Some(enabled) = entry.get("enabled") {
                    let enabled = enabled.as_bool().ok_or_else(|| {
                        shape(format!(
                            "`enabled` of plugin entry {id:?} must be a boolean, found {}",
                            enabled.type_name()
                        ))
                    })?;
                    snapshot.plugin_enabled.insert(id.to_owned(), enabled);
                }
                if let Some(grant) = entry.get("manage_secrets") {
                    let grant = grant.as_bool().ok_or_else(|| {
                        shape(format!(
                            "`manage_secrets` of plugin entry {id:?} must be a boolean, found {}",
                            grant.type_name()
                        ))
                    })?;
                    snapshot.plugin_manage_secrets.insert(id.to_owned(), grant);
                }
            }
        }
    }

    if let Some(security) = doc.get("security") {
        let security = security.as_table_like().ok_or_else(|| {
            shape(format!(
                "`security` must be a table, found {}",
                security.type_name()
            ))
        })?;
        if let Some(blocked) = security.get("blocked_env_keys") {
            let not_strings =
                || shape("`security.blocked_env_keys` must be an array of strings".to_owned());
            let array = blocked.as_array().ok_or_else(not_strings)?;
            for key in array.iter() {
                let key = key.as_str().ok_or_else(not_strings)?;
                snapshot.blocked_env_keys.push(key.to_owned());
            }
        }
        if let Some(encrypt) = security.get("encrypt_env") {
            let encrypt = encrypt.as_bool().ok_or_else(|| {
                shape(format!(
                    "`security.encrypt_env` must be a boolean, found {}",
                    encrypt.type_name()
                ))
            })?;
            snapshot.encrypt_env = Some(encrypt);
        }
    }

    Ok(snapshot)
}

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests;
