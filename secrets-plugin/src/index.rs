//! The known secret keys, derived from a registry snapshot: every parameter
//! any plugin declares with `sensitive = true`.
//!
//! Deriving it walks every plugin's parameters, so it is computed once per
//! registry version and shared until the registry changes.

use std::{collections::BTreeMap, sync::Arc};

use host_api::RegistrySnapshot;

/// One plugin that declares a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Declarer {
    /// Plugin id.
    pub(crate) id: String,
    /// Display name.
    pub(crate) name: String,
    /// Enabled at snapshot time.
    pub(crate) enabled: bool,
    /// Whether this plugin marks the key as required.
    pub(crate) required: bool,
    /// This plugin's description of the key.
    pub(crate) description: String,
}

/// Everything known about one secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    /// Every declaring plugin, in registry order.
    pub(crate) declared_by: Vec<Declarer>,
    /// Index into `declared_by` of the plugin reported as `pluginId`: the
    /// first enabled one, else the first.
    primary: usize,
}

impl KeyInfo {
    /// The plugin reported as `pluginId`.
    pub(crate) fn primary(&self) -> &Declarer {
        &self.declared_by[self.primary]
    }

    /// True when an enabled plugin requires the key.
    pub(crate) fn required(&self) -> bool {
        self.declared_by.iter().any(|d| d.enabled && d.required)
    }

    /// The primary plugin's description, or the first non-empty one.
    pub(crate) fn description(&self) -> &str {
        let primary = self.primary().description.as_str();
        if !primary.is_empty() {
            return primary;
        }
        self.declared_by
            .iter()
            .map(|d| d.description.as_str())
            .find(|d| !d.is_empty())
            .unwrap_or("")
    }
}

/// The secret keys of one registry version, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SecretIndex {
    /// The registry version this was built from.
    pub(crate) registry_version: u64,
    /// Key → what declares it.
    pub(crate) keys: BTreeMap<String, KeyInfo>,
}

impl SecretIndex {
    /// Builds the index from a snapshot.
    pub(crate) fn build(snapshot: &RegistrySnapshot) -> Self {
        let mut keys: BTreeMap<String, KeyInfo> = BTreeMap::new();
        for plugin in snapshot.plugins.iter() {
            for param in plugin.parameters.iter().filter(|p| p.sensitive) {
                let info = keys
                    .entry(param.key.to_string())
                    .or_insert_with(|| KeyInfo {
                        declared_by: Vec::new(),
                        primary: 0,
                    });
                // A plugin listing the same key twice counts once.
                if info.declared_by.iter().any(|d| d.id == plugin.id.as_str()) {
                    continue;
                }
                info.declared_by.push(Declarer {
                    id: plugin.id.to_string(),
                    name: plugin.name.to_string(),
                    enabled: plugin.enabled,
                    required: param.required,
                    description: param.description.to_string(),
                });
            }
        }
        for info in keys.values_mut() {
            info.primary = info.declared_by.iter().position(|d| d.enabled).unwrap_or(0);
        }
        Self {
            registry_version: snapshot.version,
            keys,
        }
    }
}

/// A one-entry cache of the index, keyed by registry version.
#[derive(Default)]
pub(crate) struct IndexCache {
    current: std::sync::Mutex<Option<Arc<SecretIndex>>>,
}

impl IndexCache {
    /// The index for `snapshot`, rebuilt only when its version moved.
    pub(crate) fn get(&self, snapshot: &RegistrySnapshot) -> Arc<SecretIndex> {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some(index) if index.registry_version == snapshot.version => Arc::clone(index),
            _ => {
                let index = Arc::new(SecretIndex::build(snapshot));
                *guard = Some(Arc::clone(&index));
                index
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_api::{ParamSpec, PluginEntry};

    fn plugin(id: &str, enabled: bool, keys: &[(&str, bool)]) -> PluginEntry {
        PluginEntry {
            id: id.into(),
            name: id.into(),
            enabled,
            loaded: false,
            parameters: keys
                .iter()
                .map(|(k, sensitive)| ParamSpec {
                    sensitive: *sensitive,
                    ..ParamSpec::secret(k, "d", true)
                })
                .collect(),
        }
    }

    #[test]
    fn shared_key_prefers_enabled_then_registry_order() {
        let mut snap = RegistrySnapshot {
            version: 1,
            plugins: vec![
                plugin("a", false, &[("K", true), ("N", false)]),
                plugin("b", true, &[("K", true)]),
                plugin("c", true, &[("K", true)]),
            ]
            .into(),
        };
        let idx = SecretIndex::build(&snap);
        assert!(!idx.keys.contains_key("N"));
        let k = &idx.keys["K"];
        assert_eq!(k.declared_by.len(), 3);
        assert_eq!(k.primary().id, "b");
        snap.plugins[1].enabled = false;
        snap.plugins[2].enabled = false;
        assert_eq!(SecretIndex::build(&snap).keys["K"].primary().id, "a");
        assert!(!SecretIndex::build(&snap).keys["K"].required());
    }

    #[test]
    fn cache_rebuilds_only_on_new_version() {
        let cache = IndexCache::default();
        let mut snap = RegistrySnapshot {
            version: 7,
            plugins: vec![plugin("a", true, &[("K", true)])].into(),
        };
        let first = cache.get(&snap);
        assert!(Arc::ptr_eq(&first, &cache.get(&snap)));
        snap.version = 8;
        assert!(!Arc::ptr_eq(&first, &cache.get(&snap)));
    }
}
