//! Section 5, memory: the resident set of a started `demo-host` idle, then
//! after a GET load round and one second of 32-client PUTs.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result, ensure};
use bench::{
    load::{self, Load, Requests},
    process,
};

use crate::{context::Ctx, report::Row, startup::Started};

/// The host's memory idle, then after the load runs.
pub(crate) fn under_load(ctx: &Ctx, s: &Started) -> Result<(process::Memory, process::Memory)> {
    let pid = s.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let idle = process::memory(pid).context("cannot read the host's memory")?;
    let get: Arc<[u8]> = Arc::from(load::request("GET", s.addr, "/api/secrets", None));
    let r = ctx.load(&Load {
        addr: s.addr,
        connections: ctx.args.connections,
        duration: ctx.round(),
        max_per_connection: 10_000_000,
        requests: Requests::Fixed(get),
    })?;
    ensure!(r.errors == 0, "{} GETs failed", r.errors);
    let keys = Arc::new(ctx.catalog.keys.clone());
    let addr = s.addr;
    let r = ctx.load(&Load {
        addr,
        connections: 32,
        duration: Duration::from_secs(1),
        max_per_connection: 1000,
        requests: Requests::Generated(Arc::new(move |conn, seq| {
            let key = &keys[conn % keys.len()];
            let body = format!(
                r#"{{"secrets":{{"{key}":"memory-value-{conn:02}-{seq:08}-abcdefghijklmnop"}}}}"#
            );
            load::request("PUT", addr, "/api/secrets", Some(body.as_bytes()))
        })),
    })?;
    ensure!(r.errors == 0, "{} PUTs failed", r.errors);
    std::thread::sleep(Duration::from_millis(300));
    let after = process::memory(pid).context("cannot read the host's memory")?;
    Ok((idle, after))
}

/// The table rows of the two memory figures, in MiB.
pub(crate) fn rows(idle: process::Memory, after: process::Memory) -> Vec<Row> {
    let mib = |k: u64| k as f64 / 1024.0;
    vec![
        Row::new(
            "RSS idle, plugin loaded, MiB",
            format!("{:.1}", mib(idle.rss_kib)),
        ),
        Row::new(
            "RSS after the load runs (GET + 32-client PUT), MiB",
            format!(
                "{:.1} (peak {:.1})",
                mib(after.rss_kib),
                mib(after.peak_kib)
            ),
        ),
    ]
}
