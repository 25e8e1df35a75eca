//! What one plugin may see and change of the runtime environment.
//!
//! A plugin sees the keys its manifest declares and every non-sensitive
//! setting some plugin declares (`sensitive = false` in any manifest or
//! catalog entry, and `true` in none); nothing else: not another plugin's
//! secrets, not the rest of the process environment. A plugin granted
//! `manage_secrets` sees and may change everything, as the secrets API
//! must. The grant needs both sides: the plugin asks for it in its
//! manifest extension, and the config allows it
//! (`[plugins.entries."<id>"] manage_secrets = true`; by default only
//! `@milady/plugin-secrets` is allowed). A plugin built before host-api
//! 0.1.2 cannot ask, so for it the config's word alone decides: an older
//! build of the secrets plugin keeps managing every key.
//!
//! The filtered view is rebuilt only when the registry or the environment
//! version moves; a plugin that manages secrets gets the host's snapshot
//! itself, at no cost.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex},
};

use abi_stable::std_types::{RArc, RVec};
use host_api::{EnvSnapshot, PluginManifest, RegistrySnapshot};

use crate::registry::Registry;

/// The plugin id that holds `manage_secrets` unless the config says
/// otherwise.
pub(crate) const DEFAULT_SECRET_MANAGER: &str = "@milady/plugin-secrets";

/// Whether the host grants `manage_secrets` to the plugin `id`: it asks
/// (`Some(true)`), or cannot ask because it predates the manifest extension
/// (`None`), and the config allows it (`grants`, else the default).
pub(crate) fn grants_manage_secrets(
    id: &str,
    asks: Option<bool>,
    grants: &BTreeMap<String, bool>,
) -> bool {
    let allowed = grants
        .get(id)
        .copied()
        .unwrap_or(id == DEFAULT_SECRET_MANAGER);
    allowed && asks.unwrap_or(true)
}

/// One plugin's view of the runtime environment.
pub(crate) struct Scope {
    plugin_id: Arc<str>,
    manage_secrets: bool,
    /// The keys the plugin's manifest declares.
    own: BTreeSet<String>,
    registry: Arc<Registry>,
    settings: Mutex<Option<Settings>>,
    filtered: Mutex<Option<Filtered>>,
}

/// Keys declared as non-sensitive settings and never as secrets, for one
/// registry version.
struct Settings {
    registry_version: u64,
    keys: Arc<HashSet<String>>,
}

struct Filtered {
    registry_version: u64,
    env_version: u64,
    snapshot: RArc<EnvSnapshot>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("plugin_id", &self.plugin_id)
            .field("manage_secrets", &self.manage_secrets)
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

impl Scope {
    /// The scope of the plugin with `manifest`.
    pub(crate) fn new(
        manifest: &PluginManifest,
        manage_secrets: bool,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            plugin_id: manifest.id.as_str().into(),
            manage_secrets,
            own: manifest
                .parameters
                .iter()
                .map(|p| p.key.to_string())
                .collect(),
            registry,
            settings: Mutex::new(None),
            filtered: Mutex::new(None),
        }
    }

    /// The plugin's id.
    pub(crate) fn plugin_id(&self) -> &str {
        &self.plugin_id
    }

    /// Whether the plugin holds `manage_secrets`.
    pub(crate) fn manages_secrets(&self) -> bool {
        self.manage_secrets
    }

    /// Whether the plugin declares `key` itself.
    pub(crate) fn declares(&self, key: &str) -> bool {
        self.own.contains(key)
    }

    /// Whether the plugin may read `key`.
    pub(crate) fn allows(&self, key: &str) -> bool {
        self.manage_secrets || self.own.contains(key) || self.settings().contains(key)
    }

    /// Why the plugin may not write `key`, if it may not: only its own
    /// declared keys, or every key with `manage_secrets`.
    pub(crate) fn write_refusal(&self, key: &str) -> Option<String> {
        (!self.manage_secrets && !self.own.contains(key)).then(|| {
            format!(
                "plugin `{}` does not declare this key (only a plugin granted `manage_secrets` may change the keys of others)",
                self.plugin_id
            )
        })
    }

    /// `snapshot` as the plugin may see it: the same version, only the
    /// keys it may read.
    pub(crate) fn filter(&self, snapshot: RArc<EnvSnapshot>) -> RArc<EnvSnapshot> {
        if self.manage_secrets {
            return snapshot;
        }
        let registry_version = self.registry.snapshot().version;
        let mut cached = lock(&self.filtered);
        if let Some(f) = &*cached
            && f.registry_version == registry_version
            && f.env_version == snapshot.version
        {
            return f.snapshot.clone();
        }
        let settings = self.settings();
        let vars: RVec<_> = snapshot
            .vars
            .iter()
            .filter(|v| self.own.contains(v.key.as_str()) || settings.contains(v.key.as_str()))
            .cloned()
            .collect();
        let filtered = RArc::new(EnvSnapshot {
            version: snapshot.version,
            vars,
        });
        *cached = Some(Filtered {
            registry_version,
            env_version: snapshot.version,
            snapshot: filtered.clone(),
        });
        filtered
    }

    fn settings(&self) -> Arc<HashSet<String>> {
        let registry = self.registry.snapshot();
        let mut cached = lock(&self.settings);
        if let Some(s) = &*cached
            && s.registry_version == registry.version
        {
            return Arc::clone(&s.keys);
        }
        let keys = Arc::new(settings_of(&registry));
        *cached = Some(Settings {
            registry_version: registry.version,
            keys: Arc::clone(&keys),
        });
        keys
    }
}

/// Keys some plugin declares with `sensitive = false` and none with `true`.
fn settings_of(registry: &RegistrySnapshot) -> HashSet<String> {
    let params = || registry.plugins.iter().flat_map(|p| p.parameters.iter());
    let secrets: HashSet<&str> = params()
        .filter(|p| p.sensitive)
        .map(|p| p.key.as_str())
        .collect();
    params()
        .filter(|p| !p.sensitive && !secrets.contains(p.key.as_str()))
        .map(|p| p.key.to_string())
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Caches only: a panic elsewhere leaves nothing half-updated behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use abi_stable::std_types::RArc;
    use host_api::{EnvSnapshot, EnvSource, EnvVar, ParamSpec, PluginManifest};

    use super::*;
    use crate::registry::{CatalogEntry, Registry};

    fn registry() -> Arc<Registry> {
        let catalog = vec![CatalogEntry {
            id: "@c/openai".into(),
            name: "OpenAI".into(),
            parameters: vec![
                ParamSpec::secret("OPENAI_API_KEY", "key", true),
                ParamSpec::setting("OPENAI_MODEL", "string", "model"),
                // Declared a setting here, a secret elsewhere: a secret.
                ParamSpec::setting("SHARED_TOKEN", "string", "token"),
            ],
        }];
        let registry = Registry::new(vec![catalog], &BTreeMap::new());
        let other = PluginManifest::new("@p/other", "Other", "1")
            .with_route("/api/other")
            .with_param(ParamSpec::secret("SHARED_TOKEN", "token", false));
        registry
            .add_loaded(&other, &BTreeMap::new())
            .expect("added");
        Arc::new(registry)
    }

    fn env(keys: &[&str]) -> RArc<EnvSnapshot> {
        let mut vars: Vec<EnvVar> = keys
            .iter()
            .map(|k| EnvVar {
                key: (*k).into(),
                value: "CANARY-VALUE".into(),
                source: EnvSource::Process,
            })
            .collect();
        vars.sort_by(|a, b| a.key.cmp(&b.key));
        RArc::new(EnvSnapshot {
            version: 7,
            vars: vars.into(),
        })
    }

    fn mine() -> PluginManifest {
        PluginManifest::new("@p/mine", "Mine", "1")
            .with_route("/api/mine")
            .with_param(ParamSpec::secret("MINE_KEY", "key", true))
    }

    #[test]
    fn a_plugin_sees_its_own_keys_and_settings_only() {
        let scope = Scope::new(&mine(), false, registry());
        let all = env(&[
            "HOME",
            "MINE_KEY",
            "OPENAI_API_KEY",
            "OPENAI_MODEL",
            "SHARED_TOKEN",
        ]);
        let seen = scope.filter(all.clone());
        let keys: Vec<&str> = seen.vars.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, ["MINE_KEY", "OPENAI_MODEL"]);
        assert_eq!(seen.version, 7, "the version stays the whole environment's");
        assert!(scope.allows("OPENAI_MODEL") && !scope.allows("OPENAI_API_KEY"));
        assert!(!scope.allows("HOME") && !scope.allows("SHARED_TOKEN"));
        // Cached per version pair: the same snapshot comes back.
        assert!(std::ptr::eq(&*seen, &*scope.filter(all)));
    }

    #[test]
    fn a_secret_manager_sees_and_writes_everything() {
        let scope = Scope::new(&mine(), true, registry());
        let all = env(&["HOME", "OPENAI_API_KEY"]);
        assert!(std::ptr::eq(&*all, &*scope.filter(all.clone())));
        assert!(scope.write_refusal("OPENAI_API_KEY").is_none());
    }

    #[test]
    fn writes_are_limited_to_declared_keys() {
        let scope = Scope::new(&mine(), false, registry());
        assert!(scope.write_refusal("MINE_KEY").is_none());
        let refusal = scope.write_refusal("OPENAI_API_KEY").unwrap_or_default();
        assert!(refusal.contains("@p/mine"), "{refusal}");
        assert!(scope.write_refusal("OPENAI_MODEL").is_some());
    }

    #[test]
    fn the_grant_needs_the_ask_and_the_config() {
        let none = BTreeMap::new();
        assert!(grants_manage_secrets(
            DEFAULT_SECRET_MANAGER,
            Some(true),
            &none
        ));
        assert!(!grants_manage_secrets(
            DEFAULT_SECRET_MANAGER,
            Some(false),
            &none
        ));
        // An older build cannot ask: the config decides.
        assert!(grants_manage_secrets(DEFAULT_SECRET_MANAGER, None, &none));
        assert!(!grants_manage_secrets("@p/mine", Some(true), &none));
        let config = BTreeMap::from([
            ("@p/mine".to_owned(), true),
            (DEFAULT_SECRET_MANAGER.to_owned(), false),
        ]);
        assert!(grants_manage_secrets("@p/mine", Some(true), &config));
        assert!(!grants_manage_secrets(
            DEFAULT_SECRET_MANAGER,
            Some(true),
            &config
        ));
    }
}
