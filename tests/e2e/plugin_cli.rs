//! `demo-host plugin install` and `demo-host plugin list` on good, junk,
//! truncated and incompatible files, and the example plugin of
//! `docs/writing-a-plugin.md` installed with the CLI and served by the host.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result};
use e2e_tests::{HostProcess, HostSpec, artifacts, library_file_name};
use serde_json::{Value, json};

use crate::{get, put};

/// Runs `demo-host --plugins-dir DIR <args>` and returns its output.
fn demo_host(plugins_dir: &Path, args: &[&str]) -> Result<Output> {
    let a = artifacts()?;
    Command::new(&a.host)
        .arg("--plugins-dir")
        .arg(plugins_dir)
        .args(args)
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .env_remove("MILADY_API_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .context("running demo-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn install(plugins_dir: &Path, file: &Path) -> Result<Output> {
    demo_host(
        plugins_dir,
        &["plugin", "install", file.to_str().context("a UTF-8 path")?],
    )
}

/// `plugin list --json`, keyed by file name.
fn list_json(plugins_dir: &Path) -> Result<Vec<Value>> {
    let out = demo_host(plugins_dir, &["plugin", "list", "--json"])?;
    assert!(out.status.success(), "list failed: {}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).context("list --json is JSON")?;
    Ok(listed.as_array().context("an array")?.clone())
}

fn entry<'a>(listed: &'a [Value], file_name: &str) -> &'a Value {
    listed
        .iter()
        .find(|e| {
            e["file"]
                .as_str()
                .is_some_and(|f| f.ends_with(&format!("/{file_name}")))
        })
        .unwrap_or_else(|| panic!("{file_name} is listed in {listed:#?}"))
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if dir.exists() {
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Bad files of every kind next to a temporary folder: (name, path).
fn bad_files(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let a = artifacts()?;
    let real = std::fs::read(&a.hello)?;
    let mut files = Vec::new();
    for (name, bytes) in e2e_tests::broken_libraries(&real) {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        files.push((name, path));
    }
    files.push(("incompatible.so", a.incompatible.clone()));
    Ok(files)
}

#[tokio::test]
async fn the_example_plugin_installs_lists_and_is_served_with_its_secret_redacted() -> Result<()> {
    let a = artifacts()?;
    let tmp = tempfile::tempdir()?;
    // A folder that does not exist yet: install creates it.
    let plugins = tmp.path().join("plugins");
    for lib in [&a.hello, &a.secrets] {
        let out = install(&plugins, lib)?;
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "install failed: {}",
            text(&out.stderr)
        );
        assert!(stdout.contains("installed"), "{stdout}");
        assert!(stdout.contains("restart"), "{stdout}");
    }
    let out = text(&install(&plugins, &a.hello)?.stdout);
    assert!(out.is_empty(), "a second install prints no success: {out}");
    assert_eq!(
        names(&plugins)?,
        vec!["libhello_plugin.so", "libsecrets_plugin.so"],
        "only the libraries, no temporary files"
    );
    assert_eq!(
        std::fs::read(plugins.join("libhello_plugin.so"))?,
        std::fs::read(&a.hello)?
    );

    let listed = list_json(&plugins)?;
    assert_eq!(listed.len(), 2);
    let hello = entry(&listed, "libhello_plugin.so");
    assert_eq!(hello["id"], "@example/plugin-hello");
    assert_eq!(hello["version"], "0.1.0");
    assert_eq!(hello["interface"], host_api::INTERFACE_VERSION);
    assert_eq!(hello["compatible"], true);
    assert_eq!(hello["loads"], true);
    assert_eq!(hello["routes"], json!(["/api/hello"]));

    let table = text(&demo_host(&plugins, &["plugin", "list"])?.stdout);
    assert!(table.contains("@example/plugin-hello") && table.contains("@milady/plugin-secrets"));
    assert_eq!(table.matches("loads").count(), 2, "{table}");

    // The host loads what was installed: the guide's plugin works.
    let spec = HostSpec {
        plugins_dir: Some(plugins.clone()),
        ..HostSpec::default()
    };
    let h = HostProcess::start(spec)?;
    let (status, body) = get(&h, "/api/hello").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["greeting"], "Hello from the hello plugin!", "{body}");
    assert_eq!(body["apiKeySet"], false, "{body}");
    // No change notice yet: what only the notices set is still empty.
    assert_eq!(body["liveChanges"]["notices"], 0, "{body}");
    let (status, doc) = get(&h, "/openapi.json").await?;
    assert_eq!(status, 200);
    assert!(doc.pointer("/paths/~1api~1hello/get").is_some(), "{doc}");

    let canary = "hello-CANARY-9f8e7d6c5b4a3210";
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"HELLO_API_KEY": canary}}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (_, body) = get(&h, "/api/hello").await?;
    assert_eq!(body["apiKeySet"], true);
    let (_, secrets) = get(&h, "/api/secrets").await?;
    let key = &secrets["secrets"]["HELLO_API_KEY"];
    assert_eq!(key["pluginId"], "@example/plugin-hello");
    assert_eq!(key["set"], true);
    assert!(!secrets.to_string().contains("CANARY"));
    assert!(!body.to_string().contains("CANARY"));
    assert!(!h.log().contains("CANARY"));
    Ok(())
}

#[test]
fn install_refuses_junk_truncated_and_incompatible_files_and_copies_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for (name, path) in bad_files(tmp.path())? {
        let out = install(&plugins, &path)?;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: {}", text(&out.stdout));
        let line = stderr
            .lines()
            .find(|l| l.starts_with("demo-host: error:"))
            .unwrap_or_else(|| panic!("{name}: one error line in {stderr}"));
        assert!(line.contains("not installed"), "{line}");
        assert!(line.contains("not a plugin this host can load"), "{line}");
        if name == "incompatible.so" {
            assert!(
                line.contains("host-api 0.2.0")
                    && line.contains(&format!("host-api {}", host_api::INTERFACE_VERSION)),
                "both versions: {line}"
            );
        }
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(names(&plugins)?.is_empty(), "{name}: nothing copied");
    }
    Ok(())
}

#[test]
fn install_refuses_an_id_already_installed_unless_replacing() -> Result<()> {
    let a = artifacts()?;
    let tmp = tempfile::tempdir()?;
    let plugins = tmp.path().join("plugins");
    assert!(install(&plugins, &a.hello)?.status.success());

    // The same plugin under another file name.
    let renamed = tmp.path().join(library_file_name("hello-again"));
    std::fs::copy(&a.hello, &renamed)?;
    let out = install(&plugins, &renamed)?;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`@example/plugin-hello` is already installed")
            && stderr.contains("libhello_plugin.so")
            && stderr.contains("--replace"),
        "{stderr}"
    );
    assert_eq!(names(&plugins)?, vec!["libhello_plugin.so"]);

    // An upgrade replaces the installed file in place.
    let out = demo_host(
        &plugins,
        &[
            "plugin",
            "install",
            "--replace",
            renamed.to_str().context("UTF-8")?,
        ],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("replaced"));
    assert_eq!(names(&plugins)?, vec!["libhello_plugin.so"]);

    // A file without the library extension gets it, so the host loads it.
    let bare = tmp.path().join("secrets-build");
    std::fs::copy(&a.secrets, &bare)?;
    assert!(install(&plugins, &bare)?.status.success());
    assert_eq!(
        names(&plugins)?,
        vec!["libhello_plugin.so", "secrets-build.so"]
    );
    Ok(())
}

#[test]
fn list_names_every_library_with_its_compatibility_and_skip_reason() -> Result<()> {
    let a = artifacts()?;
    let tmp = tempfile::tempdir()?;
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let missing = tmp.path().join("missing");
    let empty = text(&demo_host(&missing, &["plugin", "list"])?.stdout);
    assert!(empty.contains("no *.so libraries"), "{empty}");

    for (name, path) in bad_files(tmp.path())? {
        std::fs::copy(&path, plugins.join(name))?;
    }
    std::fs::copy(&a.hello, plugins.join("a-hello.so"))?;
    // The same id again, loaded second by name: the host would skip it.
    std::fs::copy(&a.hello, plugins.join("b-hello-copy.so"))?;
    std::fs::write(plugins.join("notes.txt"), "not a library name")?;

    let listed = list_json(&plugins)?;
    // The broken files, the incompatible one and two copies of hello.
    let expected = e2e_tests::BROKEN_LIBRARIES.len() + 3;
    assert_eq!(
        listed.len(),
        expected,
        "every library, no other file: {listed:#?}"
    );
    let good = entry(&listed, "a-hello.so");
    assert_eq!(good["loads"], true);
    assert_eq!(good["compatible"], true);
    assert_eq!(good["skipReason"], Value::Null);

    let copy = entry(&listed, "b-hello-copy.so");
    assert_eq!(copy["loads"], false);
    assert_eq!(copy["compatible"], true);
    let reason = copy["skipReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("already installed") && reason.contains("a-hello.so"),
        "{reason}"
    );

    let incompatible = entry(&listed, "incompatible.so");
    assert_eq!(incompatible["loads"], false);
    assert_eq!(incompatible["compatible"], false);
    assert_eq!(incompatible["interface"], "0.2.0");
    assert!(
        incompatible["skipReason"]
            .as_str()
            .is_some_and(|r| r.contains("host-api 0.2.0")
                && r.contains(&format!("host-api {}", host_api::INTERFACE_VERSION)))
    );

    for name in e2e_tests::BROKEN_LIBRARIES {
        let e = entry(&listed, name);
        assert_eq!(e["loads"], false, "{name}");
        assert_eq!(e["compatible"], Value::Null, "{name}: not a plugin");
        let reason = e["skipReason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("not a loadable shared library") || reason.contains("truncated"),
            "{name}: {reason}"
        );
    }

    let out = demo_host(&plugins, &["plugin", "list"])?;
    assert!(out.status.success());
    let table = text(&out.stdout);
    for file in [
        "a-hello.so",
        "b-hello-copy.so",
        "incompatible.so",
        "trunc-half.so",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(file))
            .unwrap_or_else(|| panic!("{file} has a row in\n{table}"));
        let expected = if file == "a-hello.so" {
            "loads"
        } else {
            "skipped:"
        };
        assert!(row.contains(expected), "{row}");
    }
    assert!(table.contains("incompatible") && table.contains("not a plugin"));
    assert!(!table.contains("notes.txt"));
    Ok(())
}
