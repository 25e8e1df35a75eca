//! Section 3, durable writes: `PUT` latency vs. the physical floor of a
//! durable replace of the same file, `PUT` latency with values encrypted
//! at rest (the default) vs. the same host storing them in plaintext
//! (`[security] encrypt_env = false`, the write path before encryption),
//! `PUT` latency with the audit log (the default) vs. the same host with
//! auditing off (SPEC §8: one more fsync per write, shared by a group
//! commit), and `PUT` throughput from 32 clients vs. 1 with the config
//! writes and audit fsyncs each PUT costs.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use bench::{
    disk,
    load::{self, Load, Requests},
    stats::{Spread, percentile},
};

use demo_host::ConfigStore;

use crate::{
    context::Ctx,
    report::{Row, fmt_spread},
};

/// PUT latency and the floor's, PUT/s with 32 clients and 1, config
/// writes per PUT, in alternating rounds.
pub(crate) fn writes(ctx: &Ctx) -> Result<Vec<Row>> {
    let cat = &ctx.catalog;
    let host = ctx.host("writes", true, &cat.path, &cat.keys)?;
    let keys: Vec<String> = cat
        .keys
        .iter()
        .filter(|k| host.env.policy().check(k).is_none())
        .take(32)
        .cloned()
        .collect();
    ensure!(
        keys.len() == 32,
        "the catalog has fewer than 32 writable secrets"
    );
    // Every host compared below holds the same 32 keys before it is
    // measured, so each write parses and rewrites a file of the same size.
    seed(&host, &keys)?;
    let addr = ctx.serve(host.endpoint())?;
    let keys = Arc::new(keys);
    let (one, many) = (
        put_load(ctx, addr, &keys, 1),
        put_load(ctx, addr, &keys, 32),
    );
    ctx.load(&Load {
        duration: Duration::from_millis(300),
        ..many.clone()
    })?;
    // The same host storing values in plaintext: the reference for what
    // encryption at rest adds to a write.
    let plain_dir = ctx.work.path().join("writes-plain");
    std::fs::create_dir_all(&plain_dir)?;
    let plain_config = plain_dir.join("milady.toml");
    std::fs::write(&plain_config, "[security]\nencrypt_env = false\n\n[env]\n")?;
    std::fs::set_permissions(
        &plain_config,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let plain = ctx.host("writes-plain", true, &cat.path, &cat.keys)?;
    seed(&plain, &keys)?;
    let plain_one = put_load(ctx, ctx.serve(plain.endpoint())?, &keys, 1);
    ctx.load(&Load {
        duration: Duration::from_millis(300),
        ..plain_one.clone()
    })?;
    // The same host with auditing off: the reference for what the audit
    // line (written and synced before the config) adds to a write.
    let unaudited = crate::hosts::build_host_with(
        &ctx.work.path().join("writes-unaudited"),
        Some(ctx.plugin_lib.as_path()),
        &cat.path,
        &crate::hosts::bench_env(&cat.keys),
        &ctx.copies,
        |options| options.audit = false,
    )?;
    seed(&unaudited, &keys)?;
    let unaudited_one = put_load(ctx, ctx.serve(unaudited.endpoint())?, &keys, 1);
    ctx.load(&Load {
        duration: Duration::from_millis(300),
        ..unaudited_one.clone()
    })?;
    let config = ctx.work.path().join("writes").join("milady.toml");

    let (mut put_p50, mut put_p99, mut floor_p50, mut floor_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tput1, mut tput32, mut floor_rate) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_p50, mut r_p99, mut r_tput) = (Vec::new(), Vec::new(), Vec::new());
    let mut writes_per_put = Vec::new();
    let (mut plain_p50, mut r_sealed) = (Vec::new(), Vec::new());
    let (mut unaudited_p50, mut r_audited) = (Vec::new(), Vec::new());
    let mut audit_fsyncs_per_put = Vec::new();
    for round in 0..ctx.args.rounds {
        let mut steps = [0, 1, 2, 3, 4];
        if round % 2 == 1 {
            steps.reverse();
        }
        for step in steps {
            match step {
                0 => {
                    let r = ctx.load(&one)?;
                    ensure!(r.errors == 0, "{} PUTs failed", r.errors);
                    put_p50.push(r.percentile_us(50.0));
                    put_p99.push(r.percentile_us(99.0));
                    tput1.push(r.rate());
                }
                1 => {
                    let (p50, p99, rate) = floor(&config, ctx.round())?;
                    floor_p50.push(p50);
                    floor_p99.push(p99);
                    floor_rate.push(rate);
                }
                3 => {
                    let r = ctx.load(&plain_one)?;
                    ensure!(r.errors == 0, "{} plaintext PUTs failed", r.errors);
                    plain_p50.push(r.percentile_us(50.0));
                }
                4 => {
                    let r = ctx.load(&unaudited_one)?;
                    ensure!(r.errors == 0, "{} unaudited PUTs failed", r.errors);
                    unaudited_p50.push(r.percentile_us(50.0));
                }
                _ => {
                    let commits = host.env.commits();
                    let audits = host.env.audit_writes();
                    let r = ctx.load(&many)?;
                    ensure!(r.errors == 0, "{} PUTs failed", r.errors);
                    tput32.push(r.rate());
                    writes_per_put.push((host.env.commits() - commits) as f64 / r.ok.max(1) as f64);
                    audit_fsyncs_per_put
                        .push((host.env.audit_writes() - audits) as f64 / r.ok.max(1) as f64);
                }
            }
        }
        let last = |v: &Vec<f64>| v.last().copied().unwrap_or(f64::NAN);
        r_p50.push(last(&put_p50) / last(&floor_p50));
        r_p99.push(last(&put_p99) / last(&floor_p99));
        r_tput.push(last(&tput32) / last(&tput1));
        r_sealed.push(last(&put_p50) / last(&plain_p50));
        r_audited.push(last(&put_p50) / last(&unaudited_p50));
    }
    ensure!(
        host.env.audit_writes() > 0 && unaudited.env.audit_writes() == 0,
        "the audited host audited its writes and the other did not"
    );
    ensure!(
        ConfigStore::new(&config).load()?.sealed.len() == 32
            && ConfigStore::new(&plain_config).load()?.sealed.is_empty(),
        "the encrypted host stored its values encrypted and the other in plaintext"
    );
    let (p50, p99) = (Spread::of(&r_p50), Spread::of(&r_p99));
    let sealed = Spread::of(&r_sealed);
    let audited = Spread::of(&r_audited);
    Ok(vec![
        Row::new(
            "PUT p50 latency µs (1 client), audit log on vs off",
            fmt_spread(Spread::of(&put_p50), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&unaudited_p50), 0, ""))
        .ratio(audited)
        .target("≤ 1.3×", audited.median <= 1.3),
        Row::new(
            "PUT p50 latency µs (1 client), encrypted vs plaintext at rest",
            fmt_spread(Spread::of(&put_p50), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&plain_p50), 0, ""))
        .ratio(sealed)
        .target("≤ 1.2×", sealed.median <= 1.2),
        Row::new(
            "PUT p50 latency µs (1 client) vs floor",
            fmt_spread(Spread::of(&put_p50), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&floor_p50), 0, ""))
        .ratio(p50)
        .target("≤ 1.5×", p50.median <= 1.5),
        Row::new(
            "PUT p99 latency µs (1 client) vs floor",
            fmt_spread(Spread::of(&put_p99), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&floor_p99), 0, ""))
        .ratio(p99)
        .target("≤ 1.5×", p99.median <= 1.5),
        Row::new(
            "PUT/s: 32 clients (different keys) vs 1 client",
            fmt_spread(Spread::of(&tput32), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&tput1), 0, ""))
        .ratio(Spread::of(&r_tput)),
        Row::new(
            "config writes (fsyncs) per PUT with 32 clients",
            fmt_spread(Spread::of(&writes_per_put), 2, ""),
        ),
        Row::new(
            "audit log fsyncs per PUT with 32 clients",
            fmt_spread(Spread::of(&audit_fsyncs_per_put), 2, ""),
        ),
        Row::new(
            "durable replaces/s of the floor (1 writer)",
            fmt_spread(Spread::of(&floor_rate), 0, ""),
        ),
    ])
}

/// The value client `conn` writes in its PUT number `seq` (the seed is
/// number 0).
fn bench_value(conn: usize, seq: u64) -> String {
    format!("bench-value-{conn:02}-{seq:08}-abcdefghijklmnop")
}

/// Sets each of `keys` once, with a value as long as those the load
/// writes.
fn seed(host: &demo_host::Host, keys: &[String]) -> Result<()> {
    let changes: Vec<host_api::EnvChange> = keys
        .iter()
        .enumerate()
        .map(|(conn, key)| host_api::EnvChange::set(key.as_str(), bench_value(conn, 0)))
        .collect();
    host.env
        .update_blocking(&changes, None)
        .map_err(|e| anyhow::anyhow!("seeding the config failed: {}", e.message))?;
    Ok(())
}

/// `clients` connections PUTting one key each (of `keys`) to `addr` for a
/// round.
fn put_load(
    ctx: &Ctx,
    addr: std::net::SocketAddr,
    keys: &Arc<Vec<String>>,
    clients: usize,
) -> Load {
    let keys = Arc::clone(keys);
    let make = move |conn: usize, seq: u64| {
        let key = &keys[conn % keys.len()];
        let body = format!(r#"{{"secrets":{{"{key}":"{}"}}}}"#, bench_value(conn, seq));
        load::request("PUT", addr, "/api/secrets", Some(body.as_bytes()))
    };
    Load {
        addr,
        connections: clients,
        duration: ctx.round(),
        max_per_connection: 100_000,
        requests: Requests::Generated(Arc::new(make)),
    }
}

/// The floor: replaces `config` with its own bytes for `budget`; returns
/// p50 and p99 in µs and the rate per second.
fn floor(config: &Path, budget: Duration) -> Result<(f64, f64, f64)> {
    let bytes = std::fs::read(config)?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget && samples.len() < 100_000 {
        let t = Instant::now();
        disk::replace_durably(config, &bytes)?;
        samples.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let rate = samples.len() as f64 / start.elapsed().as_secs_f64();
    samples.sort_unstable();
    Ok((percentile(&samples, 50.0), percentile(&samples, 99.0), rate))
}
