//! The crash-safety check of `demo-host secrets rotate-key`: values written
//! encrypted by the real host, then the real command killed with SIGKILL at
//! a random moment of its run, many times over. After every kill the
//! config parses, is mode 0600, keeps the hand-written parts, and every
//! value opens with the key file (and the `.next` key an unfinished
//! rotation leaves beside it) to exactly what was written: the key files
//! and the config never disagree. Now and then the real host starts on
//! what the kill left and must report every key set; at the end a full
//! rotation leaves one key that opens everything alone.

use std::{
    collections::BTreeMap,
    fmt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::child_host::{ChildHost, Rng, plugin_folder};
use super::crash_check::{PREAMBLE, read_checked};

/// Keys written before the rotations.
const KEYS: usize = 8;
/// Every this many kills, the host is started on what the kill left.
const HOST_EVERY: usize = 10;

/// How to run the check.
pub(crate) struct Settings {
    /// Kills of a running rotation.
    pub iterations: usize,
    /// Seed of the kill delays.
    pub seed: u64,
}

/// Where a kill left the rotation (see [`Report`]).
#[derive(Clone, Copy)]
enum State {
    /// Nothing changed yet: the old key alone, the config under it.
    NotStarted,
    /// The next key written beside the old one; the config still under
    /// the old key.
    NextKeyWritten,
    /// The config rewritten under the next key; the old key not yet
    /// replaced.
    ConfigRotated,
    /// The rotation finished: one new key.
    Finished,
}

/// What a run saw.
pub(crate) struct Report {
    /// Kills, every one checked.
    pub iterations: usize,
    /// How many kills left each [`State`], in its order.
    pub states: [usize; 4],
    /// Times the host was started on what a kill left, every key set.
    pub host_starts: usize,
    /// How long one whole rotation took (kill delays are drawn up to 1.5×).
    pub rotation: Duration,
    /// Seed used.
    pub seed: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [not_started, next_key, rotated, finished] = self.states;
        write!(
            f,
            "rotate-key crash-safety: {} SIGKILLs during `secrets rotate-key` (one rotation: \
             {:.1} ms), every value readable with the key files after each: PASS; the kill left: \
             nothing changed {not_started}, next key written {next_key}, config rotated and key \
             not yet switched {rotated}, rotation finished {finished}; host started {} times on \
             what a kill left, every key set; seed {:#x}; {:.1} s",
            self.iterations,
            self.rotation.as_secs_f64() * 1000.0,
            self.host_starts,
            self.seed,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs the check; the first broken property is an error naming the
/// iteration.
pub(crate) async fn run(settings: &Settings) -> Result<Report> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let plugins = plugin_folder(dir.path())?;
    let catalog = dir.path().join("catalog.json");
    e2e_tests::write_catalog(&catalog, 1, KEYS)?;
    let config = dir.path().join("config").join("milady.toml");
    std::fs::create_dir_all(config.parent().context("config folder")?)?;
    std::fs::write(&config, PREAMBLE)?;
    set_mode(&config, 0o600)?;
    let log = dir.path().join("host.log");
    let home = e2e_tests::TempHome::new()?;
    let key = home.key_file();

    // The values, written encrypted by the real host.
    let expected: BTreeMap<String, String> = (0..KEYS)
        .map(|i| {
            (
                format!("P0_KEY_{i}"),
                format!("rotate-value-{i}-{}", "x".repeat(i * 7)),
            )
        })
        .collect();
    let mut host = ChildHost::start(
        &config,
        &plugins,
        std::slice::from_ref(&catalog),
        &log,
        &home,
    )?;
    let resp = reqwest::Client::new()
        .put(host.url("/api/secrets"))
        .json(&serde_json::json!({ "secrets": &expected }))
        .send()
        .await?;
    ensure!(resp.status() == 200, "PUT answered {}", resp.status());
    host.terminate()?;
    check_values(&config, &key, &expected).context("after the PUT")?;

    // One whole rotation, timed: kills are spread over 1.5 times it.
    let timer = Instant::now();
    let out = rotate(&config, &home).output()?;
    ensure!(
        out.status.success(),
        "rotate-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotation = timer.elapsed();
    check_values(&config, &key, &expected).context("after a whole rotation")?;

    let mut rng = Rng::new(settings.seed);
    let mut report = Report {
        iterations: 0,
        states: [0; 4],
        host_starts: 0,
        rotation,
        seed: settings.seed,
        elapsed: Duration::ZERO,
    };
    let max_us = (rotation.as_micros() as u64).saturating_mul(3) / 2;
    for iteration in 0..settings.iterations {
        let key_before = std::fs::read(&key)?;
        let mut child = rotate(&config, &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_micros(rng.below(max_us.max(1) + 1)));
        let _ = child.kill();
        let _ = child.wait();

        let state = (|| -> Result<State> {
            check_values(&config, &key, &expected)?;
            state_of(dir.path(), &config, &key, &key_before)
        })()
        .with_context(|| format!("iteration {iteration}"))?;
        report.states[state as usize] += 1;

        if iteration % HOST_EVERY == HOST_EVERY - 1 {
            host_sees_every_key(&config, &plugins, &catalog, &log, &home, &expected)
                .await
                .with_context(|| format!("iteration {iteration}: host start"))?;
            report.host_starts += 1;
        }
        report.iterations += 1;
    }

    // The last run finishes whatever the kills left: one key opens all.
    let out = rotate(&config, &home).output()?;
    ensure!(
        out.status.success(),
        "the final rotate-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !next_key(&key).exists(),
        "a finished rotation left the next key"
    );
    ensure!(
        opens_with_key_alone(dir.path(), &config, &key)?,
        "after a finished rotation the key does not open every value"
    );
    check_values(&config, &key, &expected).context("after the final rotation")?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// `demo-host --config <config> secrets rotate-key` in `home`.
fn rotate(config: &Path, home: &e2e_tests::TempHome) -> Command {
    let mut cmd = Command::new(
        e2e_tests::artifacts()
            .map(|a| a.host.clone())
            .unwrap_or_default(),
    );
    cmd.arg("--config")
        .arg(config)
        .args(["secrets", "rotate-key"])
        .env_remove("MILADY_CONFIG_PATH")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    home.apply(&mut cmd);
    cmd
}

/// The next key of an unfinished rotation.
fn next_key(key: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.next", key.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    Ok(std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode),
    )?)
}

/// The config is whole and every value opens (with the key, or the next
/// key) to what was written; the key files are owner-only.
fn check_values(config: &Path, key: &Path, expected: &BTreeMap<String, String>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let found = read_checked(config, key)?;
    ensure!(
        &found == expected,
        "the values changed: {} of {} keys as written",
        found
            .iter()
            .filter(|(k, v)| expected.get(*k) == Some(v))
            .count(),
        expected.len()
    );
    for file in [key.to_owned(), next_key(key)] {
        match std::fs::metadata(&file) {
            Ok(meta) => ensure!(
                meta.permissions().mode() & 0o777 == 0o600,
                "{} has mode {:o}",
                file.display(),
                meta.permissions().mode() & 0o777
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file != key => {}
            Err(e) => bail!("{}: {e}", file.display()),
        }
    }
    Ok(())
}

/// Whether the key file alone (without a next key) opens every value.
fn opens_with_key_alone(scratch: &Path, config: &Path, key: &Path) -> Result<bool> {
    // A copy of the key with no `.next` beside it.
    let alone = scratch.join("key-alone");
    std::fs::copy(key, &alone)?;
    let opened = e2e_tests::stored_env(config, &alone)?;
    Ok(opened
        .values()
        .all(|v| matches!(v, e2e_tests::Stored::Encrypted(_))))
}

/// Where the kill left the rotation.
fn state_of(scratch: &Path, config: &Path, key: &Path, key_before: &[u8]) -> Result<State> {
    let switched = std::fs::read(key)? != key_before;
    Ok(match (next_key(key).exists(), switched) {
        (false, false) => State::NotStarted,
        (false, true) => State::Finished,
        (true, true) => bail!("the key was switched while the next key is still there"),
        (true, false) if opens_with_key_alone(scratch, config, key)? => State::NextKeyWritten,
        (true, false) => State::ConfigRotated,
    })
}

/// Starts the host on what a kill left: it must report every key set.
async fn host_sees_every_key(
    config: &Path,
    plugins: &Path,
    catalog: &Path,
    log: &Path,
    home: &e2e_tests::TempHome,
    expected: &BTreeMap<String, String>,
) -> Result<()> {
    let mut host = ChildHost::start(config, plugins, &[catalog.to_owned()], log, home)?;
    let body: serde_json::Value = reqwest::Client::new()
        .get(host.url("/api/secrets"))
        .send()
        .await?
        .json()
        .await?;
    host.terminate()?;
    for key in expected.keys() {
        ensure!(
            body["secrets"][key]["set"] == true,
            "{key} is not set: {}",
            body["secrets"][key]
        );
    }
    Ok(())
}
