//! `crash-test`: the crash-safety tool. Starts the real host, fires PUTs
//! from several connections and kills it with SIGKILL at a random moment,
//! `--iterations` times (default 200), checking the config file after every
//! kill; then kills `demo-host secrets rotate-key` at random moments of its
//! run, `--rotation-iterations` times (default 100), checking that every
//! value stays readable with the key files. Prints the figures; exits
//! non-zero on the first broken property.
//!
//! ```text
//! cargo run -p e2e-tests --bin crash-test -- [--iterations N] [--rotation-iterations N]
//!     [--seed S] [--max-delay-ms MS]
//! ```

#[allow(dead_code)] // shared with the soak tool
mod child_host;
mod crash_audit;
mod crash_check;
mod rotation_check;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

#[tokio::main]
async fn main() -> Result<()> {
    let mut settings = crash_check::Settings {
        iterations: 200,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        max_kill_delay: Duration::from_millis(250),
    };
    let mut rotations = 100;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--iterations" => settings.iterations = value()?.parse()?,
            "--rotation-iterations" => rotations = value()?.parse()?,
            "--seed" => {
                let v = value()?;
                settings.seed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16)?,
                    None => v.parse()?,
                };
            }
            "--max-delay-ms" => {
                settings.max_kill_delay = Duration::from_millis(value()?.parse()?);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let report = crash_check::run(&settings).await?;
    println!("{report}");
    let report = rotation_check::run(&rotation_check::Settings {
        iterations: rotations,
        seed: settings.seed,
    })
    .await?;
    println!("{report}");
    Ok(())
}
