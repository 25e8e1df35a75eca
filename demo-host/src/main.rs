//! `demo-host`: the command-line entry point. Parses flags, sets up logging,
//! assembles the [`demo_host::app::Host`] and serves it until SIGINT/SIGTERM.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use demo_host::app::{DEFAULT_BODY_LIMIT, Host, HostOptions, TOKEN_ENV};
use poem::{
    Server,
    listener::{Acceptor, Listener, TcpListener},
};

/// A Milady-like agent host that loads stable-ABI plugins from a folder.
///
/// Environment: MILADY_CONFIG_PATH (same as --config), MILADY_API_BIND (same
/// as --bind), MILADY_API_TOKEN (when set, every /api/* route requires it as
/// `Authorization: Bearer <token>`, `X-Milady-Token` or `X-Api-Key`),
/// RUST_LOG (log filter, default `info`).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// The TOML config file ([env] secrets, [plugins.entries."<id>"] enabled).
    /// Default: ~/.milady/milady.toml
    #[arg(long, env = "MILADY_CONFIG_PATH", global = true)]
    config: Option<PathBuf>,

    /// The folder plugin libraries are loaded from. Default: ~/.milady/plugins
    #[arg(long, global = true)]
    plugins_dir: Option<PathBuf>,

    /// An extra plugin catalog in Milady's plugins.json format (repeatable).
    #[arg(long = "catalog", global = true)]
    catalogs: Vec<PathBuf>,

    /// The address to listen on; port 0 picks a free port.
    #[arg(
        long,
        env = "MILADY_API_BIND",
        default_value = "127.0.0.1:2138",
        global = true
    )]
    bind: SocketAddr,

    /// Request-body limit in bytes.
    #[arg(long, default_value_t = DEFAULT_BODY_LIMIT, global = true)]
    body_limit: usize,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the merged OpenAPI document (host + loaded plugins) and exit.
    Openapi,
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        let store = demo_host::config_store::ConfigStore::new(&options.config_path);
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
