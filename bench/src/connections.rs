//! Section 6, hostile connections: what the release `demo-host` serves to
//! well-behaved clients while 1,000 connections hold it without making a
//! request (issue 11, SPEC §11), with the host's default limits
//! (header-read timeout 10 s, idle timeout 60 s, cap 1,024 connections).
//!
//! Per round, on one host: the GET load alone; the same load with 1,000
//! silent connections open (connected, nothing sent); and with 1,000
//! connections trickling a request head, one byte a second (slowloris). The
//! silent and trickling connections are opened afresh for each load run,
//! 1.5 s before it (so that the figures are the steady state, not the
//! burst of their arrival), and stay open through it. Then, once: how long the host keeps silent
//! connections (the header-read timeout closes them), and how long a new
//! client waits when 1,100 silent connections exceed the cap of 1,024.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use bench::{
    load::{self, Load, LoadResult, Requests},
    process,
    stats::Spread,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinSet,
};

use crate::{
    context::Ctx,
    hosts::lib_file_name,
    report::{Row, fmt_spread},
    startup::{start_host, stop},
};

/// Connections that hold the host in each loaded round.
const HOLDERS: usize = 1000;
/// Silent connections past the host's default cap (1,024).
const OVER_CAP: usize = 1100;

/// What holds the host during a load run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holders {
    None,
    Silent,
    Trickling,
}

pub(crate) fn connections(ctx: &Ctx) -> Result<Vec<Row>> {
    let dir = ctx.work.path().join("connections");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(&ctx.plugin_lib, plugins.join(lib_file_name()))?;
    let host = start_host(ctx, &dir, &plugins)?;
    let addr = host.addr;
    let get: Arc<[u8]> = Arc::from(load::request("GET", addr, "/api/secrets", None));
    let load = Load {
        addr,
        connections: ctx.args.connections,
        duration: ctx.round(),
        max_per_connection: 10_000_000,
        requests: Requests::Fixed(get),
    };

    let (mut alone, mut silent, mut trickling) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss_held_kib = 0;
    for round in 0..ctx.args.rounds.max(1) {
        // A/B order alternates.
        let order = if round % 2 == 0 {
            [Holders::None, Holders::Silent, Holders::Trickling]
        } else {
            [Holders::Trickling, Holders::Silent, Holders::None]
        };
        for holders in order {
            let (result, rss) = ctx
                .client
                .block_on(held_run(&load, holders, host.child.id()))?;
            ensure!(result.errors == 0, "{} GETs failed", result.errors);
            match holders {
                Holders::None => alone.push(result),
                Holders::Silent => {
                    rss_held_kib = rss_held_kib.max(rss);
                    silent.push(result);
                }
                Holders::Trickling => trickling.push(result),
            }
        }
    }
    let closing = ctx.client.block_on(silent_lifetime(addr))?;
    let over_cap = ctx.client.block_on(served_over_the_cap(addr))?;
    stop(host)?;

    let rate =
        |runs: &[LoadResult]| Spread::of(&runs.iter().map(LoadResult::rate).collect::<Vec<_>>());
    let p99 = |runs: &[LoadResult]| {
        Spread::of(
            &runs
                .iter()
                .map(|r| r.percentile_us(99.0))
                .collect::<Vec<_>>(),
        )
    };
    let ratio = |runs: &[LoadResult]| {
        Spread::of(
            &runs
                .iter()
                .zip(&alone)
                .map(|(r, a)| r.rate() / a.rate().max(1e-9))
                .collect::<Vec<_>>(),
        )
    };
    let alone_rate = fmt_spread(rate(&alone), 0, "");
    let silent_ratio = ratio(&silent);
    let trickling_ratio = ratio(&trickling);
    Ok(vec![
        Row::new(
            format!(
                "GET /api/secrets req/s, {} well-behaved connections, with {HOLDERS} silent connections open vs none",
                ctx.args.connections
            ),
            fmt_spread(rate(&silent), 0, ""),
        )
        .reference(alone_rate.clone())
        .ratio(silent_ratio)
        .target("served (> 0.5×)", silent_ratio.min > 0.5),
        Row::new(
            format!("GET req/s with {HOLDERS} connections trickling a head (1 byte/s) vs none"),
            fmt_spread(rate(&trickling), 0, ""),
        )
        .reference(alone_rate)
        .ratio(trickling_ratio)
        .target("served (> 0.5×)", trickling_ratio.min > 0.5),
        Row::new(
            format!("GET p99 latency µs: {HOLDERS} silent / {HOLDERS} trickling / none"),
            format!(
                "{:.0} / {:.0} / {:.0}",
                p99(&silent).median,
                p99(&trickling).median,
                p99(&alone).median
            ),
        ),
        Row::new(
            format!("host RSS with {HOLDERS} silent connections open, MiB"),
            format!("{:.1}", rss_held_kib as f64 / 1024.0),
        ),
        Row::new(
            format!(
                "{HOLDERS} silent connections: closed by the host / seconds after opening (median, max)"
            ),
            format!(
                "{}/{HOLDERS} / {:.1}, {:.1}",
                closing.closed, closing.median_s, closing.max_s
            ),
        )
        .target("all, at the 10 s header-read timeout", closing.closed == HOLDERS),
        Row::new(
            format!("{OVER_CAP} silent connections (cap 1,024): a new client's first answer after, s"),
            format!("{over_cap:.1}"),
        )
        .target("< 15 s (the header-read timeout frees the cap)", over_cap < 15.0),
    ])
}

/// One load run while `holders` hold the host; also the host's resident
/// set (KiB) with them open.
async fn held_run(load: &Load, holders: Holders, pid: u32) -> Result<(LoadResult, u64)> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut held = JoinSet::new();
    let mut silent = Vec::new();
    match holders {
        Holders::None => {}
        Holders::Silent => silent = open_silent(load.addr, HOLDERS).await?,
        Holders::Trickling => {
            for _ in 0..HOLDERS {
                let stream = TcpStream::connect(load.addr).await?;
                held.spawn(trickle(stream, Arc::clone(&stop)));
            }
        }
    }
    // Let the host accept them all first: the figures are the steady state
    // with the connections held, not the burst of their arrival. The load
    // run still ends well inside the 10 s header-read timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = process::memory(pid).map_or(0, |m| m.rss_kib);
    let result = load::run(load).await?;
    stop.notify_waiters();
    held.shutdown().await;
    drop(silent);
    Ok((result, rss))
}

async fn open_silent(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(
            TcpStream::connect(addr)
                .await
                .context("opening a silent connection (raise `ulimit -n`?)")?,
        );
    }
    Ok(streams)
}

/// Sends a request head one byte a second, never finishing it.
async fn trickle(mut stream: TcpStream, stop: Arc<tokio::sync::Notify>) {
    let head = format!("GET /api/health HTTP/1.1\r\nX-Slow: {}", "a".repeat(4096));
    for byte in head.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            return;
        }
        tokio::select! {
            () = stop.notified() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// When the host closed silent connections.
struct Closing {
    closed: usize,
    median_s: f64,
    max_s: f64,
}

/// Opens [`HOLDERS`] silent connections and waits (at most 20 s) for the
/// host to close them.
async fn silent_lifetime(addr: SocketAddr) -> Result<Closing> {
    let opened = Instant::now();
    let mut waits = JoinSet::new();
    for stream in open_silent(addr, HOLDERS).await? {
        waits.spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; 64];
            let closed = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            closed.ok().map(|()| opened.elapsed().as_secs_f64())
        });
    }
    let mut times = Vec::new();
    while let Some(joined) = waits.join_next().await {
        if let Some(t) = joined? {
            times.push(t);
        }
    }
    let spread = Spread::of(&times);
    Ok(Closing {
        closed: times.len(),
        median_s: spread.median,
        max_s: spread.max,
    })
}

/// Opens [`OVER_CAP`] silent connections, then times a new client's first
/// answer (at most 40 s).
async fn served_over_the_cap(addr: SocketAddr) -> Result<f64> {
    let _silent = open_silent(addr, OVER_CAP).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let get = load::request("GET", addr, "/api/health", None);
    match tokio::time::timeout(Duration::from_secs(40), load::fetch(addr, &get)).await {
        Ok(Ok(reply)) if reply.status == 200 => Ok(started.elapsed().as_secs_f64()),
        Ok(Ok(reply)) => bail!("answered {} over the cap", reply.status),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("not served within 40 s over the cap"),
    }
}
