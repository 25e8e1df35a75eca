//! Sections 4–5, start-up: the release `demo-host` process spawned to its
//! first 200 on `/api/secrets`, and the plugin load time it logs. The last
//! host started also gives the memory figures (the `memory` module).

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use bench::{load, stats::Spread};
use demo_host::ConfigStore;

use crate::{
    context::Ctx,
    hosts::lib_file_name,
    memory,
    report::{Row, fmt_spread},
};

/// A running `demo-host` process and how long it took to start.
pub(crate) struct Started {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
    listening: Duration,
    ready: Duration,
    log: Arc<Mutex<String>>,
}

/// Spawns the release host on a free loopback port and waits for its
/// first 200 on `/api/secrets`.
pub(crate) fn start_host(ctx: &Ctx, dir: &Path, plugins: &Path) -> Result<Started> {
    let started = Instant::now();
    let mut cmd = Command::new(&ctx.host_bin);
    cmd.arg("--bind")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(dir.join("milady.toml"))
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--catalog")
        .arg(&ctx.catalog.path)
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    ctx.own_home(&mut cmd);
    let e2e_tests::Launched {
        mut child,
        base,
        log,
    } = e2e_tests::spawn_listening(&mut cmd, Duration::from_secs(20))
        .with_context(|| format!("starting {}", ctx.host_bin.display()))?;
    let addr: SocketAddr = base.trim_start_matches("http://").parse()?;
    let listening = started.elapsed();
    let get = load::request("GET", addr, "/api/secrets", None);
    loop {
        match ctx.client.block_on(load::fetch(addr, &get)) {
            Ok(r) if r.status == 200 => break,
            _ if started.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("demo-host never answered 200");
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Ok(Started {
        child,
        addr,
        listening,
        ready: started.elapsed(),
        log,
    })
}

/// Stops the host; returns its log.
pub(crate) fn stop(mut s: Started) -> Result<String> {
    // SIGTERM for a graceful stop, then wait (bounded) for the log to end.
    let _ = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            s.child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = s.child.wait();
    std::thread::sleep(Duration::from_millis(20));
    Ok(s.log.lock().map(|l| l.clone()).unwrap_or_default())
}

/// The `elapsed_us` of the host's `plugin loaded` log line.
fn plugin_load_us(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("plugin loaded"))?;
    let rest = line.split("elapsed_us=").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Exec to first 200 and to listening, plugin load time, and the memory
/// figures of the last host started.
pub(crate) fn startup(ctx: &Ctx) -> Result<Vec<Row>> {
    let dir = ctx.work.path().join("startup");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&ctx.plugin_lib, plugins.join(lib_file_name()))?;
    ConfigStore::new(dir.join("milady.toml")).create_default_if_missing()?;
    // One unmeasured start warms the page cache, as for any restart.
    stop(start_host(ctx, &dir, &plugins)?)?;
    let (mut ready, mut listening, mut load_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut memory = None;
    for round in 0..ctx.args.startup_rounds.max(1) {
        let s = start_host(ctx, &dir, &plugins)?;
        ready.push(s.ready.as_secs_f64() * 1e3);
        listening.push(s.listening.as_secs_f64() * 1e3);
        if round + 1 == ctx.args.startup_rounds.max(1) {
            memory = Some(memory::under_load(ctx, &s)?);
        }
        let log = stop(s)?;
        load_us.push(
            plugin_load_us(&log)
                .context("no `plugin loaded ... elapsed_us=` line in the host's log")?,
        );
    }
    let ready = Spread::of(&ready);
    let mut rows = vec![
        Row::new(
            "exec → first 200 on /api/secrets, ms",
            fmt_spread(ready, 1, ""),
        )
        .target("< 100 ms", ready.median < 100.0),
        Row::new(
            "exec → listening, ms",
            fmt_spread(Spread::of(&listening), 1, ""),
        ),
        Row::new(
            "plugin load per plugin (check, layout, manifest, OpenAPI, init), µs",
            fmt_spread(Spread::of(&load_us), 0, ""),
        ),
    ];
    if let Some((idle, after)) = memory {
        rows.extend(memory::rows(idle, after));
    }
    Ok(rows)
}
