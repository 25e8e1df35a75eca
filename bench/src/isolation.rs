//! Section 7, start-up isolation: exec of the release `demo-host` to
//! listening with 1, 5 and 20 libraries in the plugin folder, cold (an
//! empty probe cache: every library copied, hashed and probed in a child
//! process) and warm (the cache the cold start wrote: no probe process).
//!
//! The folder holds the secrets plugin; with 5 and 20 libraries also
//! numbered copies of a minimal plugin (`tests/fixtures/numbered-plugin`,
//! its slot marker rewritten so each copy is a distinct plugin) and one bad
//! library whose constructor aborts (`tests/fixtures/c/ctor_abort.c`,
//! compiled with the system C compiler). Each start's log is checked: every
//! good library loaded, the bad one skipped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use bench::stats::Spread;
use demo_host::ConfigStore;

use crate::{
    context::Ctx,
    hosts::lib_file_name,
    report::{Row, fmt_spread},
};

/// The marker the numbered fixture's id, route and path hold.
const SLOT: &[u8] = b"SLOT0000";

/// The library counts measured.
const SIZES: [usize; 3] = [1, 5, 20];

/// The numbered fixture library (built beside this executable by
/// `scripts/bench.sh`).
fn numbered_lib() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let lib = exe
        .parent()
        .context("the executable has no folder")?
        .join(format!(
            "{}numbered_plugin{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
    ensure!(
        lib.is_file(),
        "{} is missing: build with `cargo build --release -p numbered-plugin`",
        lib.display()
    );
    Ok(lib)
}

/// `bytes` with every slot marker replaced by number `n`.
fn numbered_copy(bytes: &[u8], n: usize) -> Result<Vec<u8>> {
    let replacement = format!("SLOT{n:04}").into_bytes();
    ensure!(replacement.len() == SLOT.len(), "slot number {n} too large");
    let mut out = bytes.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + SLOT.len() <= out.len() {
        if &out[i..i + SLOT.len()] == SLOT {
            out[i..i + SLOT.len()].copy_from_slice(&replacement);
            found += 1;
            i += SLOT.len();
        } else {
            i += 1;
        }
    }
    ensure!(found > 0, "the numbered fixture holds no slot marker");
    Ok(out)
}

/// A plugin folder with `n` libraries (see the module notes); returns how
/// many should load.
fn fill_folder(ctx: &Ctx, folder: &Path, n: usize, bad: &Path) -> Result<usize> {
    std::fs::create_dir_all(folder)?;
    std::fs::copy(&ctx.plugin_lib, folder.join(lib_file_name()))?;
    if n == 1 {
        return Ok(1);
    }
    std::fs::copy(bad, folder.join("libbad_ctor_abort.so"))?;
    let numbered = std::fs::read(numbered_lib()?)?;
    for i in 1..=n - 2 {
        std::fs::write(
            folder.join(format!("libnumbered_{i:02}.so")),
            numbered_copy(&numbered, i)?,
        )?;
    }
    Ok(n - 1)
}

/// Spawns the host on `folder` with its probe cache in `cache`; returns
/// exec → listening and the log after the start, then stops it.
fn start_once(ctx: &Ctx, dir: &Path, folder: &Path, cache: &Path) -> Result<(Duration, String)> {
    let mut cmd = Command::new(&ctx.host_bin);
    cmd.arg("--bind")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(dir.join("milady.toml"))
        .arg("--plugins-dir")
        .arg(folder)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .env_remove("MILADY_ALLOWED_ORIGINS")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    ctx.own_home(&mut cmd);
    let started = Instant::now();
    let e2e_tests::Launched { mut child, log, .. } =
        e2e_tests::spawn_listening(&mut cmd, Duration::from_secs(60))
            .with_context(|| format!("starting {}", ctx.host_bin.display()))?;
    let listening = started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(20));
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok((listening, log))
}

/// Checks that `log` shows `loaded` plugins loaded and the rest skipped,
/// with probe results from where they should come.
fn check_log(log: &str, loaded: usize, skipped: usize, probe: &str) -> Result<()> {
    let count = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains(&format!("probe=\"{probe}\"")))
            .count()
    };
    if count("plugin loaded") != loaded || count("plugin skipped") != skipped {
        bail!("expected {loaded} plugins loaded and {skipped} skipped (probe {probe}):\n{log}");
    }
    Ok(())
}

/// Cold and warm start-up with 1, 5 and 20 libraries.
pub(crate) fn isolation(ctx: &Ctx) -> Result<Vec<Row>> {
    let root = ctx.work.path().join("isolation");
    let bad = e2e_tests::compile_c_fixture("ctor_abort", &root.join("c"))?;
    let rounds = ctx.args.startup_rounds.max(1);
    let mut rows = Vec::new();
    for n in SIZES {
        let dir = root.join(format!("{n}-libraries"));
        let folder = dir.join("plugins");
        let loaded = fill_folder(ctx, &folder, n, &bad)?;
        let skipped = n - loaded;
        ConfigStore::new(dir.join("milady.toml")).create_default_if_missing()?;
        // One unmeasured start warms the page cache, as for any restart.
        start_once(ctx, &dir, &folder, &dir.join("cache-warm-up"))?;
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let cache = dir.join(format!("cache-{round}"));
            let (t, log) = start_once(ctx, &dir, &folder, &cache)?;
            check_log(&log, loaded, skipped, "run")?;
            cold.push(t.as_secs_f64() * 1e3);
            let (t, log) = start_once(ctx, &dir, &folder, &cache)?;
            check_log(&log, loaded, skipped, "cached")?;
            warm.push(t.as_secs_f64() * 1e3);
        }
        let what = match n {
            1 => "1 library (the secrets plugin)".to_owned(),
            n => format!("{n} libraries ({} plugins, 1 aborting constructor)", n - 1),
        };
        let warm = Spread::of(&warm);
        rows.push(Row::new(
            format!("cold start (empty probe cache), {what}: exec → listening, ms"),
            fmt_spread(Spread::of(&cold), 1, ""),
        ));
        rows.push(
            Row::new(
                format!("warm start (probe cache), {what}: exec → listening, ms"),
                fmt_spread(warm, 1, ""),
            )
            .target("< 100 ms", warm.median < 100.0),
        );
    }
    Ok(rows)
}
