//! `demo-host secrets migrate --to openbao` (SPEC §9): copies the `[env]`
//! secrets of the config into the fleet's KV v2 secret named by `[store]`,
//! in one write with `cas`, never replacing a key the store already has
//! unless `--overwrite`. The config file is left as it is.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use crate::{
    env::at_rest::open_config_env,
    store::{
        backend::{StoreBackend, StoreConfigError, read_store_backend},
        config_file::{ConfigError, ConfigStore},
        file_safety::FilePolicy,
        kv::{KvClient, KvError},
        secrets_key::{Keyring, SecretsKey},
    },
};

/// How many times the migration reads and writes again when another
/// writer came first.
const ATTEMPTS: u32 = 5;

/// What `secrets migrate` did.
#[derive(Debug, Default)]
pub struct MigrateReport {
    /// Keys written to the store, sorted.
    pub copied: Vec<String>,
    /// Keys the store already had and kept (without `--overwrite`), sorted.
    pub kept: Vec<String>,
    /// Keys of `[env]` whose stored value cannot be read, left out.
    pub unreadable: Vec<String>,
    /// The store's version after the write (unchanged when nothing was copied).
    pub version: u64,
}

/// Why nothing was migrated. Never carries a value or the token.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The config file cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[store]` is not usable.
    #[error("{0}")]
    Store(String),
    /// The config names no secret store.
    #[error("the config has no [store] backend = \"openbao\" to migrate to")]
    NotOpenBao,
    /// The store did not take the write (the reason never carries the
    /// token).
    #[error("{0}")]
    Kv(String),
}

impl From<StoreConfigError> for MigrateError {
    fn from(e: StoreConfigError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<KvError> for MigrateError {
    fn from(e: KvError) -> Self {
        Self::Kv(e.to_string())
    }
}

/// Copies the `[env]` secrets of `config` into its `[store]`.
pub fn migrate_to_openbao(
    config: &Path,
    key: SecretsKey,
    policy: FilePolicy,
    overwrite: bool,
    process: &BTreeMap<String, String>,
) -> Result<MigrateReport, MigrateError> {
    let StoreBackend::OpenBao(settings) = read_store_backend(config, process)? else {
        return Err(MigrateError::NotOpenBao);
    };
    let store = ConfigStore::new(config)
        .with_policy(policy)
        .with_keyring(Arc::new(Keyring::new(key)));
    let snapshot = store.load()?;
    let opened = open_config_env(&snapshot, store.keyring());
    let client = KvClient::new(settings)?;
    let mut report = MigrateReport {
        unreadable: snapshot
            .env
            .keys()
            .filter(|k| !opened.values.contains_key(*k))
            .cloned()
            .collect(),
        ..MigrateReport::default()
    };
    for _ in 0..ATTEMPTS {
        let current = client.read()?;
        let mut data = current.data.clone();
        report.copied.clear();
        report.kept.clear();
        for (key, value) in &opened.values {
            if value.is_empty() {
                continue;
            }
            if current.data.contains_key(key) && !overwrite {
                report.kept.push(key.clone());
            } else {
                data.insert(key.clone(), value.clone());
                report.copied.push(key.clone());
            }
        }
        if report.copied.is_empty() {
            report.version = current.version;
            return Ok(report);
        }
        match client.write(&data, current.version) {
            Ok(version) => {
                report.version = version;
                return Ok(report);
            }
            Err(KvError::CasMismatch) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(KvError::CasMismatch.into())
}
