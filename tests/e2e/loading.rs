//! Plugin loading: good, bad and hostile libraries in the plugin folder.

use std::time::Duration;

use anyhow::Result;
use e2e_tests::{HostProcess, HostSpec, artifacts};

use crate::get;

#[tokio::test]
async fn bad_libraries_are_skipped_with_one_line_each_and_the_host_serves_the_rest() -> Result<()> {
    let a = artifacts()?;
    let real = std::fs::read(&a.secrets)?;
    let mut spec = HostSpec::with_secrets()?
        .plugin(&a.incompatible, "incompatible.so")
        .plugin(&a.panicking, "panicking.so");
    let broken = e2e_tests::broken_libraries(&real);
    spec.plugin_files = broken
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.clone()))
        .chain([(
            "notes.txt".to_owned(),
            b"ignored: not a library name".to_vec(),
        )])
        .collect();
    let h = HostProcess::start(spec)?;
    let (status, body) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    assert!(body["secrets"]["OPENAI_API_KEY"].is_object());
    let log = h.log();
    for file in e2e_tests::BROKEN_LIBRARIES
        .into_iter()
        .chain(["incompatible.so"])
    {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("plugin skipped") && l.contains(file))
            .collect();
        assert_eq!(lines.len(), 1, "{file}: expected one skip line in\n{log}");
    }
    let incompatible = log
        .lines()
        .find(|l| l.contains("incompatible.so"))
        .unwrap_or_default();
    assert!(
        incompatible.contains("host-api 0.2.0")
            && incompatible.contains(&format!("host-api {}", host_api::INTERFACE_VERSION)),
        "both versions named: {incompatible}"
    );
    assert!(!log.contains("notes.txt"));
    assert!(log.contains("plugin loaded") && log.contains("@fixtures/panicking"));
    Ok(())
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_json_error_and_the_host_stays_up() -> Result<()> {
    let a = artifacts()?;
    let mut h = HostProcess::start(HostSpec::with_secrets()?.plugin(&a.panicking, "panicking.so"))?;
    for path in ["/api/panic/now", "/api/panic/later", "/api/panic/now"] {
        let (status, body) = get(&h, path).await?;
        assert_eq!(status, 500, "{path}");
        assert_eq!(body["code"], "plugin_panicked");
        assert!(body["error"].is_string());
    }
    let (status, _) = get(&h, "/api/panic/fine").await?;
    assert_eq!(status, 200);
    let (status, _) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    assert!(h.is_running());
    Ok(())
}

#[tokio::test]
async fn init_failure_and_init_panic_refuse_only_that_plugin() -> Result<()> {
    let a = artifacts()?;
    for mode in ["init-fail", "init-panic"] {
        let h = HostProcess::start(
            HostSpec::with_secrets()?
                .plugin(&a.panicking, "panicking.so")
                .env("PANICKING_PLUGIN_MODE", mode),
        )?;
        let (status, _) = get(&h, "/api/secrets").await?;
        assert_eq!(status, 200, "{mode}");
        let (status, body) = get(&h, "/api/panic/fine").await?;
        assert_eq!(status, 404, "{mode}: the refused plugin serves nothing");
        assert_eq!(body["code"], "not_found");
        let log = h.log();
        let line = log
            .lines()
            .find(|l| l.contains("plugin skipped") && l.contains("panicking.so"))
            .unwrap_or_default();
        assert!(
            line.contains("@fixtures/panicking") && line.contains("init"),
            "{mode}: {line}"
        );
        // The registry no longer lists it.
        let (_, plugins) = get(&h, "/api/plugins").await?;
        let listed = plugins["plugins"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == "@fixtures/panicking"));
        assert!(!listed, "{mode}");
    }
    Ok(())
}

#[tokio::test]
async fn two_plugins_claiming_the_same_route_keep_the_first() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .plugin(&a.panicking, "a-panicking.so")
            .plugin(&a.panicking, "b-panicking-copy.so"),
    )?;
    assert!(h.wait_for_log("b-panicking-copy.so", Duration::from_secs(5)));
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("plugin skipped") && l.contains("b-panicking-copy.so"))
        .unwrap_or_default();
    assert!(
        line.contains("collides") || line.contains("already"),
        "{line}"
    );
    let (status, _) = get(&h, "/api/panic/fine").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn a_missing_plugin_folder_is_an_empty_one() -> Result<()> {
    let h = HostProcess::start(HostSpec {
        plugins_dir: Some("/nonexistent/plugins/folder".into()),
        ..HostSpec::default()
    })?;
    let (status, _) = get(&h, "/api/plugins").await?;
    assert_eq!(status, 200);
    let (status, _) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn a_plugin_built_against_the_older_compatible_interface_still_loads() -> Result<()> {
    let a = artifacts()?;
    let mut h = HostProcess::start(HostSpec::with_secrets()?.plugin(&a.old_interface, "old.so"))?;
    let (status, body) = get(&h, "/api/old").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["built_against"], "host-api 0.1.0");
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("plugin loaded") && l.contains("old.so"))
        .unwrap_or_default();
    assert!(line.contains("interface=0.1.0"), "{line}");
    // Its root module has no `shutdown` (added in 0.1.1): skipped, no crash.
    let status = h.terminate()?;
    assert!(status.success(), "{status:?}\n{}", h.log());
    assert!(h.log().contains("plugin predates the shutdown entry point"));
    Ok(())
}

#[tokio::test]
async fn a_plugin_built_against_interface_0_1_1_still_loads_and_serves_scoped() -> Result<()> {
    let a = artifacts()?;
    let mut h = HostProcess::start(
        HostSpec::with_secrets()?
            .plugin(&a.old_interface_0_1_1, "old-0-1-1.so")
            .env("OPENAI_API_KEY", "sk-not-for-the-old-plugin-1234")
            .env("OLD_0_1_1_API_KEY", "its-own-value"),
    )?;
    let (status, body) = get(&h, "/api/old-0-1-1").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["built_against"], "host-api 0.1.1");
    // Its 0.1.1 `HostContext` is scoped too: its own key, not another's.
    assert_eq!(body["own_key_set"], true, "{body}");
    assert_eq!(body["openai_key_visible"], false, "{body}");
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("plugin loaded") && l.contains("old-0-1-1.so"))
        .unwrap_or_default();
    assert!(line.contains("interface=0.1.1"), "{line}");
    // The secrets plugin still sees (and manages) every key beside it.
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(secrets["secrets"]["OPENAI_API_KEY"]["set"], true);
    assert_eq!(secrets["secrets"]["OLD_0_1_1_API_KEY"]["set"], true);
    // It has `shutdown` (0.1.1), which runs.
    let status = h.terminate()?;
    assert!(status.success(), "{status:?}\n{}", h.log());
    assert!(h.log().contains("0.1.1 fixture shut down"));
    Ok(())
}
