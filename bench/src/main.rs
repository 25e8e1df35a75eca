//! The benchmark suite: one run, one table.
//!
//! 1. Bridge overhead: `GET /api/secrets` through the loaded plugin library
//!    vs. the same poem-openapi handler linked natively, served side by side
//!    in this process, loaded by one load generator on loopback in
//!    alternating rounds.
//! 2. Catalog growth: server time per `GET` (in-process) for 100, 1,000 and
//!    10,000 declared secrets.
//! 3. Durable writes: `PUT` latency vs. the physical floor (temp file,
//!    write, fsync, rename, folder fsync of the same file), and `PUT`
//!    throughput from 32 clients vs. 1.
//! 4. Start-up: exec of the release `demo-host` to the first 200 on
//!    `/api/secrets`, and the plugin load time it logs.
//! 5. Memory: resident set of that host idle and after load.
//! 6. Hostile connections: what that host serves to well-behaved clients
//!    while 1,000 silent or trickling connections are open, how long it
//!    keeps them, and a new client's wait past the connection cap.
//! 7. Start-up isolation: exec to listening with 1, 5 and 20 libraries
//!    (one with an aborting constructor), cold (every library probed in a
//!    child process) and warm (probe results from the cache).
//! 8. Live plugin adds: a library dropped into the folder of a running
//!    host to the first 200 on its route, over 20 drops.
//!
//! Run it through `scripts/bench.sh` (release build). `bench profile` runs
//! in-process requests only, for `valgrind --tool=callgrind`.
//!
//! This file holds the command line and the dispatch; each section lives in
//! its own module.

mod bridge;
mod catalog;
mod connections;
mod context;
mod fleet;
mod growth;
mod hosts;
mod in_process;
mod isolation;
mod live;
mod memory;
mod profile;
mod report;
mod startup;
mod writes;

use std::{path::PathBuf, time::Instant};

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::context::Ctx;

#[derive(Parser)]
#[command(about = "Benchmarks of the demo host and the secrets plugin (release build)")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Measured rounds per comparison (A/B order alternates).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per load round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrent connections of the GET load.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Host processes started for the start-up figures.
    #[arg(long, default_value_t = 10)]
    startup_rounds: usize,
    /// Sections to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// The plugin library (default: next to this executable).
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// The `demo-host` executable (default: next to this executable).
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// Folder for config files and plugin copies (default: the system
    /// temp folder). Durable-write figures are those of its disk.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// In-process requests only, no network: a steady workload for
    /// `valgrind --tool=callgrind` (instruction counts per request).
    Profile {
        /// What to call.
        #[arg(long, value_enum, default_value_t = ProfileMode::Bridge)]
        mode: ProfileMode,
        /// Requests to make.
        #[arg(long, default_value_t = 2000)]
        requests: u64,
        /// Declared secrets of a generated catalog (default: Milady's catalog).
        #[arg(long)]
        keys: Option<usize>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileMode {
    /// `GET` through the loaded plugin.
    Bridge,
    /// `GET` through the natively linked handler.
    Native,
    /// `GET` through the plugin, after an environment change each time.
    Changed,
    /// `PUT` through the plugin (includes the durable write).
    Put,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Section {
    Bridge,
    Growth,
    Writes,
    Startup,
    Connections,
    Isolation,
    Live,
    Fleet,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Profile {
            mode,
            requests,
            keys,
        }) => profile::profile(&args, mode, requests, keys),
        None => run_all(args),
    }
}

fn run_all(args: Args) -> Result<()> {
    let ctx = Ctx::new(args)?;
    let sections: Vec<Section> = if ctx.args.only.is_empty() {
        vec![
            Section::Bridge,
            Section::Growth,
            Section::Writes,
            Section::Startup,
            Section::Connections,
            Section::Isolation,
            Section::Live,
            Section::Fleet,
        ]
    } else {
        ctx.args.only.clone()
    };

    let header = report::header(&ctx);
    for line in &header {
        eprintln!("{line}");
    }

    let mut table = Vec::new();
    for section in sections {
        let started = Instant::now();
        let (title, rows) = match section {
            Section::Bridge => (
                "1. Bridge overhead (GET /api/secrets over loopback HTTP)",
                bridge::bridge(&ctx)?,
            ),
            Section::Growth => (
                "2. Catalog growth (server time per GET, in-process)",
                growth::growth(&ctx)?,
            ),
            Section::Writes => (
                "3. Durable writes (PUT /api/secrets over loopback HTTP)",
                writes::writes(&ctx)?,
            ),
            Section::Startup => (
                "4–5. Start-up and memory (release demo-host process)",
                startup::startup(&ctx)?,
            ),
            Section::Connections => (
                "6. Hostile connections (release demo-host process, default limits)",
                connections::connections(&ctx)?,
            ),
            Section::Isolation => (
                "7. Start-up isolation (release demo-host process, cold and warm probe cache)",
                isolation::isolation(&ctx)?,
            ),
            Section::Live => (
                "8. Live plugin adds (release demo-host process)",
                live::live(&ctx)?,
            ),
            Section::Fleet => (
                "9. A fleet on OpenBao (release demo-host processes, bao server -dev)",
                fleet::fleet(&ctx)?,
            ),
        };
        eprintln!("{title}: {:.1} s", started.elapsed().as_secs_f64());
        table.push((title.to_owned(), rows));
    }

    let text = report::render(&header, &table);
    println!("{text}");
    if let Some(path) = &ctx.args.markdown {
        std::fs::write(path, &text)?;
    }
    Ok(())
}
