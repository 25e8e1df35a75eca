//! `demo-host`: the command-line entry point. Parses flags, sets up logging,
//! assembles the [`demo_host::Host`] and serves it until SIGINT/SIGTERM;
//! `demo-host plugin ...` checks, lists and installs plugin libraries.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use demo_host::{DEFAULT_BODY_LIMIT, Host, HostOptions, TOKEN_ENV, plugin_commands as plugin_cli};
use poem::{
    Server,
    listener::{Acceptor, Listener, TcpListener},
};

/// A Milady-like agent host that loads stable-ABI plugins from a folder.
///
/// With no command it serves the API: the host routes (/api/plugins,
/// /api/health), every plugin's routes (e.g. /api/secrets), the merged
/// OpenAPI document at /openapi.json and Swagger UI at /docs. On the first
/// run it creates a commented config file at the --config path.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_help = ENVIRONMENT_HELP,
    after_long_help = ENVIRONMENT_HELP
)]
struct Cli {
    /// The TOML config file [default: ~/.milady/milady.toml]
    ///
    /// Secrets live in [env], plugin switches in [plugins.entries."<id>"]
    /// enabled = true|false. Created (mode 0600, with comments) when missing.
    #[arg(long, value_name = "PATH", env = "MILADY_CONFIG_PATH", global = true)]
    config: Option<PathBuf>,

    /// The plugin folder [default: ~/.milady/plugins]
    ///
    /// Every library in it is loaded at start-up; `plugin install` copies
    /// into it and `plugin list` reads it.
    #[arg(long, value_name = "DIR", global = true)]
    plugins_dir: Option<PathBuf>,

    /// An extra plugin catalog in Milady's plugins.json format (repeatable)
    ///
    /// Its plugins join the registry; their sensitive parameters become
    /// secrets the API lists and writes.
    #[arg(long = "catalog", value_name = "FILE", global = true)]
    catalogs: Vec<PathBuf>,

    /// The address to listen on; port 0 picks a free port
    ///
    /// A non-loopback address without MILADY_API_TOKEN gets a random token,
    /// printed once on stdout.
    #[arg(
        long,
        value_name = "ADDR",
        env = "MILADY_API_BIND",
        default_value = "127.0.0.1:2138",
        global = true
    )]
    bind: SocketAddr,

    /// The largest request body accepted, in bytes (larger: 413)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT, global = true)]
    body_limit: usize,

    /// The format of the log on stderr
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The environment variables, shown at the end of `--help`.
const ENVIRONMENT_HELP: &str = "\
Environment:
  MILADY_CONFIG_PATH  The config file (same as --config; the flag wins)
  MILADY_API_BIND     The listen address (same as --bind; the flag wins)
  MILADY_API_TOKEN    When set, every /api/* route requires it as
                      `Authorization: Bearer <token>`, `X-Milady-Token` or
                      `X-Api-Key`; it is never written by the API
  RUST_LOG            Log filter, e.g. `debug` or `demo_host=trace` [default: info]
  NO_COLOR            When set, pretty logs have no colours
  HOME                Where the default ~/.milady folder lives

The host's runtime environment (what plugins read) is the process environment
at start-up, then the config file's [env] for keys the process does not set.

Examples:
  demo-host                                  serve on 127.0.0.1:2138
  demo-host plugin install ./libhello_plugin.so
  demo-host plugin list
  demo-host openapi > openapi.json";

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the merged OpenAPI document (host + loaded plugins) and exit.
    Openapi,
    /// Check, list and install plugin libraries (see `demo-host plugin --help`).
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Check a plugin library and copy it into the plugin folder.
    ///
    /// The file is loaded in a separate process (a broken library cannot
    /// harm a running host), then its id and routes are compared with the
    /// installed plugins'. If all is well it is copied in atomically
    /// (temporary file, sync, rename); restart the host to load it.
    /// Otherwise nothing is copied and the reason is printed (exit status 1).
    Install {
        /// The library to install (a .so / .dylib / .dll built as a cdylib
        /// against host-api).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Replace an installed plugin with the same id (an upgrade).
        #[arg(long)]
        replace: bool,
    },
    /// List every library in the plugin folder: id, version, host-api
    /// version, compatibility, and why the host would skip it.
    List {
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check one library in this process and print a JSON report (used by
    /// `install` and `list`, which run it as a child process).
    #[command(hide = true)]
    Probe {
        /// The library to check.
        path: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, and never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Err(e) = run(cli) {
        // One clear line, not a backtrace.
        eprintln!("demo-host: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| home_dir().join(".milady").join("milady.toml"));
    let plugins_dir = cli
        .plugins_dir
        .clone()
        .unwrap_or_else(|| home_dir().join(".milady").join("plugins"));
    if let Some(Command::Plugin(command)) = &cli.command {
        return plugin_command(command, &plugins_dir);
    }
    let mut token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let serving = !matches!(cli.command, Some(Command::Openapi));
    if serving && token.is_none() && !cli.bind.ip().is_loopback() {
        let generated = generate_token()?;
        // Printed once, on stdout only, so the operator can use it.
        println!(
            "No {TOKEN_ENV} set and binding to a non-loopback address: generated API token: {generated}"
        );
        token = Some(generated);
    }
    let options = HostOptions {
        config_path,
        plugins_dir: Some(plugins_dir),
        catalogs: cli.catalogs.clone(),
        token,
        body_limit: cli.body_limit,
        loopback_only: cli.bind.ip().is_loopback(),
    };
    if serving {
        let store = demo_host::ConfigStore::new(&options.config_path);
        if store.create_default_if_missing()? {
            tracing::info!(path = %options.config_path.display(), "created a starter config file");
        }
    }
    let host = Host::build(options, std::env::vars())?;
    match cli.command {
        Some(Command::Openapi) => {
            println!("{}", serde_json::to_string_pretty(&host.openapi)?);
            Ok(())
        }
        None | Some(Command::Serve) => serve(host, cli.bind),
        Some(Command::Plugin(_)) => unreachable!("handled before the host is built"),
    }
}

fn plugin_command(command: &PluginCommand, plugins_dir: &Path) -> anyhow::Result<()> {
    match command {
        PluginCommand::Probe { path } => {
            let report = plugin_cli::probe_here(path);
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        PluginCommand::List { json } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let listed = plugin_cli::list(&exe, plugins_dir)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print!("{}", plugin_cli::render_list(plugins_dir, &listed));
            }
            Ok(())
        }
        PluginCommand::Install { path, replace } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let done = plugin_cli::install(&exe, plugins_dir, path, *replace)
                .with_context(|| format!("not installed: {}", path.display()))?;
            let r = &done.report;
            let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
            println!(
                "installed {} {} (host-api {}) as {}",
                or_unknown(&r.id),
                or_unknown(&r.version),
                or_unknown(&r.interface),
                done.path.display()
            );
            if let Some(old) = &done.replaced {
                println!("replaced the previous version in {}", old.display());
            }
            println!("routes: {}", r.routes.join(", "));
            println!(
                "restart demo-host to load it (plugins are loaded at start-up, never reloaded)"
            );
            Ok(())
        }
    }
}

fn generate_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot generate a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn serve(host: Host, bind: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Registered before the address is printed, so a signal sent as soon
        // as the host is seen listening still shuts it down gracefully.
        let shutdown = shutdown_signal()?;
        let acceptor = TcpListener::bind(bind)
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        for addr in acceptor.local_addr() {
            if let Some(addr) = addr.as_socket_addr() {
                println!("demo-host listening on http://{addr}");
            }
        }
        tracing::info!(
            plugins = host.plugins.len(),
            skipped = host.skipped.len(),
            "serving; open /docs for the API"
        );
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(host.endpoint(), shutdown, Some(Duration::from_secs(5)))
            .await
            .context("server failed")?;
        host.shutdown_plugins();
        tracing::info!("shut down");
        Ok(())
    })
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
