//! The runtime environment the host lends to plugins, and the one path that
//! changes it: persist to the config file first, then apply in memory.
//!
//! Start-up order (the Milady rule): the process environment, then `[env]`
//! from the config file for keys the process does not set. API writes apply
//! on top. `std::env::set_var` is never called: it is unsound once threads
//! run, and every plugin library links its own `std` anyway.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
};

use abi_stable::std_types::{RArc, RString, RVec};
use host_api::{EnvChange, EnvSnapshot, EnvSource, EnvUpdate, EnvVar, HostError};

use crate::{config_store::ConfigStore, key_policy::KeyPolicy};

/// The host's runtime environment and its durable update path.
pub struct RuntimeEnv {
    current: RwLock<RArc<EnvSnapshot>>,
    /// Held across persist + apply so version checks and writes are atomic.
    writer: Mutex<()>,
    config: Arc<ConfigStore>,
    policy: KeyPolicy,
}

impl RuntimeEnv {
    /// Builds the start-up environment from the process environment and the
    /// config file's `[env]` table. Empty values count as unset.
    /// `hidden` keys (the host's own token) are not lent to plugins.
    pub fn new(
        process: impl IntoIterator<Item = (String, String)>,
        config_env: &BTreeMap<String, String>,
        hidden: &[&str],
        config: Arc<ConfigStore>,
        policy: KeyPolicy,
    ) -> Self {
        let mut vars: BTreeMap<String, (String, EnvSource)> = BTreeMap::new();
        for (k, v) in process {
            if !v.is_empty() && !hidden.contains(&k.as_str()) {
                vars.insert(k, (v, EnvSource::Process));
            }
        }
        for (k, v) in config_env {
            if !v.is_empty() && !hidden.contains(&k.as_str()) && !vars.contains_key(k) {
                vars.insert(k.clone(), (v.clone(), EnvSource::ConfigFile));
            }
        }
        Self {
            current: RwLock::new(RArc::new(snapshot_from(1, vars))),
            writer: Mutex::new(()),
            config,
            policy,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> RArc<EnvSnapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The host's key rules.
    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// Applies every change or none: checks keys and `expected_version`
    /// under the writer lock, writes the config file durably, then swaps in
    /// the new snapshot. Blocking (disk I/O): call it off the async runtime.
    pub fn update_blocking(
        &self,
        changes: &[EnvChange],
        expected_version: Option<u64>,
    ) -> Result<EnvUpdate, HostError> {
        let mut rejected = HostError::new(HostError::REJECTED, "");
        for change in changes {
            if let Some(reason) = self.policy.check(&change.key) {
                rejected = rejected.with_detail(&change.key, reason);
            } else if change
                .value
                .as_ref()
                .into_option()
                .is_some_and(|v| v.is_empty() || v.contains('\0'))
            {
                rejected = rejected.with_detail(&change.key, "value is empty or contains NUL");
            }
        }
        if !rejected.details.is_empty() {
            rejected.message =
                format!("{} environment keys refused", rejected.details.len()).into();
            return Err(rejected);
        }

        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.snapshot();
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(HostError::new(
                HostError::CONFLICT,
                "the environment changed since it was read",
            ));
        }
        let edits: Vec<(String, Option<String>)> = changes
            .iter()
            .map(|c| {
                (
                    c.key.to_string(),
                    c.value.as_ref().map(|v| v.to_string()).into_option(),
                )
            })
            .collect();
        self.config
            .apply_env(&edits)
            .map_err(|e| HostError::new(HostError::STORAGE, e.to_string()))?;

        let mut vars: BTreeMap<String, (String, EnvSource)> = current
            .vars
            .iter()
            .map(|v| (v.key.to_string(), (v.value.to_string(), v.source)))
            .collect();
        for (key, value) in edits {
            match value {
                Some(v) => vars.insert(key, (v, EnvSource::Api)),
                None => vars.remove(&key),
            };
        }
        let version = current.version + 1;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            RArc::new(snapshot_from(version, vars));
        Ok(EnvUpdate { version })
    }
}

fn snapshot_from(version: u64, vars: BTreeMap<String, (String, EnvSource)>) -> EnvSnapshot {
    EnvSnapshot {
        version,
        vars: vars
            .into_iter()
            .map(|(key, (value, source))| EnvVar {
                key: RString::from(key),
                value: RString::from(value),
                source,
            })
            .collect::<RVec<_>>(),
    }
}
