//! The committed OpenAPI document must match the one the host builds. In
//! process: the host is assembled (with the real secrets plugin library
//! loaded from a temporary plugin folder) without spawning the binary; the
//! document it builds is the one `/openapi.json` serves.

use anyhow::Result;
use e2e_tests::{artifacts, library_file_name, workspace_root};

#[test]
fn committed_document_matches_the_built_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins)?;
    std::fs::copy(
        &artifacts()?.secrets,
        plugins.join(library_file_name("secrets_plugin")),
    )?;
    let mut options = demo_host::HostOptions::new(dir.path().join("milady.toml"));
    options.plugins_dir = Some(plugins);
    options.secrets_key = demo_host::SecretsKey::File(dir.path().join("key").join("secrets.key"));
    let host = demo_host::Host::build(options, Vec::new())?;
    assert!(host.skipped.is_empty(), "{:?}", host.skipped);
    let built = &host.openapi;
    for path in [
        "/api/secrets",
        "/api/plugins",
        "/api/plugins/{id}",
        "/secrets",
    ] {
        assert!(built["paths"][path].is_object(), "{path} missing");
    }
    let rendered = serde_json::to_string_pretty(built)? + "\n";
    let committed_path = workspace_root().join("openapi/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &rendered)?;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == rendered,
        "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p e2e-tests openapi` and commit it"
    );
    Ok(())
}
