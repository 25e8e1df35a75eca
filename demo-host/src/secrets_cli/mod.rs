//! The `demo-host secrets ...` commands (SPEC §7): encrypt the plaintext
//! values of `[env]`, rotate the secrets key, import a `.env` file. Each
//! takes the config's write lock (`store::lock`) like a running host does,
//! so neither loses the other's writes.
//!
//! - [`encrypt`] rewrites every non-empty plaintext `[env]` value encrypted,
//!   in one atomic write that keeps comments and layout.
//! - [`rotate_key`] re-encrypts every encrypted value under a new key,
//!   crash-safe at every step (see [`rotate_key`]). It refuses while a host
//!   runs on the config: that host would go on encrypting with the old key.
//! - [`import`] brings in a `.env` file all or nothing: it assembles the
//!   host in this process and sends the file's entries as one
//!   `PUT /api/secrets` to it, so they pass exactly the validation (the
//!   secrets plugin's and the host's) and take exactly the write path of
//!   an API write.

mod dotenv;
mod migrate;

pub use dotenv::DotEnvError;
pub use migrate::{MigrateError, MigrateReport, migrate_to_openbao};

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Read as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use poem::{Endpoint as _, http::Method};
use secrecy::ExposeSecret as _;
use toml_edit::Item;
use zeroize::Zeroizing;

use crate::{
    app::{Host, HostOptions, StartupError},
    store::{
        config_file::{ConfigError, ConfigStore},
        file_safety::FilePolicy,
        lock,
        sealed::{self, Stored},
        secrets_key::{self, KeyError, Keyring, SecretsKey},
        toml_doc::set_value_keep_decor,
    },
};

/// The largest `.env` file read.
const MAX_DOTENV_BYTES: u64 = 1024 * 1024;

/// Why a `secrets` command did nothing. No variant carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsCommandError {
    /// The secrets key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The config file cannot be read or written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config says `[security] encrypt_env = false`.
    #[error(
        "the config opts out of encryption ([security] encrypt_env = false); \
         remove that line first (nothing was written)"
    )]
    EncryptionOff,
    /// A host holds the config (it encrypts with the current key).
    #[error(
        "a host is running on {} (it holds {}); stop it, then rotate the key \
         (nothing was changed)",
        config.display(),
        lock.display()
    )]
    HostRunning {
        /// The config file.
        config: PathBuf,
        /// The host lock file.
        lock: PathBuf,
    },
    /// The host lock cannot be taken.
    #[error("cannot take the host lock {}: {source}", path.display())]
    Lock {
        /// The host lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key comes from `MILADY_SECRETS_KEY`, which a command cannot
    /// change.
    #[error(
        "the secrets key comes from MILADY_SECRETS_KEY, which this command cannot replace; \
         rotate with a key file (--secrets-key FILE), then hand the new key to the host"
    )]
    InlineKey,
    /// Switching to the new key file failed (the config is already
    /// encrypted with it; running the command again finishes the rotation).
    #[error(
        "cannot move the new key {} into place: {source}; every value is readable with it, \
         run `demo-host secrets rotate-key` again to finish",
        next.display()
    )]
    Switch {
        /// The next key file.
        next: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The `.env` file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The `.env` file is malformed.
    #[error("{}: {source}", path.display())]
    DotEnv {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong.
        #[source]
        source: DotEnvError,
    },
    /// The `.env` file sets a key twice.
    #[error("{}: {key} is set on line {first} and again on line {again}", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Its first line.
        first: usize,
        /// The line setting it again.
        again: usize,
    },
    /// The host could not be assembled for the import.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// No loaded plugin serves `/api/secrets`.
    #[error(
        "no plugin in the plugin folder serves /api/secrets (install the secrets plugin); \
         nothing was imported"
    )]
    NoSecretsPlugin,
    /// The async runtime for the import could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    /// The write was refused: nothing was imported.
    #[error("nothing was imported: {message}{}", list(rejected))]
    Refused {
        /// The API's message.
        message: String,
        /// Each refused key with its reason.
        rejected: Vec<(String, String)>,
    },
}

fn list(rejected: &[(String, String)]) -> String {
    rejected
        .iter()
        .map(|(key, reason)| format!("\n  {key}: {reason}"))
        .collect()
}

/// What `secrets encrypt` did.
#[derive(Debug, Default)]
pub struct EncryptReport {
    /// Keys now stored encrypted that were plaintext.
    pub encrypted: Vec<String>,
    /// Keys that already were encrypted.
    pub already: usize,
}

/// Rewrites every non-empty plaintext value of `[env]` encrypted, in one
/// atomic write under the write lock (comments and layout kept). The key
/// is created if this is its first use.
pub fn encrypt(
    config: &Path,
    key: SecretsKey,
    policy: FilePolicy,
) -> Result<EncryptReport, SecretsCommandError> {
    key.check_apart_from(config)?;
    let keyring = Arc::new(Keyring::new(key));
    let store = ConfigStore::new(config)
        .with_policy(policy)
        .with_keyring(Arc::clone(&keyring));
    let mut report = EncryptReport::default();
    let mut opted_out = false;
    store.try_update(|doc| {
        if !sealed::encrypts(doc) {
            opted_out = true;
            return Ok(());
        }
        let Some(env) = doc.get_mut("env").and_then(Item::as_table_like_mut) else {
            return Ok(());
        };
        let mut plain: Vec<(String, Zeroizing<String>)> = Vec::new();
        for (name, item) in env.iter() {
            match sealed::read_item(item) {
                Some(Stored::Plain(value)) if !value.is_empty() => {
                    plain.push((name.to_owned(), Zeroizing::new(value.to_owned())));
                }
                Some(Stored::Sealed(_)) => report.already += 1,
                _ => {}
            }
        }
        if plain.is_empty() {
            return Ok(());
        }
        let to = keyring.load_or_create()?.recipient();
        for (name, value) in plain {
            let stored = sealed::sealed_value(&sealed::seal(&to, &name, &value)?);
            set_value_keep_decor(env, &name, stored);
            report.encrypted.push(name);
        }
        Ok(())
    })?;
    if opted_out {
        return Err(SecretsCommandError::EncryptionOff);
    }
    Ok(report)
}

/// What `secrets rotate-key` did.
#[derive(Debug, Default)]
pub struct RotateReport {
    /// Keys re-encrypted under the new key.
    pub rotated: Vec<String>,
    /// Encrypted values that neither key opens, left byte for byte, with
    /// the reason.
    pub unreadable: Vec<(String, String)>,
    /// Plaintext values (not encrypted, so not rotated).
    pub plaintext: usize,
    /// A rotation interrupted earlier was finished.
    pub resumed: bool,
    /// The new key's public key (`age1…`).
    pub public_key: String,
}

/// Re-encrypts every encrypted `[env]` value under a new key. Refuses
/// while a host runs on `config` (it holds the host lock) and holds that
/// lock and the write lock throughout.
///
/// Crash-safe at every point, because the key and the config never
/// disagree: (1) the new key is written beside the old one as
/// `secrets.key.next` (atomically, no-clobber; a killed run's next key is
/// reused); (2) the config is rewritten in one atomic replace with every
/// value it can open (with the old or the next key) encrypted to the next
/// key, unreadable ones left byte for byte; (3) the next key is renamed
/// over the old one. A kill before (3) leaves both keys, which the host
/// reads together, and running the command again finishes the rotation.
pub fn rotate_key(
    config: &Path,
    key: SecretsKey,
    policy: FilePolicy,
) -> Result<RotateReport, SecretsCommandError> {
    let Some(key_path) = key.file().map(Path::to_owned) else {
        return Err(SecretsCommandError::InlineKey);
    };
    key.check_apart_from(config)?;
    let host_lock = lock::host_lock_file(config);
    let _no_host = lock::exclude_hosts(config)
        .map_err(|source| SecretsCommandError::Lock {
            path: host_lock.clone(),
            source,
        })?
        .ok_or_else(|| SecretsCommandError::HostRunning {
            config: config.to_owned(),
            lock: host_lock,
        })?;
    let store = ConfigStore::new(config).with_policy(policy);
    let held = store.lock_writes()?;
    // Under both locks no write is in progress: clean up after killed ones.
    store.load()?;
    let current = secrets_key::read_key_file(&key_path)?;
    let next_path = secrets_key::next_key_file(&key_path);
    let (next, resumed) = match secrets_key::read_key_file(&next_path) {
        Ok(next) => (next, true),
        Err(KeyError::Missing { .. }) => (secrets_key::create_key_file(&next_path)?, false),
        Err(err) => return Err(err.into()),
    };
    let to = next.to_public();
    let identities = [current, next];
    let mut report = RotateReport {
        resumed,
        public_key: to.to_string(),
        ..RotateReport::default()
    };
    store.update_locked(&held, |doc| {
        let Some(env) = doc.get_mut("env").and_then(Item::as_table_like_mut) else {
            return Ok(());
        };
        let mut sealed_entries: Vec<(String, String)> = Vec::new();
        for (name, item) in env.iter() {
            match sealed::read_item(item) {
                Some(Stored::Sealed(text)) => {
                    sealed_entries.push((name.to_owned(), text.to_owned()))
                }
                Some(Stored::Plain(value)) if !value.is_empty() => report.plaintext += 1,
                _ => {}
            }
        }
        for (name, text) in sealed_entries {
            match sealed::open(&identities, &name, &text) {
                Ok(value) => {
                    let stored =
                        sealed::sealed_value(&sealed::seal(&to, &name, value.expose_secret())?);
                    set_value_keep_decor(env, &name, stored);
                    report.rotated.push(name);
                }
                Err(err) => report.unreadable.push((name, err.to_string())),
            }
        }
        Ok(())
    })?;
    switch_key(&next_path, &key_path)?;
    Ok(report)
}

/// Renames the next key over the key and makes the rename durable.
fn switch_key(next: &Path, key: &Path) -> Result<(), SecretsCommandError> {
    let failed = |source| SecretsCommandError::Switch {
        next: next.to_owned(),
        source,
    };
    fs::rename(next, key).map_err(failed)?;
    let folder = match key.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(failed)
}

/// What `secrets import` did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Keys written (the API's `updated`).
    pub imported: Vec<String>,
    /// Keys with an empty value, skipped (an empty value would clear the
    /// key).
    pub skipped_empty: Vec<String>,
}

/// The `PUT /api/secrets` body of an import.
#[derive(serde::Serialize)]
struct PutBody<'a> {
    secrets: BTreeMap<&'a str, &'a str>,
}

/// Imports the `.env` file `file` into the host configured by `options`,
/// all or nothing, as one `PUT /api/secrets` to that host assembled in
/// this process (see the module notes). Entries with an empty value are
/// skipped; a key set twice refuses the file.
pub fn import(
    options: HostOptions,
    file: &Path,
    process_env: impl IntoIterator<Item = (String, String)>,
) -> Result<ImportReport, SecretsCommandError> {
    let read_failed = |source| SecretsCommandError::Read {
        path: file.to_owned(),
        source,
    };
    let size = fs::metadata(file).map_err(read_failed)?.len();
    let mut text = Zeroizing::new(String::with_capacity(
        usize::try_from(size.min(MAX_DOTENV_BYTES)).unwrap_or(0) + 1,
    ));
    File::open(file)
        .and_then(|f| f.take(MAX_DOTENV_BYTES).read_to_string(&mut text))
        .map_err(read_failed)?;
    let entries = dotenv::parse(&text).map_err(|source| SecretsCommandError::DotEnv {
        path: file.to_owned(),
        source,
    })?;
    let mut report = ImportReport::default();
    let mut lines: BTreeMap<&str, usize> = BTreeMap::new();
    let mut body = PutBody {
        secrets: BTreeMap::new(),
    };
    for entry in &entries {
        if let Some(&first) = lines.get(entry.key.as_str()) {
            return Err(SecretsCommandError::Duplicate {
                path: file.to_owned(),
                key: entry.key.clone(),
                first,
                again: entry.line,
            });
        }
        lines.insert(&entry.key, entry.line);
        if entry.value.is_empty() {
            report.skipped_empty.push(entry.key.clone());
        } else {
            body.secrets.insert(&entry.key, entry.value.as_str());
        }
    }
    if body.secrets.is_empty() {
        return Ok(report);
    }
    let json = Zeroizing::new(serde_json::to_vec(&body).unwrap_or_default());
    let host = Host::build(options, process_env)?;
    let serves_secrets = host.plugins.iter().any(|mounted| {
        mounted
            .plugin
            .manifest
            .routes
            .iter()
            .any(|route| "/api/secrets".starts_with(route.as_str()))
    });
    if !serves_secrets {
        host.shutdown_plugins();
        return Err(SecretsCommandError::NoSecretsPlugin);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SecretsCommandError::Runtime)?;
    let endpoint = host.endpoint();
    let request = poem::Request::builder()
        .method(Method::PUT)
        .uri_str("/api/secrets")
        .header("host", "127.0.0.1")
        .content_type("application/json")
        .body(json.to_vec());
    let (status, answer) = runtime.block_on(async {
        let response = endpoint.get_response(request).await;
        let status = response.status();
        let bytes = response.into_body().into_vec().await.unwrap_or_default();
        (status, bytes)
    });
    host.shutdown_plugins();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if !status.is_success() {
        let message = answer["error"]
            .as_str()
            .map_or_else(|| format!("the host answered {status}"), str::to_owned);
        let rejected = answer["rejected"]
            .as_object()
            .map(|keys| {
                keys.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        return Err(SecretsCommandError::Refused { message, rejected });
    }
    report.imported = answer["updated"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| body.secrets.keys().map(|k| (*k).to_owned()).collect());
    Ok(report)
}

/// Turns core dumps off for this process and its children (`RLIMIT_CORE`
/// 0, soft and hard): a crash must not write the secrets in memory to
/// disk.
pub fn disable_core_dumps() -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests;
