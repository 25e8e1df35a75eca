//! A machine shared with other users (issue 11, SPEC §11): StrictModes for
//! the config file, its folder, the plugin folder and its libraries, special
//! files at the config path, `plugin install` checking and copying the same
//! file, and log lines that a file name cannot forge. The cases that need a
//! file owned by another user run as root only (root can `chown`); as any
//! other user they print that they skipped.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use e2e_tests::{HostProcess, HostSpec, artifacts, client};
use serde_json::{Value, json};

use crate::get;

/// `nobody` on most systems: a user that is neither this one nor root.
const OTHER_UID: u32 = 65534;

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Whether this process may give files away (root); says so when not.
fn can_chown(what: &str) -> bool {
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    if me != 0 {
        eprintln!("SKIPPED ({what}): needs root to make a file owned by another user");
    }
    me == 0
}

/// Runs the host on `dir/milady.toml` and `dir/plugins` with `args`, and
/// expects it to stop on its own with an error (bounded: killed after 20 s,
/// which fails the test).
fn start_fails(dir: &Path, args: &[&str]) -> Result<String> {
    let a = artifacts()?;
    let mut child = Command::new(&a.host)
        .arg("--config")
        .arg(dir.join("milady.toml"))
        .arg("--plugins-dir")
        .arg(dir.join("plugins"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_NO_STRICT_MODES")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "the host did not stop (it hung or served): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "it started: {stdout}");
    assert!(!stdout.contains("listening on"), "it served: {stdout}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A folder holding a valid config file (0600) and an empty plugin folder.
fn config_folder() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("milady.toml");
    std::fs::write(
        &config,
        "[env]\nOPENAI_API_KEY = \"sk-original-0123456789abcdefwxyz\"\n",
    )?;
    chmod(&config, 0o600)?;
    std::fs::create_dir(dir.path().join("plugins"))?;
    Ok(dir)
}

/// A host serving `dir/milady.toml` and `dir/plugins`; killed when dropped.
struct Running {
    child: std::process::Child,
    base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Result<u16> {
        Ok(client().get(self.url(path)).send().await?.status().as_u16())
    }

    async fn put(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = client().put(self.url(path)).json(body).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a host on an existing folder (config and plugins kept), after
/// copying `plugins` into its plugin folder.
fn start_in(dir: &Path, plugins: &[(&Path, &str)], args: &[&str]) -> Result<Running> {
    for (source, name) in plugins {
        std::fs::copy(source, dir.join("plugins").join(name))?;
    }
    let mut cmd = Command::new(&artifacts()?.host);
    cmd.arg("--config")
        .arg(dir.join("milady.toml"))
        .arg("--plugins-dir")
        .arg(dir.join("plugins"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .env_remove("MILADY_NO_STRICT_MODES")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let launched = e2e_tests::spawn_listening(&mut cmd, Duration::from_secs(30))?;
    Ok(Running {
        child: launched.child,
        base: launched.base,
        log: launched.log,
    })
}

#[tokio::test]
async fn a_config_file_or_folder_others_can_write_stops_the_host_naming_the_fix() -> Result<()> {
    // The folder.
    let dir = config_folder()?;
    chmod(dir.path(), 0o777)?;
    let err = start_fails(dir.path(), &[])?;
    let folder = dir.path().display().to_string();
    assert!(err.contains(&format!("chmod go-w {folder}")), "{err}");
    assert!(err.contains("mode 0777"), "{err}");
    chmod(dir.path(), 0o700)?;

    // The file; left as it was (not silently tightened).
    let config = dir.path().join("milady.toml");
    let before = std::fs::read(&config)?;
    chmod(&config, 0o666)?;
    let err = start_fails(dir.path(), &[])?;
    assert!(
        err.contains(&format!("chmod go-w {}", config.display())),
        "{err}"
    );
    assert!(
        !err.contains("sk-original"),
        "no content in the error: {err}"
    );
    assert_eq!(std::fs::metadata(&config)?.mode() & 0o777, 0o666);
    assert_eq!(std::fs::read(&config)?, before);

    // The escape hatch starts it all the same.
    let h = start_in(dir.path(), &[], &["--no-strict-modes"])?;
    assert_eq!(h.get("/api/health").await?, 200);
    assert!(
        h.log().contains("--no-strict-modes"),
        "the hatch is said: {}",
        h.log()
    );
    drop(h);
    chmod(&config, 0o600)?;

    // Owned by another user.
    if can_chown("config owned by another user") {
        std::os::unix::fs::chown(&config, Some(OTHER_UID), None)?;
        let err = start_fails(dir.path(), &[])?;
        assert!(err.contains("owned by another user"), "{err}");
        assert!(err.contains(&config.display().to_string()), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn a_fifo_or_a_device_at_the_config_path_is_refused_without_hanging() -> Result<()> {
    let dir = config_folder()?;
    let config = dir.path().join("milady.toml");
    std::fs::remove_file(&config)?;
    let made = Command::new("mkfifo").arg(&config).status()?;
    assert!(made.success());
    for args in [&[][..], &["--no-strict-modes"][..]] {
        let err = start_fails(dir.path(), args)?;
        assert!(
            err.contains("FIFO") && err.contains(&config.display().to_string()),
            "{err}"
        );
    }
    std::fs::remove_file(&config)?;
    std::os::unix::fs::symlink("/dev/zero", &config)?;
    for args in [&[][..], &["--no-strict-modes"][..]] {
        let err = start_fails(dir.path(), args)?;
        assert!(err.contains("character device"), "{err}");
    }

    // Swapped in while the host runs: writes fail at once, with the write
    // lock released, and the host keeps serving.
    std::fs::remove_file(&config)?;
    std::fs::write(&config, "[env]\n")?;
    chmod(&config, 0o600)?;
    let h = start_in(
        dir.path(),
        &[(&artifacts()?.secrets, "libsecrets_plugin.so")],
        &[],
    )?;
    std::fs::remove_file(&config)?;
    assert!(Command::new("mkfifo").arg(&config).status()?.success());
    for _ in 0..2 {
        let (status, body) = h
            .put(
                "/api/secrets",
                &json!({"secrets": {"OPENAI_API_KEY": "sk-new-0123456789abcdefghijwxyz"}}),
            )
            .await?;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["code"], "storage_error");
        assert!(
            body["error"].as_str().unwrap_or_default().contains("FIFO"),
            "{body}"
        );
        let (status, body) = h
            .put(
                "/api/plugins/%40elizaos%2Fplugin-openai",
                &json!({"enabled": false}),
            )
            .await?;
        assert_eq!(status, 500, "{body}");
    }
    assert_eq!(h.get("/api/secrets").await?, 200);
    Ok(())
}

#[tokio::test]
async fn a_link_planted_by_another_user_is_not_followed() -> Result<()> {
    if !can_chown("a link owned by another user") {
        return Ok(());
    }
    // A file of this user's elsewhere, which the link points at.
    let elsewhere = tempfile::tempdir()?;
    let victim = elsewhere.path().join("victim.conf");
    std::fs::write(&victim, "# not the host's\n")?;
    chmod(&victim, 0o644)?;

    let dir = config_folder()?;
    let config = dir.path().join("milady.toml");
    let h = start_in(
        dir.path(),
        &[(&artifacts()?.secrets, "libsecrets_plugin.so")],
        &[],
    )?;
    // Another user replaces the config file by a link to the victim.
    std::fs::remove_file(&config)?;
    std::os::unix::fs::symlink(&victim, &config)?;
    std::os::unix::fs::lchown(&config, Some(OTHER_UID), None)?;
    let (status, body) = h
        .put(
            "/api/secrets",
            &json!({"secrets": {"OPENAI_API_KEY": "sk-new-0123456789abcdefghijwxyz"}}),
        )
        .await?;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not safe"),
        "{body}"
    );
    assert_eq!(std::fs::read_to_string(&victim)?, "# not the host's\n");
    assert_eq!(std::fs::metadata(&victim)?.mode() & 0o777, 0o644);
    drop(h);
    let err = start_fails(dir.path(), &[])?;
    assert!(
        err.contains("symbolic link") && err.contains("owned by another user"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn the_plugin_folder_and_its_libraries_follow_the_same_rules() -> Result<()> {
    let a = artifacts()?;
    let dir = config_folder()?;
    let plugins = dir.path().join("plugins");
    let hello = plugins.join("libhello_plugin.so");
    let secrets = (a.secrets.as_path(), "libsecrets_plugin.so");

    // A library others can write is skipped, with the fix; the rest serve.
    std::fs::copy(&a.hello, &hello)?;
    chmod(&hello, 0o666)?;
    let h = start_in(dir.path(), &[secrets], &[])?;
    assert_eq!(h.get("/api/secrets").await?, 200);
    assert_eq!(h.get("/api/hello").await?, 404);
    let skip = h
        .log()
        .lines()
        .find(|l| l.contains("plugin skipped") && l.contains("libhello_plugin.so"))
        .map(str::to_owned)
        .with_context(|| h.log())?;
    assert!(
        skip.contains(&format!("chmod go-w {}", hello.display())),
        "{skip}"
    );
    drop(h);

    // `plugin list` says so too, without running the library.
    let out = Command::new(&a.host)
        .arg("--plugins-dir")
        .arg(&plugins)
        .args(["plugin", "list", "--json"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    let entry = listed
        .iter()
        .find(|e| {
            e["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("libhello_plugin.so"))
        })
        .context("listed")?;
    assert_eq!(entry["loads"], false);
    assert!(
        entry["skipReason"]
            .as_str()
            .unwrap_or_default()
            .contains("chmod go-w"),
        "{entry}"
    );

    // The escape hatch loads it.
    let h = start_in(dir.path(), &[], &["--no-strict-modes"])?;
    assert_eq!(h.get("/api/hello").await?, 200, "{}", h.log());
    drop(h);
    chmod(&hello, 0o644)?;

    if can_chown("a library owned by another user") {
        std::os::unix::fs::chown(&hello, Some(OTHER_UID), None)?;
        let h = start_in(dir.path(), &[], &[])?;
        assert_eq!(h.get("/api/hello").await?, 404);
        assert!(h.log().contains("owned by another user"), "{}", h.log());
        drop(h);
        std::os::unix::fs::chown(&hello, Some(0), None)?;
    }

    // A plugin folder others can write stops the host.
    chmod(&plugins, 0o777)?;
    let err = start_fails(dir.path(), &[])?;
    assert!(
        err.contains(&format!("chmod go-w {}", plugins.display())),
        "{err}"
    );
    chmod(&plugins, 0o755)?;
    Ok(())
}

/// `demo-host --plugins-dir DIR plugin install NAME` run in `cwd` with
/// `LD_LIBRARY_PATH` set to `search`.
fn install_from(cwd: &Path, search: &Path, plugins: &Path, name: &str) -> Result<Output> {
    Ok(Command::new(&artifacts()?.host)
        .current_dir(cwd)
        .env("LD_LIBRARY_PATH", search)
        .env("NO_COLOR", "1")
        .arg("--plugins-dir")
        .arg(plugins)
        .args(["plugin", "install", name])
        .output()?)
}

#[tokio::test]
async fn plugin_install_checks_and_copies_the_same_file() -> Result<()> {
    let a = artifacts()?;
    let tmp = tempfile::tempdir()?;
    let (cwd, search) = (tmp.path().join("cwd"), tmp.path().join("search"));
    std::fs::create_dir(&cwd)?;
    std::fs::create_dir(&search)?;
    let plugins = tmp.path().join("plugins");
    let name = "libpick.so";

    // The file named is an incompatible library; a good one of the same
    // name lies on the loader's search path. The named file is checked, and
    // refused: nothing is installed.
    std::fs::copy(&a.incompatible, cwd.join(name))?;
    std::fs::copy(&a.hello, search.join(name))?;
    let out = install_from(&cwd, &search, &plugins, name)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "installed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("incompatible"), "{stderr}");
    assert!(!plugins.join(name).exists());

    // The other way round: the good one is named, a bad one on the path.
    std::fs::copy(&a.hello, cwd.join(name))?;
    std::fs::copy(&a.incompatible, search.join(name))?;
    // A set-uid, world-writable source.
    chmod(&cwd.join(name), 0o4777)?;
    let out = install_from(&cwd, &search, &plugins, name)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("@example/plugin-hello"), "{stdout}");
    let installed = plugins.join(name);
    assert_eq!(std::fs::read(&installed)?, std::fs::read(&a.hello)?);
    let meta = std::fs::metadata(&installed)?;
    assert_eq!(meta.mode() & 0o7777, 0o644, "installed 0644, never set-uid");
    assert_eq!(
        meta.uid(),
        std::fs::metadata(tmp.path())?.uid(),
        "owned by the installer"
    );
    Ok(())
}

#[tokio::test]
async fn a_file_name_cannot_forge_a_log_line_or_drive_the_terminal() -> Result<()> {
    // (No `/`: a file name cannot hold one.)
    let forged = "2026-01-01T00:00:00.000000Z  INFO demo_host: plugin loaded plugin=@forged-x";
    let name = format!("evil\n{forged}\u{1b}[2J\u{202e}.so");
    let mut spec = HostSpec::with_secrets()?;
    spec.plugin_files = vec![(name, b"not a library".to_vec())];
    let h = HostProcess::start(spec)?;
    let (status, _) = get(&h, "/api/health").await?;
    assert_eq!(status, 200);
    let log = h.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a forged line: {log}"
    );
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{202e}'),
        "{log:?}"
    );
    let skip = log
        .lines()
        .find(|l| l.contains("plugin skipped") && l.contains("evil"))
        .with_context(|| log.clone())?;
    assert!(skip.contains("evil\\n2026-01-01T00:00:00"), "{skip}");
    assert!(skip.contains("\\u{1b}[2J"), "{skip}");
    Ok(())
}
