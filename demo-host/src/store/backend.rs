//! The store seam: where the secrets of `[env]` live (SPEC §9).
//!
//! `[store] backend = "file"` (the default) keeps them in the config file's
//! `[env]` table (`config_file`); `backend = "openbao"` keeps them in one
//! KV v2 secret of an OpenBao or Vault server (`kv`), shared by a fleet of
//! hosts. The choice is read once at start-up; the runtime environment
//! (`env::runtime`) writes through the one it is given.

use std::{collections::BTreeMap, path::Path, time::Duration};

use crate::store::kv::{ADDR_VARS, KvSettings};

/// Which store holds the secrets.
#[derive(Debug)]
pub(crate) enum StoreBackend {
    /// The config file's `[env]` table.
    File,
    /// One KV v2 secret of an OpenBao / Vault server.
    OpenBao(KvSettings),
}

/// Why `[store]` cannot be used. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The config file.
        path: String,
        /// Why.
        reason: String,
    },
    /// `[store]` has a value of the wrong shape or an unknown backend.
    #[error("[store] {0}")]
    Invalid(String),
    /// `backend = "openbao"` without a token in the process environment.
    #[error("[store] backend = \"openbao\" needs a token in BAO_TOKEN or VAULT_TOKEN")]
    NoToken,
    /// `backend = "openbao"` without an address.
    #[error("[store] backend = \"openbao\" needs `address` (or BAO_ADDR / VAULT_ADDR)")]
    NoAddress,
}

/// The longest config file read for `[store]`.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads `[store]` of the config file at `path` (absent file or table: the
/// file store).
pub(crate) fn read_store_backend(
    path: &Path,
    process: &BTreeMap<String, String>,
) -> Result<StoreBackend, StoreConfigError> {
    let text = match crate::store::file_safety::read_bounded(path, MAX_CONFIG_BYTES) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoreBackend::File),
        Err(e) => {
            return Err(StoreConfigError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    store_backend(&text, process)
}

/// `[store]` of a config text, with the token and default address from the
/// process environment.
pub(crate) fn store_backend(
    config_text: &str,
    process: &BTreeMap<String, String>,
) -> Result<StoreBackend, StoreConfigError> {
    let doc: toml_edit::DocumentMut = config_text
        .parse()
        .map_err(|_| StoreConfigError::Invalid("the config file is not valid TOML".into()))?;
    let Some(table) = doc.get("store").and_then(|t| t.as_table_like()) else {
        return Ok(StoreBackend::File);
    };
    let text = |key: &str| -> Result<Option<String>, StoreConfigError> {
        match table.get(key) {
            None => Ok(None),
            Some(item) => item
                .as_str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| StoreConfigError::Invalid(format!("`{key}` must be a string"))),
        }
    };
    match text("backend")?.as_deref() {
        None | Some("file") => return Ok(StoreBackend::File),
        Some("openbao" | "vault") => {}
        Some(other) => {
            return Err(StoreConfigError::Invalid(format!(
                "unknown backend {other:?} (\"file\" or \"openbao\")"
            )));
        }
    }
    if table.get("token").is_some() {
        return Err(StoreConfigError::Invalid(
            "`token` is never read from the file: set BAO_TOKEN or VAULT_TOKEN".into(),
        ));
    }
    let mut addresses: Vec<String> = match table.get("address") {
        None => Vec::new(),
        Some(item) => {
            if let Some(one) = item.as_str() {
                vec![one.to_owned()]
            } else if let Some(list) = item.as_array() {
                list.iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            StoreConfigError::Invalid("`address` entries must be strings".into())
                        })
                    })
                    .collect::<Result<_, _>>()?
            } else {
                return Err(StoreConfigError::Invalid(
                    "`address` must be a string or a list of strings".into(),
                ));
            }
        }
    };
    if addresses.is_empty() {
        addresses.extend(
            ADDR_VARS
                .iter()
                .find_map(|k| process.get(*k).filter(|v| !v.is_empty()).cloned()),
        );
    }
    if addresses.is_empty() {
        return Err(StoreConfigError::NoAddress);
    }
    let token = KvSettings::token_from(process).ok_or(StoreConfigError::NoToken)?;
    let mount = text("mount")?.unwrap_or_else(|| "secret".into());
    let path = text("path")?.unwrap_or_else(|| "milady".into());
    let mut settings = KvSettings::new(addresses, &mount, &path, token);
    settings.ca_file = text("ca_file")?.map(Into::into);
    if let Some(ms) = table.get("timeout_ms") {
        let ms = ms
            .as_integer()
            .filter(|ms| (50..=60_000).contains(ms))
            .ok_or_else(|| StoreConfigError::Invalid("`timeout_ms` must be 50..=60000".into()))?;
        settings.timeout = Duration::from_millis(ms.unsigned_abs());
    }
    Ok(StoreBackend::OpenBao(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_store_table_is_the_file_store() -> Result<(), StoreConfigError> {
        assert!(matches!(
            store_backend("[env]\nA = \"1\"\n", &env(&[]))?,
            StoreBackend::File
        ));
        assert!(matches!(
            store_backend("[store]\nbackend = \"file\"\n", &env(&[]))?,
            StoreBackend::File
        ));
        Ok(())
    }

    #[test]
    fn openbao_reads_addresses_and_defaults() -> Result<(), StoreConfigError> {
        let text = "[store]\nbackend = \"openbao\"\naddress = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2/\"]\n";
        let StoreBackend::OpenBao(s) = store_backend(text, &env(&[("VAULT_TOKEN", "t")]))? else {
            panic!("not openbao");
        };
        assert_eq!(s.addresses, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!((s.mount.as_str(), s.path.as_str()), ("secret", "milady"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("\"t\""), "{shown}");
        Ok(())
    }

    #[test]
    fn address_from_the_environment_and_token_required() -> Result<(), StoreConfigError> {
        let text = "[store]\nbackend = \"openbao\"\n";
        let StoreBackend::OpenBao(s) = store_backend(
            text,
            &env(&[("BAO_ADDR", "http://a:1"), ("BAO_TOKEN", "secret-token-1")]),
        )?
        else {
            panic!("not openbao");
        };
        assert_eq!(s.addresses, ["http://a:1"]);
        assert!(!format!("{s:?}").contains("secret-token-1"));
        assert!(matches!(
            store_backend(text, &env(&[("BAO_ADDR", "http://a:1")])),
            Err(StoreConfigError::NoToken)
        ));
        assert!(matches!(
            store_backend(text, &env(&[("BAO_TOKEN", "x")])),
            Err(StoreConfigError::NoAddress)
        ));
        assert!(matches!(
            store_backend(
                "[store]\nbackend = \"openbao\"\ntoken = \"x\"\n",
                &env(&[("BAO_TOKEN", "x"), ("BAO_ADDR", "http://a")])
            ),
            Err(StoreConfigError::Invalid(_))
        ));
        Ok(())
    }
}
