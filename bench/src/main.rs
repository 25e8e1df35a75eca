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
//!
//! Run it through `scripts/bench.sh` (release build). `bench profile` runs
//! in-process requests only, for `valgrind --tool=callgrind`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use bench::{
    disk,
    load::{self, Load, Requests},
    process,
    stats::{Spread, percentile},
};
use clap::{Parser, Subcommand, ValueEnum};
use demo_host::{ConfigStore, Host, HostOptions, HostServices};
use poem::{Endpoint, IntoEndpoint, Server, listener::Acceptor as _, listener::Listener as _};
use tokio::runtime::Runtime;

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
}

/// One line of the table.
struct Row {
    measure: String,
    value: String,
    reference: String,
    ratio: String,
    target: String,
    met: String,
}

impl Row {
    fn new(measure: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            measure: measure.into(),
            value: value.into(),
            reference: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: String::new(),
        }
    }

    fn reference(mut self, r: impl Into<String>) -> Self {
        self.reference = r.into();
        self
    }

    fn ratio(mut self, r: Spread) -> Self {
        self.ratio = fmt_spread(r, 2, "×");
        self
    }

    fn target(mut self, t: impl Into<String>, met: bool) -> Self {
        self.target = t.into();
        self.met = if met { "yes" } else { "**no**" }.into();
        self
    }
}

fn fmt_spread(s: Spread, decimals: usize, unit: &str) -> String {
    format!(
        "{:.d$}{unit} [{:.d$}–{:.d$}]",
        s.median,
        s.min,
        s.max,
        d = decimals
    )
}

/// A catalog and its sensitive keys.
struct Catalog {
    path: PathBuf,
    label: String,
    keys: Vec<String>,
}

struct Ctx {
    args: Args,
    server: Runtime,
    client: Runtime,
    plugin_lib: PathBuf,
    host_bin: PathBuf,
    work: tempfile::TempDir,
    catalog: Catalog,
    copies: AtomicUsize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Profile {
            mode,
            requests,
            keys,
        }) => profile(&args, mode, requests, keys),
        None => run_all(args),
    }
}

fn beside_exe(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("the executable has no folder")?
        .join(name))
}

fn lib_file_name() -> String {
    format!(
        "{}secrets_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

fn work_dir(args: &Args) -> Result<tempfile::TempDir> {
    Ok(match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new()
                .prefix("milady-bench-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("milady-bench-").tempdir()?,
    })
}

/// Milady's real catalog when present, else a generated one of similar size.
fn main_catalog(work: &Path) -> Result<Catalog> {
    if let Some(path) = e2e_tests::milady_catalog() {
        let keys = sensitive_keys(&path)?;
        let label = format!("Milady's catalog ({} sensitive keys)", keys.len());
        return Ok(Catalog { path, label, keys });
    }
    let path = work.join("generated-104.json");
    e2e_tests::write_catalog(&path, 104, 1)?;
    let keys = sensitive_keys(&path)?;
    Ok(Catalog {
        path,
        label: format!(
            "a generated catalog of 104 plugins, {} sensitive keys (Milady's catalog is absent)",
            keys.len()
        ),
        keys,
    })
}

/// Every key some plugin of the catalog declares as sensitive, sorted.
fn sensitive_keys(path: &Path) -> Result<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let mut keys = std::collections::BTreeSet::new();
    for plugin in doc["plugins"].as_array().context("no plugins array")? {
        if let Some(params) = plugin["pluginParameters"].as_object() {
            for (key, spec) in params {
                if spec["sensitive"].as_bool() == Some(true) {
                    keys.insert(key.clone());
                }
            }
        }
    }
    Ok(keys.into_iter().collect())
}

/// The process environment handed to every host: half of the secrets set,
/// with short, medium and long values (all redaction paths), plus a few
/// ordinary variables.
fn bench_env(keys: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("LANG".into(), "C.UTF-8".into()),
        ("TERM".into(), "xterm".into()),
    ];
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let len = [10, 20, 48][i % 3];
        let value: String = format!("sk-bench-{i:06}-")
            .chars()
            .chain(std::iter::repeat('x'))
            .take(len)
            .collect();
        env.push((key.clone(), value));
    }
    env
}

impl Ctx {
    /// A host with its own config file (the host's starter file) and, if
    /// `with_plugin`, its own copy of the plugin library.
    fn host(&self, name: &str, with_plugin: bool, catalog: &Path, keys: &[String]) -> Result<Host> {
        build_host(
            &self.work.path().join(name),
            with_plugin.then_some(self.plugin_lib.as_path()),
            catalog,
            &bench_env(keys),
            &self.copies,
        )
    }

    fn serve<E>(&self, ep: E) -> Result<SocketAddr>
    where
        E: IntoEndpoint + Send + 'static,
        E::Endpoint: 'static,
    {
        let acceptor = self
            .server
            .block_on(poem::listener::TcpListener::bind("127.0.0.1:0").into_acceptor())?;
        let addr = acceptor
            .local_addr()
            .into_iter()
            .find_map(|a| a.as_socket_addr().copied())
            .context("no local address")?;
        self.server
            .spawn(Server::new_with_acceptor(acceptor).run(ep));
        Ok(addr)
    }

    fn load(&self, load: &Load) -> Result<load::LoadResult> {
        self.client.block_on(load::run(load))
    }

    fn round(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds)
    }
}

fn build_host(
    dir: &Path,
    plugin: Option<&Path>,
    catalog: &Path,
    env: &[(String, String)],
    copies: &AtomicUsize,
) -> Result<Host> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("milady.toml");
    ConfigStore::new(&config).create_default_if_missing()?;
    let mut options = HostOptions::new(&config);
    options.catalogs = vec![catalog.to_owned()];
    if let Some(lib) = plugin {
        // Each host loads its own copy: the library keeps its endpoint in a
        // static, and a copy is a separate load with its own statics.
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        copies.fetch_add(1, Ordering::Relaxed);
        std::fs::copy(lib, plugins.join(lib_file_name()))
            .with_context(|| format!("copying the plugin library {}", lib.display()))?;
        options.plugins_dir = Some(plugins);
    }
    let host = Host::build(options, env.to_vec())?;
    if plugin.is_some() && host.plugins.is_empty() {
        let reasons: Vec<&str> = host.skipped.iter().map(|s| s.reason.as_str()).collect();
        bail!("the plugin did not load: {reasons:?}");
    }
    Ok(host)
}

fn native_endpoint(host: &Host) -> Vec<(String, poem::endpoint::BoxEndpoint<'static>)> {
    let services = HostServices::new(host.registry.clone(), host.env.clone(), "native");
    let inner = secrets_plugin::endpoint(services.into_box());
    vec![(secrets_plugin::ROUTE.into(), inner)]
}

fn run_all(args: Args) -> Result<()> {
    let plugin_lib = match &args.plugin {
        Some(p) => p.clone(),
        None => beside_exe(&lib_file_name())?,
    };
    let host_bin = match &args.host_bin {
        Some(p) => p.clone(),
        None => beside_exe(&format!("demo-host{}", std::env::consts::EXE_SUFFIX))?,
    };
    for path in [&plugin_lib, &host_bin] {
        ensure!(
            path.is_file(),
            "{} is missing: build with `cargo build --release -p secrets-plugin -p demo-host -p bench`",
            path.display()
        );
    }
    let work = work_dir(&args)?;
    let catalog = main_catalog(work.path())?;
    let sections: Vec<Section> = if args.only.is_empty() {
        vec![
            Section::Bridge,
            Section::Growth,
            Section::Writes,
            Section::Startup,
        ]
    } else {
        args.only.clone()
    };
    let ctx = Ctx {
        server: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-server")
            .build()?,
        client: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        plugin_lib,
        host_bin,
        work,
        catalog,
        copies: AtomicUsize::new(0),
        args,
    };

    let mut header = machine();
    header.push(format!(
        "catalog: {}; config files on {}",
        ctx.catalog.label,
        filesystem_of(ctx.work.path())
    ));
    header.push(format!(
        "rounds: {} × {} s per load round, A/B order alternating; GET load: {} keep-alive connections; figures are median [min–max] over rounds",
        ctx.args.rounds, ctx.args.seconds, ctx.args.connections
    ));
    for line in &header {
        eprintln!("{line}");
    }

    let mut table: Vec<(String, Vec<Row>)> = Vec::new();
    for section in sections {
        let started = Instant::now();
        let (title, rows) = match section {
            Section::Bridge => (
                "1. Bridge overhead (GET /api/secrets over loopback HTTP)",
                bridge(&ctx)?,
            ),
            Section::Growth => (
                "2. Catalog growth (server time per GET, in-process)",
                growth(&ctx)?,
            ),
            Section::Writes => (
                "3. Durable writes (PUT /api/secrets over loopback HTTP)",
                writes(&ctx)?,
            ),
            Section::Startup => (
                "4–5. Start-up and memory (release demo-host process)",
                startup(&ctx)?,
            ),
        };
        eprintln!("{title}: {:.1} s", started.elapsed().as_secs_f64());
        table.push((title.to_owned(), rows));
    }

    let text = render(&header, &table);
    println!("{text}");
    if let Some(path) = &ctx.args.markdown {
        std::fs::write(path, &text)?;
    }
    Ok(())
}

fn render(header: &[String], table: &[(String, Vec<Row>)]) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str(&format!("- {line}\n"));
    }
    out.push('\n');
    out.push_str("| measure | measured | reference | ratio | target | met |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for (title, rows) in table {
        out.push_str(&format!("| **{title}** | | | | | |\n"));
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.measure, r.value, r.reference, r.ratio, r.target, r.met
            ));
        }
    }
    out
}

fn machine() -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    vec![format!("machine: {cores} cores ({cpu}), Linux {kernel}")]
}

/// The type and device of the filesystem holding `path` (from the mount table).
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at)
                .then(|| (at.len(), format!("{kind} ({dev})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "an unknown filesystem".into(), |(_, d)| d)
}

// ---------------------------------------------------------------- 1. bridge

fn bridge(ctx: &Ctx) -> Result<Vec<Row>> {
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
    ensure!(
        replies[0].body == replies[1].body,
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

// ---------------------------------------------------------------- 2. growth

/// An endpoint called in-process, as the server would call it.
type Ep = Box<dyn Fn(poem::Request) -> BoxFut + Send + Sync>;
type BoxFut = std::pin::Pin<Box<dyn std::future::Future<Output = poem::Response> + Send>>;

fn boxed<E: Endpoint + 'static>(ep: E) -> Ep {
    let ep = Arc::new(ep);
    Box::new(move |req| {
        let ep = Arc::clone(&ep);
        Box::pin(async move { ep.get_response(req).await })
    })
}

fn get_request() -> poem::Request {
    poem::Request::builder()
        .uri_str("/api/secrets")
        .header("host", "127.0.0.1:2138")
        .header("accept", "application/json")
        .finish()
}

/// One in-process GET: the handler's response with its body collected
/// (zero-copy for a buffered body), as the server would write it.
async fn one_get(ep: &Ep) -> Result<usize> {
    let resp = ep(get_request()).await;
    ensure!(resp.status() == 200, "GET answered {}", resp.status());
    Ok(resp.into_body().into_bytes().await?.len())
}

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

fn growth(ctx: &Ctx) -> Result<Vec<Row>> {
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

// ---------------------------------------------------------------- 3. writes

fn writes(ctx: &Ctx) -> Result<Vec<Row>> {
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
    let addr = ctx.serve(host.endpoint())?;
    let keys = Arc::new(keys);
    let make = {
        let keys = Arc::clone(&keys);
        move |conn: usize, seq: u64| {
            let key = &keys[conn % keys.len()];
            let body = format!(
                r#"{{"secrets":{{"{key}":"bench-value-{conn:02}-{seq:08}-abcdefghijklmnop"}}}}"#
            );
            load::request("PUT", addr, "/api/secrets", Some(body.as_bytes()))
        }
    };
    let put = |clients: usize| Load {
        addr,
        connections: clients,
        duration: ctx.round(),
        max_per_connection: 100_000,
        requests: Requests::Generated(Arc::new(make.clone())),
    };
    let (one, many) = (put(1), put(32));
    ctx.load(&Load {
        duration: Duration::from_millis(300),
        ..many.clone()
    })?;
    let config = ctx.work.path().join("writes").join("milady.toml");

    let (mut put_p50, mut put_p99, mut floor_p50, mut floor_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tput1, mut tput32, mut floor_rate) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r_p50, mut r_p99, mut r_tput) = (Vec::new(), Vec::new(), Vec::new());
    let mut writes_per_put = Vec::new();
    for round in 0..ctx.args.rounds {
        let mut steps = [0, 1, 2];
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
                _ => {
                    let commits = host.env.commits();
                    let r = ctx.load(&many)?;
                    ensure!(r.errors == 0, "{} PUTs failed", r.errors);
                    tput32.push(r.rate());
                    writes_per_put.push((host.env.commits() - commits) as f64 / r.ok.max(1) as f64);
                }
            }
        }
        let last = |v: &Vec<f64>| v.last().copied().unwrap_or(f64::NAN);
        r_p50.push(last(&put_p50) / last(&floor_p50));
        r_p99.push(last(&put_p99) / last(&floor_p99));
        r_tput.push(last(&tput32) / last(&tput1));
    }
    let (p50, p99) = (Spread::of(&r_p50), Spread::of(&r_p99));
    Ok(vec![
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
            "durable replaces/s of the floor (1 writer)",
            fmt_spread(Spread::of(&floor_rate), 0, ""),
        ),
    ])
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

// ---------------------------------------------------------- 4–5. start-up

struct Started {
    child: std::process::Child,
    addr: SocketAddr,
    listening: Duration,
    ready: Duration,
    log: Arc<Mutex<String>>,
}

fn start_host(ctx: &Ctx, dir: &Path, plugins: &Path) -> Result<Started> {
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

fn stop(mut s: Started) -> Result<String> {
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

fn plugin_load_us(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("plugin loaded"))?;
    let rest = line.split("elapsed_us=").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn startup(ctx: &Ctx) -> Result<Vec<Row>> {
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
            memory = Some(memory_under_load(ctx, &s)?);
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
        let mib = |k: u64| k as f64 / 1024.0;
        rows.push(Row::new(
            "RSS idle, plugin loaded, MiB",
            format!("{:.1}", mib(idle.rss_kib)),
        ));
        rows.push(Row::new(
            "RSS after the load runs (GET + 32-client PUT), MiB",
            format!(
                "{:.1} (peak {:.1})",
                mib(after.rss_kib),
                mib(after.peak_kib)
            ),
        ));
    }
    Ok(rows)
}

fn memory_under_load(ctx: &Ctx, s: &Started) -> Result<(process::Memory, process::Memory)> {
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

// ---------------------------------------------------------------- profile

fn profile(args: &Args, mode: ProfileMode, requests: u64, keys: Option<usize>) -> Result<()> {
    let work = work_dir(args)?;
    let catalog = match keys {
        Some(n) => {
            let path = work.path().join("catalog.json");
            e2e_tests::write_catalog(&path, n.div_ceil(10), 10.min(n))?;
            path
        }
        None => main_catalog(work.path())?.path,
    };
    let keys = sensitive_keys(&catalog)?;
    let plugin_lib = match &args.plugin {
        Some(p) => p.clone(),
        None => beside_exe(&lib_file_name())?,
    };
    let copies = AtomicUsize::new(0);
    let host = build_host(
        &work.path().join("host"),
        (mode != ProfileMode::Native).then_some(plugin_lib.as_path()),
        &catalog,
        &bench_env(&keys),
        &copies,
    )?;
    let ep = match mode {
        ProfileMode::Native => boxed(host.endpoint_with_native(native_endpoint(&host))),
        _ => boxed(host.endpoint()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    for i in 0..requests {
        match mode {
            ProfileMode::Put => {
                let body = format!(
                    r#"{{"secrets":{{"{}":"profile-value-{i:08}-abcdefghijklmnop"}}}}"#,
                    keys[0]
                );
                let req = poem::Request::builder()
                    .method(poem::http::Method::PUT)
                    .uri_str("/api/secrets")
                    .header("host", "127.0.0.1:2138")
                    .header("content-type", "application/json")
                    .body(body);
                let resp = rt.block_on(ep(req));
                ensure!(resp.status() == 200, "PUT answered {}", resp.status());
            }
            ProfileMode::Changed => {
                host.env
                    .update_blocking(
                        &[host_api::EnvChange {
                            key: keys[0].as_str().into(),
                            value: abi_stable::std_types::RSome(
                                format!("profile-{i:08}-abcdefghijklmnop").into(),
                            ),
                        }],
                        None,
                    )
                    .map_err(|e| anyhow::anyhow!("env update failed: {}", e.message))?;
                rt.block_on(one_get(&ep))?;
            }
            _ => {
                rt.block_on(one_get(&ep))?;
            }
        }
    }
    eprintln!(
        "{requests} requests in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
