//! Section 8, live plugin adds: a library dropped into the plugin folder
//! of a running release host (written to a temporary name, then renamed
//! into place), to the first 200 on its route. Each drop is a distinct
//! plugin (a numbered copy of the fixture), so each one is probed in a
//! child process, loaded and mounted, and the router rebuilt, as for a
//! real new plugin; the time includes the watcher's polling and settling.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use bench::{load, stats::Spread};
use demo_host::ConfigStore;

use crate::{
    context::Ctx,
    hosts::lib_file_name,
    report::{Row, fmt_spread},
    startup::{start_host, stop},
};

/// Libraries dropped, one after the other.
const DROPS: usize = 20;
/// The bound on one drop's wait for its first 200.
const DROP_WAIT: Duration = Duration::from_secs(30);

/// The numbered fixture library, built beside this executable by
/// `scripts/bench.sh`.
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

/// Drops library `n` into `folder` and waits for its route to answer 200;
/// the time from the rename to that answer.
fn drop_and_wait(
    ctx: &Ctx,
    addr: SocketAddr,
    folder: &Path,
    numbered: &[u8],
    n: usize,
) -> Result<Duration> {
    let bytes = e2e_tests::numbered_copy(numbered, n)?;
    let name = format!("libnumbered_live_{n:04}.so");
    let temp = folder.join(format!(".{name}.partial"));
    std::fs::write(&temp, &bytes)?;
    let get = load::request("GET", addr, &format!("/api/numbered-SLOT{n:04}"), None);
    let dropped = Instant::now();
    std::fs::rename(&temp, folder.join(&name))?;
    loop {
        if let Ok(reply) = ctx.client.block_on(load::fetch(addr, &get))
            && reply.status == 200
        {
            return Ok(dropped.elapsed());
        }
        if dropped.elapsed() > DROP_WAIT {
            bail!("library {n} dropped into the running host never answered");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Drop → first 200, over [`DROPS`] drops into one running host.
pub(crate) fn live(ctx: &Ctx) -> Result<Vec<Row>> {
    let dir = ctx.work.path().join("live");
    let folder = dir.join("plugins");
    std::fs::create_dir_all(&folder)?;
    std::fs::copy(&ctx.plugin_lib, folder.join(lib_file_name()))?;
    ConfigStore::new(dir.join("milady.toml")).create_default_if_missing()?;
    let numbered = std::fs::read(numbered_lib()?)?;
    let host = start_host(ctx, &dir, &folder)?;
    let addr = host.addr;
    let mut times = Vec::with_capacity(DROPS);
    let mut outcome = Ok(());
    for n in 1..=DROPS {
        match drop_and_wait(ctx, addr, &folder, &numbered, 100 + n) {
            Ok(t) => times.push(t.as_secs_f64() * 1e3),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let log = stop(host)?;
    if let Err(e) = outcome {
        bail!("{e:#}\n{log}");
    }
    let loaded = log.matches("plugin loaded while running").count();
    ensure!(
        loaded == DROPS,
        "{loaded} of {DROPS} drops logged as loaded:\n{log}"
    );
    let spread = Spread::of(&times);
    Ok(vec![
        Row::new(
            format!("library dropped into a running host's folder → first 200 on its route, ms ({DROPS} drops)"),
            fmt_spread(spread, 0, ""),
        )
        .target("p50 < 2 s", spread.median < 2000.0),
    ])
}
