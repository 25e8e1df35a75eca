//! Section 2, catalog growth: server time per `GET` (in-process) for 100,
//! 1,000 and 10,000 declared secrets, steady and right after an
//! environment change.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use bench::stats::{Spread, percentile};
use demo_host::Host;

use crate::{
    catalog::sensitive_keys,
    context::Ctx,
    hosts::native_endpoint,
    in_process::{Ep, boxed, one_get},
    report::{Row, fmt_spread},
};

/// Median microseconds per GET over a bounded burst.
fn time_gets(ctx: &Ctx, ep: &Ep, budget: Duration, max: usize) -> Result<f64> {
    ctx.client.block_on(async {
        let mut samples = Vec::with_capacity(max);
        let start = Instant::now();
        while samples.len() < max && (start.elapsed() < budget || samples.len() < 5) {
            let t = Instant::now();
            one_get(ep).await?;
            samples.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
        samples.sort_unstable();
        Ok(percentile(&samples, 50.0))
    })
}

/// Median microseconds of the first GET after each environment change
/// (the change itself, a durable write, is not timed).
fn time_gets_after_change(ctx: &Ctx, host: &Host, ep: &Ep, key: &str, n: usize) -> Result<f64> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("changed-value-{i:04}-{}", "y".repeat(24));
        host.env
            .update_blocking(
                &[host_api::EnvChange {
                    key: key.into(),
                    value: abi_stable::std_types::RSome(value.as_str().into()),
                }],
                None,
            )
            .map_err(|e| anyhow::anyhow!("env update failed: {}", e.message))?;
        let t = Instant::now();
        ctx.client.block_on(one_get(ep))?;
        samples.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    samples.sort_unstable();
    Ok(percentile(&samples, 50.0))
}

/// Per size: µs per GET, steady and after a change, plugin vs. native;
/// then the per-key cost from 1,000 to 10,000 secrets.
pub(crate) fn growth(ctx: &Ctx) -> Result<Vec<Row>> {
    let sizes = [100usize, 1_000, 10_000];
    let mut rows = Vec::new();
    let mut steady_at = Vec::new();
    let mut changed_at = Vec::new();
    for &n in &sizes {
        let catalog = ctx.work.path().join(format!("catalog-{n}.json"));
        e2e_tests::write_catalog(&catalog, n / 10, 10)?;
        let keys = sensitive_keys(&catalog)?;
        ensure!(keys.len() == n, "expected {n} keys, got {}", keys.len());
        let plugin_host = ctx.host(&format!("growth-{n}-plugin"), true, &catalog, &keys)?;
        let native_host = ctx.host(&format!("growth-{n}-native"), false, &catalog, &keys)?;
        let eps = [
            boxed(plugin_host.endpoint()),
            boxed(native_host.endpoint_with_native(native_endpoint(&native_host))),
        ];
        let body = ctx.client.block_on(one_get(&eps[0]))?;
        let budget = Duration::from_millis(250);
        let mut steady = [Vec::new(), Vec::new()];
        let mut changed = [Vec::new(), Vec::new()];
        let hosts = [&plugin_host, &native_host];
        for round in 0..ctx.args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                steady[i].push(time_gets(ctx, &eps[i], budget, 20_000)?);
                changed[i].push(time_gets_after_change(ctx, hosts[i], &eps[i], &keys[1], 5)?);
            }
        }
        let s = [Spread::of(&steady[0]), Spread::of(&steady[1])];
        let c = [Spread::of(&changed[0]), Spread::of(&changed[1])];
        steady_at.push(s[0].median);
        changed_at.push(c[0].median);
        let under = |x: f64| x < 10_000.0;
        rows.push(
            Row::new(
                format!(
                    "{n} secrets: µs per GET, plugin vs native (body {:.0} KiB)",
                    body as f64 / 1024.0
                ),
                fmt_spread(s[0], 0, ""),
            )
            .reference(fmt_spread(s[1], 0, ""))
            .target("< 10 ms", under(s[0].max)),
        );
        rows.push(
            Row::new(
                format!("{n} secrets: µs per first GET after a change, plugin vs native"),
                fmt_spread(c[0], 0, ""),
            )
            .reference(fmt_spread(c[1], 0, ""))
            .target("< 10 ms", under(c[0].max)),
        );
    }
    // Per-key cost at 10,000 relative to 1,000: ≤ 1 is at most linear.
    for (label, at) in [("steady", &steady_at), ("after a change", &changed_at)] {
        let per_key = (at[2] / 10_000.0) / (at[1] / 1_000.0);
        rows.push(
            Row::new(
                format!(
                    "growth 1,000 → 10,000 secrets ({label}): time ×{:.1} for keys ×10",
                    at[2] / at[1]
                ),
                format!("{:.2} per-key cost ratio", per_key),
            )
            .target("≤ 1 (linear), +15% noise", per_key <= 1.15),
        );
    }
    Ok(rows)
}
