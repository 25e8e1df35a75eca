//! The durable TOML config store of the host (`milady.toml`): it reads the
//! `[env]` secrets, the `[plugins.entries."<id>"].enabled` switches and the
//! `[security].blocked_env_keys` list, and writes changes back without losing
//! anything the user typed. Every write is a read-modify-write of the file on
//! disk under a writer lock, edited with `toml_edit` so comments, formatting
//! and unrelated tables survive, and replaced atomically (temp file in the same
//! folder, fsync, rename, fsync of the folder) with mode 0600 because the file
//! holds secrets. Errors carry paths, key names and positions, never values.
//!
//! A file that existed once and has since been removed is not silently
//! recreated: that would drop every secret it held from disk while the
//! runtime still used them, so such a write fails until the file is restored
//! or the host restarted.
//!
//! Fault injection for tests (debug builds only, so a release host has no
//! such path): when the host starts with `DEMO_HOST_FAULT_FILE` naming a
//! file, every write first reads that file; `disk-full` makes writing the
//! temporary file fail with "no space left", `read-only` makes creating it
//! fail with "read-only file system". Requests cannot reach it: it is read
//! from the process environment once, at construction.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use toml_edit::{DocumentMut, InlineTable, Item, Table, TableLike, Value};

/// Mode of the config file: it holds secrets, so only the owner may read it.
const FILE_MODE: u32 = 0o600;
/// Mode of a config folder the store creates itself.
const DIR_MODE: u32 = 0o700;

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

/// The durable store of one TOML config file.
///
/// Reads need no lock (writes replace the file atomically, so a reader sees
/// either the old or the new file); writes are serialised by an in-process
/// mutex so concurrent read-modify-writes cannot lose each other's changes.
#[derive(Debug)]
pub struct ConfigStore {
    /// Path of the config file.
    path: PathBuf,
    /// Serialises writers within this process.
    write_lock: Mutex<()>,
    /// The file has been seen on disk (read or written) by this store.
    existed: AtomicBool,
    /// Debug builds: the file that switches injected write faults on.
    #[cfg(debug_assertions)]
    fault_file: Option<PathBuf>,
}

/// The environment variable naming the fault-injection file (debug builds).
#[cfg(debug_assertions)]
pub const FAULT_FILE_ENV: &str = "DEMO_HOST_FAULT_FILE";

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
            Self::Shape { message, .. } => format!("the config file is malformed: {message}"),
        }
    }
}

/// What the host reads from the config file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// `[env]` string values, by variable name.
    pub env: BTreeMap<String, String>,
    /// `[plugins.entries."<id>"].enabled`, for the entries that set it.
    pub plugin_enabled: BTreeMap<String, bool>,
    /// `[security].blocked_env_keys`, in file order (empty if absent).
    pub blocked_env_keys: Vec<String>,
}

/// Hand-written so that logging a snapshot never leaks a secret: env values
/// are omitted, only their keys are shown.
impl fmt::Debug for ConfigSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSnapshot")
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("plugin_enabled", &self.plugin_enabled)
            .field("blocked_env_keys", &self.blocked_env_keys)
            .finish()
    }
}

/// Where in a write an injected fault strikes (debug builds only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FaultStage {
    /// Creating the temporary file.
    Create,
    /// Writing the new content into it.
    Write,
}

/// One requested change of the `[env]` table: `Some(v)` sets, `None` removes the key.
pub type EnvEdit = (String, Option<String>);

impl ConfigStore {
    /// A store for the config file at `path` (nothing is read or created yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            write_lock: Mutex::new(()),
            existed: AtomicBool::new(false),
            #[cfg(debug_assertions)]
            fault_file: std::env::var_os(FAULT_FILE_ENV).map(PathBuf::from),
        }
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
                self.extract(&doc)
            }
        }
    }

    /// Applies `edits` to `[env]` in order (a later edit of the same key wins)
    /// in one durable write, and returns the snapshot as written.
    ///
    /// Existing keys keep their place and trailing comment; new keys are
    /// appended to `[env]`, which is created only if something is set.
    pub fn apply_env(&self, edits: &[EnvEdit]) -> Result<ConfigSnapshot, ConfigError> {
        self.update(|doc| {
            let root = doc.as_table_mut();
            if !root.contains_key("env") {
                if edits.iter().all(|(_, value)| value.is_none()) {
                    // Removing keys from a missing table: nothing to do, and no
                    // reason to add an empty `[env]` header.
                    return;
                }
                root.insert("env", Item::Table(Table::new()));
            }
            // A non-table `env` is left alone: the shape check then reports it.
            let Some(env) = root.get_mut("env").and_then(Item::as_table_like_mut) else {
                return;
            };
            for (key, value) in edits {
                match value {
                    Some(value) => set_value_keep_decor(env, key, basic_string(value)),
                    None => {
                        env.remove(key);
                    }
                }
            }
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
    /// Under the writer lock: re-reads the file (so hand edits made since the
    /// last write are kept; a missing file is an empty document), parses it
    /// (if invalid, returns the `Parse` error and leaves the file alone), calls
    /// `edit`, checks the result still parses and has the right shape, then
    /// replaces the file atomically. If the edited document is byte-identical
    /// to the file, nothing is written (a too-open mode is still fixed).
    pub fn update(
        &self,
        edit: impl FnOnce(&mut DocumentMut),
    ) -> Result<ConfigSnapshot, ConfigError> {
        // The guarded state is `()`, so a panic in another writer leaves
        // nothing inconsistent behind: ignore poisoning.
        let _guard = self
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
        let mut doc = self.parse(original.as_deref().unwrap_or(""))?;
        edit(&mut doc);
        let text = doc.to_string();
        // Validate what will actually be on disk, not the in-memory tree, so
        // the host can always load what it wrote.
        let written = text.parse::<DocumentMut>().map_err(|err| {
            let (line, column) = error_position(&text, err.span().map(|s| s.start));
            self.shape(format!(
                "the edit would produce invalid TOML at line {line}, column {column}: {}",
                err.message()
            ))
        })?;
        let snapshot = self.extract(&written)?;

        if original.as_deref() == Some(text.as_str()) {
            self.tighten_mode()?;
        } else if original.is_some() || !text.is_empty() {
            self.write_atomic(text.as_bytes(), true)?;
            self.existed.store(true, Ordering::Relaxed);
        }
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
        // No-clobber rename: another process may create the file meanwhile,
        // and its content must win over our template.
        match self.write_atomic(DEFAULT_CONFIG.as_bytes(), false) {
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

    /// Reads the file as UTF-8; `None` if it does not exist.
    fn read_text(&self) -> Result<Option<String>, ConfigError> {
        let bytes = match fs::read(&self.path) {
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

    /// Checks the shape of `doc` and extracts what the host uses. Unknown
    /// tables and keys are ignored (they belong to other tools or versions).
    fn extract(&self, doc: &DocumentMut) -> Result<ConfigSnapshot, ConfigError> {
        let mut snapshot = ConfigSnapshot::default();

        if let Some(env) = doc.get("env") {
            let env = env.as_table_like().ok_or_else(|| {
                self.shape(format!("`env` must be a table, found {}", env.type_name()))
            })?;
            for (key, item) in env.iter() {
                let value = item.as_str().ok_or_else(|| {
                    self.shape(format!(
                        "[env] key {key:?} must be a string, found {}",
                        item.type_name()
                    ))
                })?;
                snapshot.env.insert(key.to_owned(), value.to_owned());
            }
        }

        if let Some(plugins) = doc.get("plugins") {
            let plugins = plugins.as_table_like().ok_or_else(|| {
                self.shape(format!(
                    "`plugins` must be a table, found {}",
                    plugins.type_name()
                ))
            })?;
            if let Some(entries) = plugins.get("entries") {
                let entries = entries.as_table_like().ok_or_else(|| {
                    self.shape(format!(
                        "`plugins.entries` must be a table, found {}",
                        entries.type_name()
                    ))
                })?;
                for (id, entry) in entries.iter() {
                    let entry = entry.as_table_like().ok_or_else(|| {
                        self.shape(format!(
                            "plugin entry {id:?} in `plugins.entries` must be a table, found {}",
                            entry.type_name()
                        ))
                    })?;
                    if let Some(enabled) = entry.get("enabled") {
                        let enabled = enabled.as_bool().ok_or_else(|| {
                            self.shape(format!(
                                "`enabled` of plugin entry {id:?} must be a boolean, found {}",
                                enabled.type_name()
                            ))
                        })?;
                        snapshot.plugin_enabled.insert(id.to_owned(), enabled);
                    }
                }
            }
        }

        if let Some(security) = doc.get("security") {
            let security = security.as_table_like().ok_or_else(|| {
                self.shape(format!(
                    "`security` must be a table, found {}",
                    security.type_name()
                ))
            })?;
            if let Some(blocked) = security.get("blocked_env_keys") {
                let not_strings = || {
                    self.shape("`security.blocked_env_keys` must be an array of strings".to_owned())
                };
                let array = blocked.as_array().ok_or_else(not_strings)?;
                for key in array.iter() {
                    let key = key.as_str().ok_or_else(not_strings)?;
                    snapshot.blocked_env_keys.push(key.to_owned());
                }
            }
        }

        Ok(snapshot)
    }

    /// Replaces the file with `bytes`: temp file in the same folder (so the
    /// rename is atomic), 0600, fully written and fsynced, renamed over the
    /// target, then the folder fsynced so the rename itself survives a crash.
    /// On failure before the rename the temp file is removed (dropping a
    /// `NamedTempFile` deletes it) and the original is untouched.
    /// `overwrite = false` refuses to replace an existing file (`AlreadyExists`).
    fn write_atomic(&self, bytes: &[u8], overwrite: bool) -> Result<(), ConfigError> {
        let target = self.write_target()?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        self.ensure_dir(&dir)?;

        let prefix = match target.file_name() {
            Some(name) => format!(".{}.", name.to_string_lossy()),
            None => ".milady.toml.".to_owned(),
        };
        self.injected_fault(FaultStage::Create)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(Permissions::from_mode(FILE_MODE))
            .tempfile_in(&dir)
            .map_err(|err| self.io("create temp file for", err))?;
        // Explicit chmod: the creation mode is filtered by the umask.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(|err| self.io("set permissions of", err))?;
        self.injected_fault(FaultStage::Write)?;
        tmp.write_all(bytes).map_err(|err| self.io("write", err))?;
        tmp.as_file()
            .sync_all()
            .map_err(|err| self.io("sync", err))?;

        let persisted = if overwrite {
            tmp.persist(&target)
        } else {
            tmp.persist_noclobber(&target)
        };
        // `PersistError` drops the temp file with it, which deletes it.
        persisted.map_err(|err| self.io("replace", err.error))?;

        File::open(&dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| self.io("sync folder of", err))?;
        tracing::debug!(path = %self.path.display(), "config file written");
        Ok(())
    }

    /// Removes the temporary files that writes killed mid-way (SIGKILL,
    /// power loss) left next to the config file: they may hold secrets and
    /// nothing will ever read them. Done when the config is loaded, i.e. at
    /// start-up, before any write of this process; failures are ignored.
    fn remove_stale_temp_files(&self) {
        let Ok(target) = self.write_target() else {
            return;
        };
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!(".{}.", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return;
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

    /// Creates a missing folder (and parents) with mode 0700.
    fn ensure_dir(&self, dir: &Path) -> Result<(), ConfigError> {
        if dir.is_dir() {
            return Ok(());
        }
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|err| self.io("create folder for", err))?;
        // Explicit chmod: the creation mode is filtered by the umask.
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|err| self.io("set folder permissions for", err))
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

    /// Debug builds: the fault the fault-injection file asks for at `stage`,
    /// as the I/O error a real fault of that kind gives.
    #[cfg(debug_assertions)]
    fn injected_fault(&self, stage: FaultStage) -> Result<(), ConfigError> {
        let Some(file) = &self.fault_file else {
            return Ok(());
        };
        let wanted = fs::read_to_string(file).unwrap_or_default();
        match (wanted.trim(), stage) {
            ("disk-full", FaultStage::Write) => Err(self.io(
                "write",
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device (injected fault)",
                ),
            )),
            ("read-only", FaultStage::Create) => Err(self.io(
                "create temp file for",
                io::Error::new(
                    io::ErrorKind::ReadOnlyFilesystem,
                    "Read-only file system (injected fault)",
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Release builds have no fault injection.
    #[cfg(not(debug_assertions))]
    fn injected_fault(&self, _stage: FaultStage) -> Result<(), ConfigError> {
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
        ConfigError::Shape {
            path: self.path.clone(),
            message,
        }
    }
}

/// Sets `key` to `value`, keeping the old value's decor (spacing and trailing
/// comment) when the key exists; otherwise appends it. An unchanged value is
/// left as written (e.g. a user's `'literal'` quoting), so it causes no write.
fn set_value_keep_decor(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            let unchanged = (old.is_str() && old.as_str() == value.as_str())
                || (old.is_bool() && old.as_bool() == value.as_bool());
            if !unchanged {
                *value.decor_mut() = old.decor().clone();
                *old = value;
            }
        }
        _ => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// `value` as a single-line TOML basic string. Escaped by hand because
/// toml_edit would pick literal or multi-line strings for some values; one
/// line per secret keeps the file easy to read and diff.
fn basic_string(value: &str) -> Value {
    let mut repr = String::with_capacity(value.len() + 2);
    repr.push('"');
    for c in value.chars() {
        match c {
            '"' => repr.push_str("\\\""),
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\t' => repr.push_str("\\t"),
            '\r' => repr.push_str("\\r"),
            '\u{8}' => repr.push_str("\\b"),
            '\u{c}' => repr.push_str("\\f"),
            // The other characters TOML forbids raw in basic strings.
            c if c < ' ' || c == '\u{7f}' => repr.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => repr.push(c),
        }
    }
    repr.push('"');
    // Cannot fail for the escaping above; toml_edit's own encoding is a
    // correct (if less uniform) fallback.
    repr.parse::<Value>().unwrap_or_else(|_| Value::from(value))
}

/// The table-like child `key` of `parent`, created if missing (a standard
/// table, implicit if asked, or an inline table inside an inline table).
/// `None` if `parent` or the existing child is not a table.
fn child_table<'a>(parent: &'a mut Item, key: &str, implicit: bool) -> Option<&'a mut Item> {
    let child = match parent {
        Item::Table(table) => table.entry(key).or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(implicit);
            Item::Table(table)
        }),
        Item::Value(Value::InlineTable(table)) => TableLike::entry(table, key)
            .or_insert_with(|| Item::Value(Value::InlineTable(InlineTable::new()))),
        _ => return None,
    };
    child.is_table_like().then_some(child)
}

/// 1-based (line, column in characters) of byte `offset` in `text`; an
/// unknown offset is reported as 1:1.
fn error_position(text: &str, offset: Option<usize>) -> (usize, usize) {
    let Some(mut offset) = offset else {
        return (1, 1);
    };
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::error::Error;
    use std::os::unix::fs::MetadataExt;

    type TestResult = Result<(), Box<dyn Error>>;

    /// The example file of the spec, with some odd formatting thrown in.
    const SAMPLE: &str = r#"# comments anywhere must survive every write
[env]
OPENAI_API_KEY = "sk-old"      # secrets/env vars: string values
  INDENTED   =   'literal'   # odd formatting kept

[plugins.entries."@elizaos/plugin-openai"]
enabled = true

[security]
blocked_env_keys = ["MY_EXTRA_KEY", "*_SECRET_PATH"]   # optional

[other]   # unrelated tables must be kept byte for byte
x = [ 1,2 ,3 ]
y = { a = 1 }
# trailing comment
"#;

    fn edit(key: &str, value: Option<&str>) -> EnvEdit {
        (key.to_owned(), value.map(str::to_owned))
    }

    fn mode(path: &Path) -> io::Result<u32> {
        Ok(fs::metadata(path)?.mode() & 0o777)
    }

    /// A store for `milady.toml` in a fresh temp folder (kept alive by the guard).
    fn temp_store() -> io::Result<(tempfile::TempDir, ConfigStore)> {
        let dir = tempfile::tempdir()?;
        let store = ConfigStore::new(dir.path().join("milady.toml"));
        Ok((dir, store))
    }

    /// Names in `dir`, to check no temp file is left behind.
    fn dir_names(dir: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    #[test]
    fn load_of_missing_file_is_empty_and_creates_nothing() -> TestResult {
        let (dir, store) = temp_store()?;
        assert_eq!(store.load()?, ConfigSnapshot::default());
        assert!(!store.path().exists());
        // Removing from a missing file writes nothing either.
        store.apply_env(&[edit("GONE", None)])?;
        assert!(dir_names(dir.path())?.is_empty());
        Ok(())
    }

    #[test]
    fn load_extracts_everything() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        let snapshot = store.load()?;
        assert_eq!(
            snapshot.env.get("OPENAI_API_KEY").map(String::as_str),
            Some("sk-old")
        );
        assert_eq!(
            snapshot.env.get("INDENTED").map(String::as_str),
            Some("literal")
        );
        assert_eq!(
            snapshot.plugin_enabled.get("@elizaos/plugin-openai"),
            Some(&true)
        );
        assert_eq!(snapshot.blocked_env_keys, ["MY_EXTRA_KEY", "*_SECRET_PATH"]);
        Ok(())
    }

    #[test]
    fn writes_preserve_everything_but_the_changed_lines() -> TestResult {
        let (dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        let snapshot = store.apply_env(&[
            edit("OPENAI_API_KEY", Some("sk-new")),
            edit("ADDED", Some("x")),
        ])?;
        store.set_plugin_enabled("@elizaos/plugin-openai", false)?;
        let expected = SAMPLE
            .replace(r#""sk-old"      #"#, r#""sk-new"      #"#)
            .replace(
                "# odd formatting kept\n",
                "# odd formatting kept\nADDED = \"x\"\n",
            )
            .replace("enabled = true", "enabled = false");
        assert_eq!(fs::read_to_string(store.path())?, expected);
        assert_eq!(snapshot.env.get("ADDED").map(String::as_str), Some("x"));
        assert_eq!(
            snapshot.env.get("OPENAI_API_KEY").map(String::as_str),
            Some("sk-new")
        );
        assert_eq!(
            store.load()?.plugin_enabled.get("@elizaos/plugin-openai"),
            Some(&false)
        );
        assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
        Ok(())
    }

    #[test]
    fn set_overwrite_and_clear_a_key() -> TestResult {
        let (_dir, store) = temp_store()?;
        store.apply_env(&[edit("A", Some("1"))])?;
        assert_eq!(fs::read_to_string(store.path())?, "[env]\nA = \"1\"\n");
        let snapshot = store.apply_env(&[edit("A", Some("2")), edit("B", Some("3"))])?;
        assert_eq!(
            fs::read_to_string(store.path())?,
            "[env]\nA = \"2\"\nB = \"3\"\n"
        );
        assert_eq!(snapshot, store.load()?);
        store.apply_env(&[edit("A", None)])?;
        assert_eq!(fs::read_to_string(store.path())?, "[env]\nB = \"3\"\n");
        // Removing the last key keeps the header.
        let snapshot = store.apply_env(&[edit("B", None)])?;
        assert_eq!(fs::read_to_string(store.path())?, "[env]\n");
        assert!(snapshot.env.is_empty());
        Ok(())
    }

    #[test]
    fn tricky_values_round_trip_as_basic_strings() -> TestResult {
        let (_dir, store) = temp_store()?;
        let tricky =
            "quote \" backslash \\ newline \n tab \t cr \r nul \0 del \u{7f} é 🦀 '''\"\"\"";
        store.apply_env(&[edit("TRICKY", Some(tricky))])?;
        assert_eq!(
            store.load()?.env.get("TRICKY").map(String::as_str),
            Some(tricky)
        );
        let text = fs::read_to_string(store.path())?;
        assert_eq!(
            text,
            "[env]\nTRICKY = \"quote \\\" backslash \\\\ newline \\n tab \\t cr \\r nul \\u0000 \
             del \\u007F é 🦀 '''\\\"\\\"\\\"\"\n"
        );
        Ok(())
    }

    #[test]
    fn unchanged_value_is_not_rewritten() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        let before = fs::metadata(store.path())?.ino();
        store.apply_env(&[edit("INDENTED", Some("literal"))])?;
        store.set_plugin_enabled("@elizaos/plugin-openai", true)?;
        // Same inode: the file was not replaced, and the literal quoting stays.
        assert_eq!(fs::metadata(store.path())?.ino(), before);
        assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
        Ok(())
    }

    #[test]
    fn plugin_toggle_creates_a_proper_header() -> TestResult {
        let (_dir, store) = temp_store()?;
        let snapshot = store.set_plugin_enabled("@elizaos/plugin-openai", true)?;
        assert_eq!(
            fs::read_to_string(store.path())?,
            "[plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n"
        );
        assert_eq!(
            snapshot.plugin_enabled.get("@elizaos/plugin-openai"),
            Some(&true)
        );
        store.set_plugin_enabled("@x/y", false)?;
        assert_eq!(
            fs::read_to_string(store.path())?,
            "[plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n\n\
             [plugins.entries.\"@x/y\"]\nenabled = false\n"
        );
        Ok(())
    }

    #[test]
    fn plugin_toggle_next_to_existing_tables() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        store.set_plugin_enabled("@x/y", true)?;
        let expected = SAMPLE.replace(
            "enabled = true\n",
            "enabled = true\n\n[plugins.entries.\"@x/y\"]\nenabled = true\n",
        );
        assert_eq!(fs::read_to_string(store.path())?, expected);
        Ok(())
    }

    #[test]
    fn plugin_entry_with_only_a_sub_table_gets_its_header() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(
            store.path(),
            "[plugins.entries.\"@x/y\".config]\nmodel = \"m\"\n",
        )?;
        store.set_plugin_enabled("@x/y", true)?;
        let text = fs::read_to_string(store.path())?;
        assert!(
            text.contains("[plugins.entries.\"@x/y\"]\nenabled = true\n"),
            "{text}"
        );
        assert!(
            text.contains("[plugins.entries.\"@x/y\".config]\nmodel = \"m\"\n"),
            "{text}"
        );
        assert_eq!(store.load()?.plugin_enabled.get("@x/y"), Some(&true));
        Ok(())
    }

    #[test]
    fn inline_tables_are_read_and_edited() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(
            store.path(),
            "env = { A = \"1\" }\nplugins = { entries = {} }\n",
        )?;
        store.apply_env(&[edit("B", Some("2"))])?;
        let snapshot = store.set_plugin_enabled("@x/y", true)?;
        assert_eq!(snapshot.env.len(), 2);
        assert_eq!(snapshot.plugin_enabled.get("@x/y"), Some(&true));
        assert_eq!(store.load()?, snapshot);
        Ok(())
    }

    #[test]
    fn missing_folder_is_created_0700_and_file_is_0600() -> TestResult {
        let dir = tempfile::tempdir()?;
        let folder = dir.path().join("state").join("milady");
        let store = ConfigStore::new(folder.join("milady.toml"));
        store.apply_env(&[edit("K", Some("v"))])?;
        assert_eq!(mode(&folder)?, 0o700);
        assert_eq!(mode(store.path())?, 0o600);
        Ok(())
    }

    #[test]
    fn looser_existing_mode_is_fixed() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        fs::set_permissions(store.path(), Permissions::from_mode(0o644))?;
        store.apply_env(&[edit("K", Some("v"))])?;
        assert_eq!(mode(store.path())?, 0o600);
        // Also when the write is skipped because nothing changed.
        fs::set_permissions(store.path(), Permissions::from_mode(0o644))?;
        store.apply_env(&[edit("K", Some("v"))])?;
        assert_eq!(mode(store.path())?, 0o600);
        Ok(())
    }

    #[test]
    fn concurrent_writers_lose_nothing() -> TestResult {
        const THREADS: usize = 16;
        const KEYS: usize = 4;
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let store = &store;
                    scope.spawn(move || -> Result<(), ConfigError> {
                        for k in 0..KEYS {
                            store
                                .apply_env(&[(format!("K_{t}_{k}"), Some(format!("v{t}.{k}")))])?;
                        }
                        store.set_plugin_enabled(&format!("@p/{t}"), t % 2 == 0)?;
                        Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker.join().expect("writer thread panicked")?;
            }
            Ok::<_, ConfigError>(())
        })?;
        let snapshot = store.load()?;
        for t in 0..THREADS {
            for k in 0..KEYS {
                assert_eq!(
                    snapshot.env.get(&format!("K_{t}_{k}")),
                    Some(&format!("v{t}.{k}"))
                );
            }
            assert_eq!(
                snapshot.plugin_enabled.get(&format!("@p/{t}")),
                Some(&(t % 2 == 0))
            );
        }
        assert_eq!(snapshot.env.len(), THREADS * KEYS + 2);
        assert!(
            fs::read_to_string(store.path())?
                .starts_with(SAMPLE.lines().next().unwrap_or_default())
        );
        Ok(())
    }

    #[test]
    fn hand_edit_between_writes_survives() -> TestResult {
        let (_dir, store) = temp_store()?;
        store.apply_env(&[edit("A", Some("1"))])?;
        let mut text = fs::read_to_string(store.path())?;
        text.push_str("HAND = \"edited\" # by hand\n\n[mine]\nz = 1\n");
        fs::write(store.path(), &text)?;
        store.apply_env(&[edit("B", Some("2"))])?;
        assert_eq!(
            fs::read_to_string(store.path())?,
            "[env]\nA = \"1\"\nHAND = \"edited\" # by hand\nB = \"2\"\n\n[mine]\nz = 1\n"
        );
        Ok(())
    }

    #[test]
    fn parse_error_has_position_and_no_secret() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(
            store.path(),
            "[env]\nA = \"ok\"\nSECRET = \"sk-live-abc123\" oops\n",
        )?;
        let err = store.load().expect_err("invalid TOML must not load");
        let ConfigError::Parse {
            line,
            column,
            ref reason,
            ..
        } = err
        else {
            panic!("expected a Parse error, got {err:?}");
        };
        assert_eq!((line, column), (3, 27));
        assert!(!reason.is_empty());
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("sk-live"), "{text}");
            assert!(!text.contains("oops"), "{text}");
        }
        Ok(())
    }

    #[test]
    fn parse_error_column_counts_characters() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), "# é🦀\n[env]\nK = \"é🦀\" x\n")?;
        let err = store.load().expect_err("invalid TOML must not load");
        assert!(
            matches!(
                err,
                ConfigError::Parse {
                    line: 3,
                    column: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn invalid_utf8_is_a_parse_error() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), b"[env]\nK = \"ab\xff\"\n")?;
        let err = store.load().expect_err("invalid UTF-8 must not load");
        assert!(
            matches!(
                err,
                ConfigError::Parse {
                    line: 2,
                    column: 8,
                    ..
                }
            ),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn invalid_file_at_write_time_is_left_untouched() -> TestResult {
        let (dir, store) = temp_store()?;
        let bad = "# mine\n[env]\nA = \"sk-secret\n";
        fs::write(store.path(), bad)?;
        let err = store
            .apply_env(&[edit("B", Some("2"))])
            .expect_err("writing over invalid TOML must fail");
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err:?}");
        assert!(!err.to_string().contains("sk-secret"));
        assert_eq!(fs::read(store.path())?, bad.as_bytes());
        assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
        Ok(())
    }

    #[test]
    fn read_only_folder_fails_without_changes() -> TestResult {
        let (dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        fs::set_permissions(dir.path(), Permissions::from_mode(0o500))?;
        let result = store.apply_env(&[edit("K", Some("v"))]);
        // Restore first so the temp folder can be cleaned up whatever happens.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700))?;
        match result {
            Err(err) => {
                assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
                assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
                assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
            }
            Ok(_) => println!(
                "note: write into a 0500 folder succeeded (running as root bypasses \
                 permissions); read-only assertion skipped"
            ),
        }
        Ok(())
    }

    #[test]
    fn folder_in_place_of_the_file_is_an_io_error() -> TestResult {
        let (dir, store) = temp_store()?;
        fs::create_dir(store.path())?;
        let err = store.load().expect_err("a folder is not a config file");
        assert!(
            matches!(err, ConfigError::Io { action: "read", .. }),
            "{err:?}"
        );
        let err = store
            .apply_env(&[edit("K", Some("v"))])
            .expect_err("a folder cannot be replaced");
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(store.path().is_dir());
        assert!(dir_names(store.path())?.is_empty());
        assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
        assert!(!store.create_default_if_missing()?);
        Ok(())
    }

    #[test]
    fn folder_in_place_of_the_file_fails_at_rename_too() -> TestResult {
        // Reach the rename step: the read succeeds on a file, which is swapped
        // for a folder by the edit callback.
        let (dir, store) = temp_store()?;
        fs::write(store.path(), "")?;
        let path = store.path().to_path_buf();
        let err = store
            .update(|doc| {
                let swapped = fs::remove_file(&path).and_then(|()| fs::create_dir(&path));
                swapped.expect("swap file for folder");
                doc.insert("x", toml_edit::value(1));
            })
            .expect_err("a folder cannot be replaced");
        assert!(
            matches!(
                err,
                ConfigError::Io {
                    action: "replace",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(store.path().is_dir());
        assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
        Ok(())
    }

    #[test]
    fn shape_errors_name_the_key_not_the_value() -> TestResult {
        let (_dir, store) = temp_store()?;
        let cases = [
            ("env = 3\n", "`env`"),
            ("[env]\nX = 5\n", "\"X\""),
            (
                "[plugins.entries.\"@x/y\"]\nenabled = \"yes\"\n",
                "`enabled`",
            ),
            ("[plugins]\nentries = 7\n", "`plugins.entries`"),
            (
                "[security]\nblocked_env_keys = [\"A\", 9]\n",
                "blocked_env_keys",
            ),
        ];
        for (text, names) in cases {
            fs::write(store.path(), text)?;
            let err = store.load().expect_err("wrong shape must not load");
            let ConfigError::Shape { ref message, .. } = err else {
                panic!("expected a Shape error for {text:?}, got {err:?}");
            };
            assert!(message.contains(names), "{message}");
            for value in ["3", "5", "yes", "7", "9"] {
                assert!(!message.contains(value), "{message} contains {value}");
            }
            // A write refuses too and leaves the file alone.
            assert!(matches!(
                store.apply_env(&[edit("OTHER", Some("v"))]),
                Err(ConfigError::Shape { .. })
            ));
            assert_eq!(fs::read_to_string(store.path())?, text);
        }
        Ok(())
    }

    #[test]
    fn update_cannot_write_a_wrong_shape() -> TestResult {
        let (_dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        let err = store
            .update(|doc| {
                doc["env"]["N"] = toml_edit::value(5);
            })
            .expect_err("the edit breaks the shape");
        assert!(matches!(err, ConfigError::Shape { .. }), "{err:?}");
        assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
        Ok(())
    }

    #[test]
    fn debug_of_snapshot_shows_keys_not_values() -> TestResult {
        let (_dir, store) = temp_store()?;
        let snapshot = store.apply_env(&[edit("OPENAI_API_KEY", Some("sk-very-secret"))])?;
        let debug = format!("{snapshot:?}");
        assert!(debug.contains("OPENAI_API_KEY"), "{debug}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        Ok(())
    }

    #[test]
    fn default_file_is_created_once_and_stays_editable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let folder = dir.path().join("new");
        let store = ConfigStore::new(folder.join("milady.toml"));
        assert!(store.create_default_if_missing()?);
        assert_eq!(mode(store.path())?, 0o600);
        assert_eq!(mode(&folder)?, 0o700);
        assert_eq!(fs::read_to_string(store.path())?, DEFAULT_CONFIG);
        assert_eq!(store.load()?, ConfigSnapshot::default());
        assert!(!store.create_default_if_missing()?);

        store.apply_env(&[edit("OPENAI_API_KEY", Some("sk-1"))])?;
        store.set_plugin_enabled("@elizaos/plugin-openai", true)?;
        let expected = format!(
            "{DEFAULT_CONFIG}OPENAI_API_KEY = \"sk-1\"\n\n\
             [plugins.entries.\"@elizaos/plugin-openai\"]\nenabled = true\n"
        );
        assert_eq!(fs::read_to_string(store.path())?, expected);
        // An existing file is never overwritten.
        assert!(!store.create_default_if_missing()?);
        assert_eq!(fs::read_to_string(store.path())?, expected);
        Ok(())
    }

    #[test]
    fn symlinked_file_is_written_through() -> TestResult {
        let dir = tempfile::tempdir()?;
        let real = dir.path().join("dotfiles").join("milady.toml");
        fs::create_dir(dir.path().join("dotfiles"))?;
        fs::write(&real, SAMPLE)?;
        let link = dir.path().join("milady.toml");
        std::os::unix::fs::symlink(&real, &link)?;
        let store = ConfigStore::new(&link);
        store.apply_env(&[edit("K", Some("v"))])?;
        assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert_eq!(store.load()?.env.get("K").map(String::as_str), Some("v"));
        assert_eq!(mode(&real)?, 0o600);
        Ok(())
    }

    #[test]
    fn a_file_removed_while_running_is_not_recreated() -> TestResult {
        let (dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        store.load()?;
        fs::remove_file(store.path())?;
        let err = store
            .apply_env(&[edit("K", Some("sk-canary-value"))])
            .expect_err("recreating would drop every other secret from disk");
        assert!(matches!(err, ConfigError::Vanished { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("removed while the host was running")
        );
        assert!(store.set_plugin_enabled("p", true).is_err());
        assert!(dir_names(dir.path())?.is_empty());
        // Restored by hand: writes work again.
        fs::write(store.path(), SAMPLE)?;
        store.apply_env(&[edit("K", Some("v"))])?;
        assert_eq!(store.load()?.env.get("K").map(String::as_str), Some("v"));
        Ok(())
    }

    #[test]
    fn temp_files_of_interrupted_writes_are_removed_on_load() -> TestResult {
        let (dir, store) = temp_store()?;
        fs::write(store.path(), SAMPLE)?;
        fs::write(
            dir.path().join(".milady.toml.a1B2c3.tmp"),
            "sk-half-written",
        )?;
        fs::write(dir.path().join(".other.toml.x.tmp"), "not ours")?;
        fs::write(dir.path().join("notes.tmp"), "not ours")?;
        store.load()?;
        assert_eq!(
            dir_names(dir.path())?,
            [".other.toml.x.tmp", "milady.toml", "notes.tmp"]
        );
        Ok(())
    }

    #[cfg(debug_assertions)]
    #[test]
    fn injected_faults_fail_the_write_and_change_nothing() -> TestResult {
        let (dir, mut store) = temp_store()?;
        let fault = tempfile::NamedTempFile::new()?;
        store.fault_file = Some(fault.path().to_owned());
        fs::write(store.path(), SAMPLE)?;
        for (mode_name, action) in [
            ("disk-full", "write"),
            ("read-only", "create temp file for"),
        ] {
            fs::write(fault.path(), mode_name)?;
            let err = store
                .apply_env(&[edit("OPENAI_API_KEY", Some("sk-canary-value"))])
                .expect_err("the injected fault fails the write");
            assert!(
                matches!(&err, ConfigError::Io { action: a, .. } if *a == action),
                "{err:?}"
            );
            assert!(!err.to_string().contains("sk-canary-value"));
            assert_eq!(fs::read_to_string(store.path())?, SAMPLE);
            assert_eq!(dir_names(dir.path())?, ["milady.toml"]);
        }
        fs::write(fault.path(), "")?;
        store.apply_env(&[edit("OPENAI_API_KEY", Some("sk-new"))])?;
        assert_eq!(
            store.load()?.env.get("OPENAI_API_KEY").map(String::as_str),
            Some("sk-new")
        );
        Ok(())
    }

    fn env_edits() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
        proptest::collection::vec(
            (
                "[A-Z_][A-Z0-9_]{0,20}",
                proptest::option::weighted(0.8, any::<String>()),
            ),
            1..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn env_edits_round_trip(batches in proptest::collection::vec(env_edits(), 1..4)) {
            let (_dir, store) = temp_store().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let comment = "# keep me: 'quotes' \"and\" = [brackets]\n";
            fs::write(store.path(), format!("{comment}[env]\n"))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut model = BTreeMap::new();
            for edits in &batches {
                for (key, value) in edits {
                    match value {
                        Some(value) => model.insert(key.clone(), value.clone()),
                        None => model.remove(key),
                    };
                }
                let written = store
                    .apply_env(edits)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&written.env, &model);
                let loaded = store.load().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&loaded.env, &model);
                let text = fs::read_to_string(store.path())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(text.starts_with(comment));
                // One line per key: values never span lines.
                prop_assert_eq!(text.lines().count(), 2 + model.len());
            }
        }
    }
}

#[cfg(test)]
mod client_message_tests {
    use super::*;

    #[test]
    fn client_messages_name_the_cause_but_not_the_path() {
        let path = PathBuf::from("/srv/private-folder/milady.toml");
        let errors = [
            ConfigError::Io {
                action: "replace",
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::StorageFull, "/srv/private-folder/.tmp"),
            },
            ConfigError::Parse {
                path: path.clone(),
                line: 3,
                column: 7,
                reason: "invalid string".into(),
            },
            ConfigError::Vanished { path: path.clone() },
            ConfigError::Shape {
                path,
                message: "`env.X` must be a string".into(),
            },
        ];
        for e in &errors {
            let m = e.client_message();
            assert!(!m.contains("private-folder"), "{m}");
            assert!(
                e.to_string().contains("private-folder"),
                "the log keeps the path"
            );
        }
        assert!(errors[0].client_message().contains("no storage space"));
        assert!(errors[1].client_message().contains("line 3, column 7"));
    }
}
