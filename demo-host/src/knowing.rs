//! Start-up of "knowing your secrets" (SPEC §8): the fingerprint key every
//! fingerprint is made under, and the audit log every change is written
//! to, both set up before anything can change.

use std::{collections::BTreeMap, sync::Arc};

use host_api::EnvChange;

use crate::{
    app::{HostOptions, StartupError},
    env::{fingerprint::Fingerprinter, runtime::RuntimeEnv},
    store::{audit::AuditLog, fingerprint_key, secrets_key::SecretsKey},
};

/// The warnings about writing `changes` (SPEC §8), key → message: the
/// provider shape of each value set (`provider_shapes`), and precedence: a
/// key the process environment sets is used from the process again after
/// a restart, whatever is stored now. Never a refusal, never a value.
pub(crate) fn value_warnings(env: &RuntimeEnv, changes: &[EnvChange]) -> BTreeMap<String, String> {
    let shapes = crate::provider_shapes::current();
    let snapshot = env.snapshot();
    let mut warnings = BTreeMap::new();
    for change in changes {
        let key = change.key();
        let mut said = Vec::new();
        if let Some(value) = change.value()
            && let Some(shape) = shapes.warning(key, value)
        {
            said.push(shape);
        }
        let from_process = snapshot
            .get(key)
            .is_some_and(|v| v.source == host_api::EnvSource::Process)
            || env.provenance(key).overridden_by_process;
        if from_process {
            said.push(format!(
                "the host's process environment sets `{key}`: the process's value is used again \
                 after a restart, over the value {} now (the Milady rule: process environment \
                 first)",
                if change.value().is_some() {
                    "stored"
                } else {
                    "cleared"
                }
            ));
        }
        if !said.is_empty() {
            warnings.insert(key.to_owned(), said.join(" "));
        }
    }
    warnings
}

/// Makes the fingerprint key kept with `secrets` (created on first use)
/// the key of this process's fingerprints. When it cannot be read or
/// created, fingerprints fall back to a random key of this process (they
/// then differ after a restart), and the log says why.
pub(crate) fn install_fingerprint_key(secrets: &SecretsKey) {
    let path = fingerprint_key::file_for(
        secrets,
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    );
    match fingerprint_key::load_or_create(&path) {
        Ok(key) => Fingerprinter::with_key(key.bytes()).install(),
        Err(e) => tracing::error!(
            error = %e,
            "no fingerprint key: fingerprints will differ after a restart"
        ),
    }
}

/// The host's audit log, checked writable (`None` when `options` turn
/// auditing off). A log that cannot be written stops start-up.
pub(crate) fn open_audit_log(options: &HostOptions) -> Result<Option<Arc<AuditLog>>, StartupError> {
    if !options.audit {
        return Ok(None);
    }
    let log = AuditLog::open_for(&options.config_path, options.audit_log.as_deref());
    // A missing folder is made (0700) as the config store makes its own;
    // one that vanishes later fails every change instead.
    if let Some(folder) = log.path().parent()
        && !folder.as_os_str().is_empty()
        && !folder.exists()
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|source| StartupError::AuditLog {
                path: log.path().to_owned(),
                source,
            })?;
    }
    if let Err(crate::store::audit::AuditError::Io { path, source, .. }) = log.check_writable() {
        return Err(StartupError::AuditLog { path, source });
    }
    Ok(Some(log))
}

/// The text of the fingerprint key kept with `secrets` (created first when
/// there is none), as `demo-host secrets export-fingerprint-key` prints it.
pub fn export_fingerprint_key(
    secrets: &SecretsKey,
) -> Result<zeroize::Zeroizing<String>, fingerprint_key::FingerprintKeyError> {
    let path = fingerprint_key::file_for(
        secrets,
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    );
    Ok(fingerprint_key::load_or_create(&path)?.file_text())
}

/// Installs an exported fingerprint key `text` as the key kept with
/// `secrets`; the key file, and whether a different key was replaced.
pub fn import_fingerprint_key(
    secrets: &SecretsKey,
    text: &str,
) -> Result<(std::path::PathBuf, bool), fingerprint_key::FingerprintKeyError> {
    let path = fingerprint_key::file_for(
        secrets,
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    );
    let replaced = fingerprint_key::install(&path, text)?;
    Ok((path, replaced))
}
