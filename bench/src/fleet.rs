//! Section 9, a fleet on OpenBao (SPEC §9): GET and PUT `/api/secrets` on
//! a release host with the file store and with `[store] backend =
//! "openbao"` (a real `bao server -dev` on loopback), OpenBao's own KV v2
//! write (`cas`) as the floor of a PUT, and the propagation of a change
//! made on one host to a second host's GET (p50/p99 over 100 changes).
//! Skipped, with a row saying so, when `bao` is not installed
//! (`.ci/setup-openbao.sh`).

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use bench::load;
use e2e_tests::openbao::{DevServer, bao_binary, store_config};

use crate::{context::Ctx, hosts::lib_file_name, report::Row};

/// Requests per latency measure.
const SAMPLES: usize = 200;
/// Changes whose propagation is timed.
const CHANGES: usize = 100;

struct FleetHost {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for FleetHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(ctx: &Ctx, config: &str, token: Option<&str>) -> Result<FleetHost> {
    let dir = tempfile::tempdir_in(ctx.work.path())?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&ctx.plugin_lib, plugins.join(lib_file_name()))?;
    std::fs::write(dir.path().join("milady.toml"), config)?;
    let mut cmd = Command::new(&ctx.host_bin);
    cmd.arg("--bind")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(dir.path().join("milady.toml"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .arg("--catalog")
        .arg(&ctx.catalog.path)
        .env_remove("MILADY_API_TOKEN")
        .env("RUST_LOG", "warn")
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("BAO_TOKEN", token);
    }
    let launched = e2e_tests::spawn_listening(&mut cmd, Duration::from_secs(20))?;
    let addr = launched.base.trim_start_matches("http://").parse()?;
    Ok(FleetHost {
        child: launched.child,
        addr,
        _dir: dir,
    })
}

fn timed(ctx: &Ctx, addr: SocketAddr, request: &[u8]) -> Result<f64> {
    let started = Instant::now();
    let reply = ctx.client.block_on(load::fetch(addr, request))?;
    if reply.status != 200 {
        bail!("answered {}", reply.status);
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    values.get(i).copied().unwrap_or(0.0)
}

/// GET and PUT latencies (ms, each sorted) on one host.
fn get_put(ctx: &Ctx, addr: SocketAddr, key: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let get = load::request("GET", addr, "/api/secrets", None);
    let mut gets = Vec::with_capacity(SAMPLES);
    let mut puts = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        gets.push(timed(ctx, addr, &get)?);
        let body = format!("{{\"secrets\":{{\"{key}\":\"bench-value-{n:06}\"}}}}");
        let put = load::request("PUT", addr, "/api/secrets", Some(body.as_bytes()));
        puts.push(timed(ctx, addr, &put)?);
    }
    Ok((gets, puts))
}

fn row(measure: &str, values: &mut [f64]) -> Row {
    let p50 = percentile(values, 0.5);
    let p99 = percentile(values, 0.99);
    Row::new(measure, format!("p50 {p50:.2} ms, p99 {p99:.2} ms"))
}

/// The section's rows.
pub(crate) fn fleet(ctx: &Ctx) -> Result<Vec<Row>> {
    let Some(bin) = bao_binary() else {
        return Ok(vec![Row::new(
            "fleet on OpenBao",
            "skipped: `bao` not installed (.ci/setup-openbao.sh)",
        )]);
    };
    let key = ctx
        .catalog
        .keys
        .first()
        .context("no key in the catalog")?
        .clone();
    let mut rows = Vec::new();

    let file = start(ctx, "", None)?;
    let (mut gets, mut puts) = get_put(ctx, file.addr, &key)?;
    rows.push(row("GET, file store", &mut gets));
    rows.push(row("PUT, file store (fsync)", &mut puts));
    drop(file);

    let bao = ctx.client.block_on(DevServer::start(&bin))?;
    let addrs = vec![bao.process.addr.clone()];
    let config = store_config(&addrs, "bench");
    let a = start(ctx, &config, Some(&bao.token))?;
    let b = start(ctx, &config, Some(&bao.token))?;
    let (mut gets, mut puts) = get_put(ctx, a.addr, &key)?;
    rows.push(row(
        "GET, OpenBao store (served from the snapshot)",
        &mut gets,
    ));
    rows.push(row("PUT, OpenBao store (one cas write)", &mut puts));

    // The floor: OpenBao's own KV v2 write with cas, over the same loopback.
    let api = bao.api();
    let mut floor = Vec::with_capacity(SAMPLES);
    let mut data = std::collections::BTreeMap::new();
    for n in 0..SAMPLES {
        data.insert("K".to_owned(), format!("v{n}"));
        let started = Instant::now();
        ctx.client
            .block_on(api.kv_write("secret", "bench-floor", &data))?;
        floor.push(started.elapsed().as_secs_f64() * 1e3);
    }
    rows.push(row("OpenBao KV v2 write alone (the floor)", &mut floor));

    // Propagation: PUT on host a, then the time until host b's GET carries
    // the ETag of that write (the store's version, the same on every host).
    let mut waits = Vec::with_capacity(CHANGES);
    let get_b = load::request("GET", b.addr, "/api/secrets", None);
    for n in 0..CHANGES {
        let body = format!("{{\"secrets\":{{\"{key}\":\"propagated-{n:06}\"}}}}");
        let put = load::request("PUT", a.addr, "/api/secrets", Some(body.as_bytes()));
        let reply = ctx.client.block_on(load::fetch(a.addr, &put))?;
        let tag = reply.header("etag").context("no ETag")?.to_owned();
        let written = Instant::now();
        loop {
            let reply = ctx.client.block_on(load::fetch(b.addr, &get_b))?;
            if reply.header("etag") == Some(tag.as_str()) {
                break;
            }
            if written.elapsed() > Duration::from_secs(10) {
                bail!("change {n} never reached the second host");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        waits.push(written.elapsed().as_secs_f64() * 1e3);
    }
    let mut sorted = waits.clone();
    let p99 = percentile(&mut sorted, 0.99);
    rows.push(
        row(
            "propagation to a second host (100 changes, 200 ms polling)",
            &mut waits,
        )
        .target("≤ 1000 ms", p99 <= 1000.0),
    );
    Ok(rows)
}
