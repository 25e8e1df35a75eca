//! The committed OpenAPI document must match what the host serves.

use anyhow::Result;
use e2e_tests::{HostProcess, HostSpec, client, workspace_root};

#[tokio::test]
async fn committed_document_matches_the_served_one() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let served: serde_json::Value = client()
        .get(h.url("/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    for path in ["/api/secrets", "/api/plugins", "/api/plugins/{id}"] {
        assert!(served["paths"][path].is_object(), "{path} missing");
    }
    let rendered = serde_json::to_string_pretty(&served)? + "\n";
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
