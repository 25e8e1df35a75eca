//! `soak`: the soak tool. Starts the real host on loopback, sends mixed
//! GET/PUT/toggle traffic from many connections for `--seconds` (default
//! 60), stops the host, and prints the figures: requests, errors (must be
//! 0), lost updates (must be 0), latency, resident memory before/after.
//!
//! ```text
//! cargo run -p e2e-tests --bin soak -- [--seconds N] [--connections N]
//! ```

#[allow(dead_code)] // shared with the crash tool
mod child_host;
mod soak_check;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

#[tokio::main]
async fn main() -> Result<()> {
    let mut settings = soak_check::Settings {
        duration: Duration::from_secs(60),
        connections: 32,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => settings.duration = Duration::from_secs(value()?.parse()?),
            "--connections" => settings.connections = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    // Bounded: at most ten minutes of traffic.
    settings.duration = settings.duration.min(Duration::from_secs(600));
    let report = soak_check::run(&settings).await?;
    println!("{report}");
    Ok(())
}
