//! The plugin registry: catalog plugins (Milady's `plugins.json` format) and
//! dynamically loaded plugins, with their enabled state.
//!
//! Readers get an immutable [`RegistrySnapshot`] behind an `RArc`; every
//! change builds a new snapshot with a higher version, so plugins can cache
//! whatever they derive from one until the version moves.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Mutex, RwLock},
};

use abi_stable::std_types::{RArc, RVec};
use host_api::{ParamSpec, PluginEntry, PluginManifest, RegistrySnapshot};
use serde::Deserialize;

/// The catalog built into the host: a realistic set of elizaOS plugins.
pub(crate) const DEFAULT_CATALOG: &str = include_str!("../catalog/default-plugins.json");

/// A catalog file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Read {
        /// The catalog file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Milady plugin catalog.
    #[error("catalog {origin} is not a valid plugin catalog: {reason}")]
    Invalid {
        /// Where the catalog came from.
        origin: String,
        /// What is wrong, without file contents.
        reason: String,
    },
}

#[derive(Deserialize)]
struct CatalogFile {
    plugins: Vec<CatalogPlugin>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CatalogPlugin {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    npm_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    plugin_parameters: Option<BTreeMap<String, CatalogParam>>,
}

#[derive(Deserialize)]
struct CatalogParam {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    sensitive: Option<bool>,
}

/// One plugin as a catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The npm package name (or the catalog's `id` when it has none).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Declared parameters, sorted by key.
    pub parameters: Vec<ParamSpec>,
}

/// Parses a catalog in Milady's `plugins.json` format. `origin` names the
/// source in errors.
pub(crate) fn parse_catalog(json: &str, origin: &str) -> Result<Vec<CatalogEntry>, CatalogError> {
    let invalid = |reason: String| CatalogError::Invalid {
        origin: origin.to_owned(),
        reason,
    };
    let file: CatalogFile = serde_json::from_str(json).map_err(|e| {
        // serde's type errors can quote file content; keep only the position.
        invalid(format!(
            "{} at line {}, column {}",
            match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof =>
                    "malformed JSON",
                _ => "unexpected structure",
            },
            e.line(),
            e.column()
        ))
    })?;
    let mut out = Vec::with_capacity(file.plugins.len());
    for (index, plugin) in file.plugins.into_iter().enumerate() {
        let id = plugin
            .npm_name
            .filter(|s| !s.is_empty())
            .or(plugin.id.filter(|s| !s.is_empty()))
            .ok_or_else(|| invalid(format!("plugin #{index} has neither `npmName` nor `id`")))?;
        let parameters = plugin
            .plugin_parameters
            .unwrap_or_default()
            .into_iter()
            .map(|(key, p)| ParamSpec {
                key: key.into(),
                kind: p.kind.unwrap_or_else(|| "string".to_owned()).into(),
                description: p.description.unwrap_or_default().into(),
                required: p.required.unwrap_or(false),
                sensitive: p.sensitive.unwrap_or(false),
            })
            .collect();
        out.push(CatalogEntry {
            name: plugin.name.unwrap_or_else(|| id.clone()),
            id,
            parameters,
        });
    }
    Ok(out)
}

/// Reads and parses a catalog file.
pub(crate) fn load_catalog_file(path: &Path) -> Result<Vec<CatalogEntry>, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_catalog(&text, &path.display().to_string())
}

/// Another loaded plugin already has this id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("another loaded plugin already has the id `{0}`")]
pub struct DuplicateId(pub String);

/// The registry of every plugin the host knows.
pub struct Registry {
    entries: RwLock<RArc<RegistrySnapshot>>,
    /// Serialises toggles so the file and memory agree on the last one.
    toggle_lock: Mutex<()>,
    /// `[plugins.entries."<id>"].manage_secrets` from the config file.
    manage_secrets: BTreeMap<String, bool>,
    /// Loaded plugins whose library was replaced while the host runs, by
    /// id: the new version waits for a restart.
    pending_restart: Mutex<BTreeMap<String, PendingRestart>>,
}

/// A new version of a loaded plugin, waiting for the host to restart
/// (libraries are never unloaded, so it cannot be swapped in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRestart {
    /// The library file that holds the new version.
    pub file: String,
    /// The new version, as its manifest says.
    pub version: String,
}

impl Registry {
    /// Builds the registry from catalogs (later catalogs override earlier
    /// entries with the same id) and the enabled states from the config file.
    /// Catalog plugins are disabled unless the config enables them.
    pub fn new(catalogs: Vec<Vec<CatalogEntry>>, enabled: &BTreeMap<String, bool>) -> Self {
        let mut plugins: Vec<PluginEntry> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for entry in catalogs.into_iter().flatten() {
            let item = PluginEntry {
                enabled: enabled.get(&entry.id).copied().unwrap_or(false),
                id: entry.id.as_str().into(),
                name: entry.name.into(),
                loaded: false,
                parameters: entry.parameters.into(),
            };
            match index.get(&entry.id) {
                Some(&i) => plugins[i] = item,
                None => {
                    index.insert(entry.id, plugins.len());
                    plugins.push(item);
                }
            }
        }
        Self {
            entries: RwLock::new(RArc::new(RegistrySnapshot {
                version: 1,
                plugins: plugins.into(),
            })),
            toggle_lock: Mutex::new(()),
            manage_secrets: BTreeMap::new(),
            pending_restart: Mutex::new(BTreeMap::new()),
        }
    }

    /// The same registry with the config's `manage_secrets` grants.
    pub fn with_manage_secrets_grants(mut self, grants: &BTreeMap<String, bool>) -> Self {
        self.manage_secrets = grants.clone();
        self
    }

    /// The config's `manage_secrets` grants, by plugin id (entries that set
    /// it only; `plugins::scope` applies the default).
    pub(crate) fn manage_secrets_grants(&self) -> &BTreeMap<String, bool> {
        &self.manage_secrets
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> RArc<RegistrySnapshot> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a plugin with this id is known.
    pub fn contains(&self, id: &str) -> bool {
        self.snapshot().plugins.iter().any(|p| p.id == id)
    }

    /// Adds a loaded plugin's manifest. A loaded plugin replaces a catalog
    /// entry with the same id; it is enabled unless the config disables it.
    /// Fails when another loaded plugin already has the id.
    pub fn add_loaded(
        &self,
        manifest: &PluginManifest,
        enabled: &BTreeMap<String, bool>,
    ) -> Result<(), DuplicateId> {
        self.modify(|plugins| {
            let item = PluginEntry {
                id: manifest.id.clone(),
                name: manifest.name.clone(),
                enabled: enabled.get(manifest.id.as_str()).copied().unwrap_or(true),
                loaded: true,
                parameters: manifest.parameters.clone(),
            };
            match plugins.iter_mut().find(|p| p.id == manifest.id) {
                Some(existing) if existing.loaded => Err(DuplicateId(manifest.id.to_string())),
                Some(existing) => {
                    *existing = item;
                    Ok(())
                }
                None => {
                    plugins.push(item);
                    Ok(())
                }
            }
        })
    }

    /// Records that the library of the loaded plugin `id` was replaced by
    /// `pending` while the host runs (`plugins::watch`).
    pub(crate) fn mark_pending_restart(&self, id: &str, pending: PendingRestart) {
        self.pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), pending);
    }

    /// The new version of the loaded plugin `id` that waits for a restart.
    pub fn pending_restart(&self, id: &str) -> Option<PendingRestart> {
        self.pending_restart
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Removes a loaded plugin again (used when its `init` fails).
    pub fn remove_loaded(&self, id: &str) {
        let _ = self.modify(|plugins| {
            plugins.retain(|p| !(p.loaded && p.id == id));
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Sets a plugin's enabled state after `persist` succeeded. Returns
    /// `Ok(None)` when no plugin has the id (and `persist` is not called).
    pub fn set_enabled<E>(
        &self,
        id: &str,
        enabled: bool,
        persist: impl FnOnce() -> Result<(), E>,
    ) -> Result<Option<PluginEntry>, E> {
        let _guard = self.toggle_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.contains(id) {
            return Ok(None);
        }
        persist()?;
        let mut changed = None;
        let _ = self.modify(|plugins| {
            if let Some(p) = plugins.iter_mut().find(|p| p.id == id) {
                p.enabled = enabled;
                changed = Some(p.clone());
            }
            Ok::<(), std::convert::Infallible>(())
        });
        Ok(changed)
    }

    fn modify<E>(&self, f: impl FnOnce(&mut Vec<PluginEntry>) -> Result<(), E>) -> Result<(), E> {
        let mut guard = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let mut plugins: Vec<PluginEntry> = guard.plugins.to_vec();
        f(&mut plugins)?;
        *guard = RArc::new(RegistrySnapshot {
            version: guard.version + 1,
            plugins: RVec::from(plugins),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalog_parses_with_real_keys() {
        let entries = parse_catalog(DEFAULT_CATALOG, "built-in").expect("default catalog");
        assert!(entries.len() >= 12);
        let openai = entries
            .iter()
            .find(|e| e.id == "@elizaos/plugin-openai")
            .expect("openai");
        assert!(
            openai
                .parameters
                .iter()
                .any(|p| p.key == "OPENAI_API_KEY" && p.sensitive)
        );
    }

    #[test]
    fn nulls_and_missing_fields_are_tolerated() {
        let json = r#"{"plugins":[
            {"id":"custom","npmName":null,"pluginParameters":null},
            {"npmName":"@x/a","name":"A","pluginParameters":{"K":{"type":"string","sensitive":null}}}
        ]}"#;
        let e = parse_catalog(json, "t").expect("parses");
        assert_eq!(e[0].id, "custom");
        assert!(e[0].parameters.is_empty());
        assert!(!e[1].parameters[0].sensitive);
    }

    #[test]
    fn malformed_catalog_error_has_no_content() {
        let err = parse_catalog(r#"{"plugins": [{"npmName": 5, "x": "CANARY-VALUE"}]}"#, "t")
            .expect_err("invalid");
        assert!(!err.to_string().contains("CANARY"), "{err}");
        let err = parse_catalog("{nope", "t").expect_err("invalid");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn toggle_bumps_version_and_unknown_id_is_none() {
        let r = Registry::new(
            vec![parse_catalog(DEFAULT_CATALOG, "b").expect("catalog")],
            &BTreeMap::new(),
        );
        let v = r.snapshot().version;
        let changed = r
            .set_enabled("@elizaos/plugin-openai", true, || Ok::<(), ()>(()))
            .expect("ok")
            .expect("known");
        assert!(changed.enabled);
        assert!(r.snapshot().version > v);
        assert!(
            r.set_enabled("nope", true, || Err::<(), &str>("must not persist"))
                .expect("not called")
                .is_none()
        );
    }
}
