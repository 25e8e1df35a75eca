//! What the host knows of each key stored in the config file beyond its
//! value: whether it is stored encrypted, and whether it could be read (and
//! if not, why). Kept in memory from start-up on and updated by every
//! write, never by re-reading the file; it feeds the per-key records
//! plugins get (`encrypted`, `readable`, `unreadable_reason`).
//!
//! Start-up ([`open_config_env`]) opens every encrypted `[env]` value once,
//! with the host's secrets key. A value that cannot be opened (no key, a
//! wrong key, damaged text, a ciphertext copied from another key) is not
//! lost: it stays in the file byte for byte (writes of other keys never
//! touch it), stays out of the runtime environment, and is recorded here
//! as unreadable with the reason; the log names the key and the cause,
//! never a value. Only a write of that key replaces it.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use host_api::EnvChange;
use secrecy::ExposeSecret as _;
use zeroize::Zeroize as _;

use crate::store::{
    config_file::ConfigSnapshot,
    sealed::{self, OpenError},
    secrets_key::Keyring,
};

/// How one key is stored in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtRest {
    /// Stored encrypted (`{ age = "…" }`), not as a plaintext string.
    pub encrypted: bool,
    /// Why the stored value cannot be read (`None`: it can).
    pub unreadable: Option<String>,
}

/// [`AtRest`] of every key the config file holds, current.
#[derive(Debug, Default)]
pub struct AtRestTable {
    keys: RwLock<Arc<BTreeMap<String, AtRest>>>,
}

impl AtRestTable {
    /// A table starting from `keys`.
    pub(crate) fn new(keys: BTreeMap<String, AtRest>) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// Every stored key.
    pub fn all(&self) -> Arc<BTreeMap<String, AtRest>> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// One key, if the config file holds it.
    pub fn get(&self, key: &str) -> Option<AtRest> {
        self.all().get(key).cloned()
    }

    /// Records a durable write of `changes`, as `written` (the snapshot
    /// the store wrote) holds them: a set key is readable, encrypted if it
    /// was written sealed; a cleared key is gone.
    pub(crate) fn record_write(&self, written: &ConfigSnapshot, changes: &[EnvChange]) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let table = Arc::make_mut(&mut keys);
        for change in changes {
            let key = change.key();
            match change.value() {
                Some(_) => {
                    let encrypted = written.sealed.contains_key(key);
                    table.insert(
                        key.to_owned(),
                        AtRest {
                            encrypted,
                            unreadable: None,
                        },
                    );
                }
                None => {
                    table.remove(key);
                }
            }
        }
    }
}

/// The `[env]` table of the config opened at start-up: the values the
/// runtime environment starts from (plaintext ones and those that could be
/// opened) and [`AtRest`] of every stored key. The values are wiped from
/// memory when it is dropped.
pub(crate) struct OpenedEnv {
    /// Readable values, by key.
    pub(crate) values: BTreeMap<String, String>,
    /// How each stored key is stored.
    pub(crate) at_rest: BTreeMap<String, AtRest>,
}

impl Drop for OpenedEnv {
    fn drop(&mut self) {
        for value in self.values.values_mut() {
            value.zeroize();
        }
    }
}

/// Opens every value of `snapshot`'s `[env]` with `keyring` (see the module
/// notes). The key is only read when there is an encrypted value to open.
pub(crate) fn open_config_env(snapshot: &ConfigSnapshot, keyring: Option<&Keyring>) -> OpenedEnv {
    let mut opened = OpenedEnv {
        values: BTreeMap::new(),
        at_rest: BTreeMap::new(),
    };
    for (key, value) in &snapshot.env {
        opened.values.insert(key.clone(), value.clone());
        opened.at_rest.insert(
            key.clone(),
            AtRest {
                encrypted: false,
                unreadable: None,
            },
        );
    }
    if snapshot.sealed.is_empty() {
        return opened;
    }
    let identities = match keyring.map(Keyring::load) {
        Some(Ok(keys)) => Ok(keys.identities()),
        Some(Err(err)) => {
            tracing::warn!(error = %err, "cannot read the secrets key");
            Err(OpenError::NoKey(err.client_message()))
        }
        None => Err(OpenError::NoKey("no secrets key is configured".to_owned())),
    };
    for (key, text) in &snapshot.sealed {
        let result = identities
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|ids| sealed::open(ids, key, text));
        let unreadable = match result {
            Ok(value) => {
                opened
                    .values
                    .insert(key.clone(), value.expose_secret().to_owned());
                None
            }
            Err(err) => {
                tracing::warn!(
                    key = %key,
                    reason = %err,
                    "an encrypted value of the config file cannot be read; it is kept as it is \
                     until a write of this key replaces it"
                );
                Some(err.to_string())
            }
        };
        opened.at_rest.insert(
            key.clone(),
            AtRest {
                encrypted: true,
                unreadable,
            },
        );
    }
    opened
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::secrets_key::SecretsKey;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn plaintext_opened_and_unreadable_values_are_told_apart() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ring = Keyring::new(SecretsKey::File(dir.path().join("k").join("secrets.key")));
        let to = ring.load_or_create()?.recipient();
        let stranger = age::x25519::Identity::generate().to_public();
        let mut snapshot = ConfigSnapshot::default();
        snapshot.env.insert("PLAIN".into(), "typed-by-hand".into());
        snapshot
            .sealed
            .insert("SEALED".into(), sealed::seal(&to, "SEALED", "opened")?);
        snapshot
            .sealed
            .insert("FOREIGN".into(), sealed::seal(&stranger, "FOREIGN", "x")?);
        snapshot
            .sealed
            .insert("COPIED".into(), sealed::seal(&to, "SEALED", "moved")?);
        let opened = open_config_env(&snapshot, Some(&ring));
        assert_eq!(
            opened.values.get("PLAIN").map(String::as_str),
            Some("typed-by-hand")
        );
        assert_eq!(
            opened.values.get("SEALED").map(String::as_str),
            Some("opened")
        );
        assert!(!opened.values.contains_key("FOREIGN"));
        assert!(!opened.values.contains_key("COPIED"));
        let at = |k: &str| opened.at_rest.get(k).cloned();
        assert_eq!(
            at("PLAIN"),
            Some(AtRest {
                encrypted: false,
                unreadable: None
            })
        );
        assert_eq!(
            at("SEALED"),
            Some(AtRest {
                encrypted: true,
                unreadable: None
            })
        );
        assert_eq!(
            at("FOREIGN").and_then(|a| a.unreadable),
            Some(OpenError::WrongKey.to_string())
        );
        assert_eq!(
            at("COPIED").and_then(|a| a.unreadable),
            Some(OpenError::OtherName.to_string())
        );
        Ok(())
    }

    #[test]
    fn without_the_key_every_encrypted_value_is_unreadable() -> TestResult {
        let dir = tempfile::tempdir()?;
        let missing = Keyring::new(SecretsKey::File(
            dir.path().join("none").join("secrets.key"),
        ));
        let mut snapshot = ConfigSnapshot::default();
        let to = age::x25519::Identity::generate().to_public();
        snapshot
            .sealed
            .insert("A".into(), sealed::seal(&to, "A", "v")?);
        let opened = open_config_env(&snapshot, Some(&missing));
        let reason = opened
            .at_rest
            .get("A")
            .and_then(|a| a.unreadable.clone())
            .ok_or("readable")?;
        assert!(reason.contains("does not exist"), "{reason}");
        assert!(opened.values.is_empty());
        // Nothing was created by reading.
        assert!(!dir.path().join("none").exists());
        Ok(())
    }

    /// The store's write path: values set are encrypted (the key created
    /// on first use), cleared ones removed, and an entry no key opens keeps
    /// its bytes through writes of other keys until a write of its own.
    #[test]
    fn writes_encrypt_and_leave_unreadable_values_alone() -> TestResult {
        use crate::store::config_file::ConfigStore;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("cfg").join("milady.toml");
        std::fs::create_dir_all(config.parent().ok_or("folder")?)?;
        let stranger = age::x25519::Identity::generate().to_public();
        let foreign = sealed::seal(&stranger, "BROKEN", "someone-else-value")?;
        let broken_line = format!("BROKEN = {{ age = \"{foreign}\" }}  # by hand");
        std::fs::write(
            &config,
            format!("# notes\n[env]\n{broken_line}\nOLD = \"plain\"\n"),
        )?;
        let key = dir.path().join("data").join("secrets.key");
        let ring = Arc::new(Keyring::new(SecretsKey::File(key.clone())));
        let store = ConfigStore::new(&config).with_keyring(Arc::clone(&ring));
        let written = store.apply_env(&[
            EnvChange::set("NEW_KEY", "canary-value-0123456789"),
            EnvChange::clear("OLD"),
        ])?;
        assert!(key.is_file(), "the key is created on first use");
        assert!(written.sealed.contains_key("NEW_KEY"));
        assert!(!written.env.contains_key("OLD"));
        let text = std::fs::read_to_string(&config)?;
        assert!(text.starts_with("# notes\n[env]\n"), "{text}");
        assert!(text.lines().any(|l| l == broken_line), "{text}");
        assert!(!text.contains("canary-v"), "{text}");
        let opened = open_config_env(&store.load()?, Some(&ring));
        assert_eq!(
            opened.values.get("NEW_KEY").map(String::as_str),
            Some("canary-value-0123456789")
        );
        assert!(opened.at_rest["BROKEN"].unreadable.is_some());
        // A write of that key replaces it.
        store.apply_env(&[EnvChange::set("BROKEN", "replaced-value")])?;
        let opened = open_config_env(&store.load()?, Some(&ring));
        assert_eq!(
            opened.values.get("BROKEN").map(String::as_str),
            Some("replaced-value")
        );
        Ok(())
    }

    #[test]
    fn the_opt_out_writes_plaintext_and_needs_no_key() -> TestResult {
        use crate::store::config_file::ConfigStore;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("cfg").join("milady.toml");
        std::fs::create_dir_all(config.parent().ok_or("folder")?)?;
        std::fs::write(&config, "[security]\nencrypt_env = false\n")?;
        let key = dir.path().join("data").join("secrets.key");
        let ring = Arc::new(Keyring::new(SecretsKey::File(key.clone())));
        let store = ConfigStore::new(&config).with_keyring(ring);
        let written = store.apply_env(&[EnvChange::set("A_KEY", "plain-by-choice")])?;
        assert_eq!(written.encrypt_env, Some(false));
        assert_eq!(
            written.env.get("A_KEY").map(String::as_str),
            Some("plain-by-choice")
        );
        assert!(std::fs::read_to_string(&config)?.contains("A_KEY = \"plain-by-choice\""));
        assert!(!key.exists(), "no key is created when none is needed");
        Ok(())
    }

    #[test]
    fn writes_record_how_keys_were_stored() {
        let table = AtRestTable::new(BTreeMap::from([(
            "BROKEN".to_owned(),
            AtRest {
                encrypted: true,
                unreadable: Some("damaged".into()),
            },
        )]));
        let mut written = ConfigSnapshot::default();
        written.sealed.insert("BROKEN".into(), "…".into());
        written.env.insert("PLAIN".into(), "v".into());
        table.record_write(
            &written,
            &[
                EnvChange::set("BROKEN", "new"),
                EnvChange::set("PLAIN", "v"),
            ],
        );
        assert_eq!(
            table.get("BROKEN"),
            Some(AtRest {
                encrypted: true,
                unreadable: None
            })
        );
        assert_eq!(table.get("PLAIN").map(|a| a.encrypted), Some(false));
        table.record_write(&ConfigSnapshot::default(), &[EnvChange::clear("PLAIN")]);
        assert_eq!(table.get("PLAIN"), None);
    }
}
