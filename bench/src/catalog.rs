//! The plugin catalogs the hosts are given, and the secrets they declare.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// A catalog and its sensitive keys.
pub(crate) struct Catalog {
    pub(crate) path: PathBuf,
    /// How the report names it.
    pub(crate) label: String,
    pub(crate) keys: Vec<String>,
}

/// Milady's real catalog when present, else a generated one of similar size.
pub(crate) fn main_catalog(work: &Path) -> Result<Catalog> {
    if let Some(path) = e2e_tests::milady_catalog() {
        let keys = sensitive_keys(&path)?;
        let label = format!("Milady's catalog ({} sensitive keys)", keys.len());
        return Ok(Catalog { path, label, keys });
    }
    let path = work.join("generated-104.json");
    e2e_tests::write_catalog(&path, 104, 1)?;
    let keys = sensitive_keys(&path)?;
    Ok(Catalog {
        path,
        label: format!(
            "a generated catalog of 104 plugins, {} sensitive keys (Milady's catalog is absent)",
            keys.len()
        ),
        keys,
    })
}

/// Every key some plugin of the catalog declares as sensitive, sorted.
pub(crate) fn sensitive_keys(path: &Path) -> Result<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let mut keys = std::collections::BTreeSet::new();
    for plugin in doc["plugins"].as_array().context("no plugins array")? {
        if let Some(params) = plugin["pluginParameters"].as_object() {
            for (key, spec) in params {
                if spec["sensitive"].as_bool() == Some(true) {
                    keys.insert(key.clone());
                }
            }
        }
    }
    Ok(keys.into_iter().collect())
}
