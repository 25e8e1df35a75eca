//! Section 1, bridge overhead: `GET /api/secrets` through the loaded
//! plugin vs. the same handler linked natively, over loopback HTTP in
//! alternating rounds.

use std::{sync::Arc, time::Duration};

use anyhow::{Result, ensure};
use bench::{
    load::{self, Load, Requests},
    stats::Spread,
};

use crate::{
    context::Ctx,
    hosts::native_endpoint,
    report::{Row, fmt_spread},
};

/// Requests per second and p50/p99 latency, plugin vs. native.
pub(crate) fn bridge(ctx: &Ctx) -> Result<Vec<Row>> {
    let cat = &ctx.catalog;
    let plugin_host = ctx.host("bridge-plugin", true, &cat.path, &cat.keys)?;
    let native_host = ctx.host("bridge-native", false, &cat.path, &cat.keys)?;
    let addrs = [
        ctx.serve(plugin_host.endpoint())?,
        ctx.serve(native_host.endpoint_with_native(native_endpoint(&native_host)))?,
    ];
    let requests: Vec<Arc<[u8]>> = addrs
        .iter()
        .map(|a| Arc::from(load::request("GET", *a, "/api/secrets", None)))
        .collect();
    let replies = [
        ctx.client.block_on(load::fetch(addrs[0], &requests[0]))?,
        ctx.client.block_on(load::fetch(addrs[1], &requests[1]))?,
    ];
    ensure!(
        replies.iter().all(|r| r.status == 200),
        "GET /api/secrets failed: {} / {}",
        replies[0].status,
        replies[1].status
    );
    // Each host keys its fingerprints with its own key: the bodies are
    // the same but for the fingerprints' digits.
    ensure!(
        without_fingerprints(&replies[0].body) == without_fingerprints(&replies[1].body),
        "the plugin and the native handler answer with different bodies"
    );
    let body_kib = replies[0].body.len() as f64 / 1024.0;

    let loads: Vec<Load> = (0..2)
        .map(|i| Load {
            addr: addrs[i],
            connections: ctx.args.connections,
            duration: ctx.round(),
            max_per_connection: 10_000_000,
            requests: Requests::Fixed(requests[i].clone()),
        })
        .collect();
    for l in &loads {
        ctx.load(&Load {
            duration: Duration::from_millis(500),
            ..l.clone()
        })?;
    }
    let mut rps = [Vec::new(), Vec::new()];
    let mut p50 = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let (mut r_rps, mut r_p50, mut r_p99) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ctx.args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let r = ctx.load(&loads[i])?;
            ensure!(r.errors == 0, "{} GETs failed", r.errors);
            rps[i].push(r.rate());
            p50[i].push(r.percentile_us(50.0));
            p99[i].push(r.percentile_us(99.0));
        }
        let last = |v: &[Vec<f64>; 2], i: usize| v[i].last().copied().unwrap_or(f64::NAN);
        r_rps.push(last(&rps, 0) / last(&rps, 1));
        r_p50.push(last(&p50, 1) / last(&p50, 0));
        r_p99.push(last(&p99, 1) / last(&p99, 0));
    }
    let ratio = Spread::of(&r_rps);
    Ok(vec![
        Row::new(
            format!("GET req/s, plugin vs native (body {body_kib:.1} KiB, identical)"),
            fmt_spread(Spread::of(&rps[0]), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&rps[1]), 0, ""))
        .ratio(ratio)
        .target("≥ 0.95×", ratio.median >= 0.95),
        Row::new(
            "GET p50 latency µs, plugin vs native (ratio: native/plugin)",
            fmt_spread(Spread::of(&p50[0]), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&p50[1]), 0, ""))
        .ratio(Spread::of(&r_p50)),
        Row::new(
            "GET p99 latency µs, plugin vs native (ratio: native/plugin)",
            fmt_spread(Spread::of(&p99[0]), 0, ""),
        )
        .reference(fmt_spread(Spread::of(&p99[1]), 0, ""))
        .ratio(Spread::of(&r_p99)),
    ])
}

/// `body` with the digits of every fingerprint (`hmac-sha256:<hex>`)
/// zeroed.
fn without_fingerprints(body: &[u8]) -> Vec<u8> {
    const PREFIX: &[u8] = b"hmac-sha256:";
    let mut out = body.to_vec();
    let mut at = 0;
    while let Some(found) = out[at..].windows(PREFIX.len()).position(|w| w == PREFIX) {
        at += found + PREFIX.len();
        while at < out.len() && out[at].is_ascii_hexdigit() {
            out[at] = b'0';
            at += 1;
        }
    }
    out
}
