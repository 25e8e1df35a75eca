//! `demo-host`: the command-line entry point. Parses flags, sets up logging,
//! assembles the [`demo_host::Host`] and serves it until SIGINT/SIGTERM;
//! `demo-host plugin ...` checks, lists and installs plugin libraries;
//! `demo-host secrets ...` encrypts, re-keys and imports stored secrets.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use demo_host::{
    ALLOWED_ORIGINS_ENV, BoundaryOptions, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT,
    DEFAULT_PLUGIN_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Host, HostOptions, TOKEN_ENV,
    plugin_commands as plugin_cli,
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

    /// How long a connection may take to send a complete request head, in
    /// seconds (from the accept, or from the first byte of a later request);
    /// a connection that sends nothing or trickles is closed
    #[arg(long, value_name = "SECS", default_value_t = demo_host::DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    header_read_timeout: u64,

    /// How long a keep-alive connection may stay open with no request in
    /// progress, in seconds
    #[arg(long, value_name = "SECS", default_value_t = demo_host::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    idle_timeout: u64,

    /// The most connections open at once; past it new connections wait
    /// until one closes (logged once)
    #[arg(long, value_name = "N", default_value_t = demo_host::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), global = true)]
    max_connections: u64,

    /// The longest value the API may write to a secret or variable, in
    /// bytes (longer: refused with its own reason)
    #[arg(long, value_name = "BYTES", default_value_t = demo_host::DEFAULT_MAX_VALUE_BYTES, global = true)]
    max_value_bytes: usize,

    /// Skip the ownership and permission checks of the config file, the
    /// plugin folder and its libraries (files writable by group or others,
    /// owned by another user, or reached through another user's link)
    ///
    /// For unusual set-ups only: on a shared machine these checks keep other
    /// users from replacing the config or planting a library. Special files
    /// (FIFOs, devices) are refused and reads bounded all the same.
    #[arg(long, env = "MILADY_NO_STRICT_MODES", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    no_strict_modes: bool,

    /// The largest request body accepted, in bytes (larger: 413)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT, global = true)]
    body_limit: usize,

    /// How long checking (in a child process), loading and initialising
    /// one plugin library may take, in seconds; past it the library is skipped
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PLUGIN_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS), global = true)]
    plugin_timeout: u64,

    /// How long a plugin may take to answer one request, in seconds (past it: 504)
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS), global = true)]
    request_timeout: u64,

    /// How long a request body may take to arrive in full, in seconds (past it: 408)
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_BODY_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS), global = true)]
    body_timeout: u64,

    /// The format of the log on stderr
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    /// The key file that encrypts [env] values at rest
    /// [default: $XDG_DATA_HOME/milady/secrets.key, i.e.
    /// ~/.local/share/milady/secrets.key]
    ///
    /// Created (0600, in a 0700 folder) when the host first encrypts a
    /// value; never in the config file's folder. Back it up: without it the
    /// encrypted values cannot be read. MILADY_SECRETS_KEY may carry the key
    /// itself instead.
    #[arg(
        long,
        value_name = "FILE",
        env = "MILADY_SECRETS_KEY_FILE",
        global = true
    )]
    secrets_key: Option<PathBuf>,

    /// The audit log: one JSON line per change attempt, on disk before the
    /// response [default: audit.jsonl beside the config file]
    ///
    /// Created 0600. When it cannot be written the host does not start,
    /// and a change that cannot be audited is refused (500). Rotated at
    /// 16 MiB, four old files kept (audit.jsonl.1 newest).
    #[arg(long, value_name = "PATH", global = true)]
    audit_log: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The longest timeout the flags accept: one day.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// The environment variables, shown at the end of `--help`.
const ENVIRONMENT_HELP: &str = "\
Environment:
  MILADY_CONFIG_PATH  The config file (same as --config; the flag wins)
  MILADY_API_BIND     The listen address (same as --bind; the flag wins)
  MILADY_API_TOKEN    When set, every /api/* route requires it as
                      `Authorization: Bearer <token>`, `X-Milady-Token` or
                      `X-Api-Key`; it is never written by the API
  MILADY_ALLOWED_ORIGINS  Browser origins allowed to call the API, comma-separated
                      (e.g. `http://localhost:5173`); others may not PUT/POST
  MILADY_SECRETS_KEY_FILE  The secrets key file (same as --secrets-key)
  BAO_ADDR, VAULT_ADDR  The secret store's address when [store] backend =
                      \"openbao\" names none
  BAO_TOKEN, VAULT_TOKEN  The secret store's token (never read from the file;
                      hidden from plugins)
  MILADY_SECRETS_KEY  The secrets key itself (an age AGE-SECRET-KEY-1... line),
                      for containers and systemd credentials; hidden from
                      plugins and never written by the API
  XDG_DATA_HOME       Where the default secrets key lives (`milady/secrets.key`
                      in it) [default: ~/.local/share]
  XDG_CACHE_HOME      Where probe results of plugin libraries are cached
                      (`milady/` in it) [default: ~/.cache]
  RUST_LOG            Log filter, e.g. `debug` or `demo_host=trace` [default: info]
  NO_COLOR            When set, pretty logs have no colours
  HOME                Where the default ~/.milady folder lives

The host's runtime environment (what plugins read) is the process environment
at start-up, then the config file's [env] for keys the process does not set.
Values the host writes to [env] are stored encrypted (`KEY = { age = \"...\" }`)
unless the config says `[security] encrypt_env = false`; a plain string is
always read as plaintext.

Examples:
  demo-host                                  serve on 127.0.0.1:2138
  demo-host plugin install ./libhello_plugin.so
  demo-host plugin list
  demo-host openapi > openapi.json
  demo-host secrets encrypt                  encrypt hand-written [env] values
  demo-host secrets import .env              import a .env file (all or nothing)
  demo-host secrets migrate --to openbao     copy [env] into the [store] secret store";

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the merged OpenAPI document (host + loaded plugins) and exit.
    Openapi,
    /// Check, list and install plugin libraries (see `demo-host plugin --help`).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Encrypt, re-key and import the secrets of [env] (see `demo-host
    /// secrets --help`).
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Subcommand, Debug)]
enum SecretsCommand {
    /// Rewrite every plaintext [env] value of the config encrypted.
    ///
    /// One atomic write; comments, layout and other tables are kept. Safe
    /// while a host runs on the same config (both take the config's write
    /// lock); that host shows the change after a restart.
    Encrypt,
    /// Re-encrypt every encrypted [env] value under a new secrets key.
    ///
    /// Refused while a host runs on the config. Crash-safe: the new key is
    /// written beside the old one (secrets.key.next), the config is
    /// rewritten, then the new key replaces the old; if interrupted, every
    /// value stays readable and running the command again finishes.
    /// Values no key opens are left as they are and listed. Back up the
    /// new key file afterwards.
    RotateKey,
    /// Import a .env file (KEY=value lines) into [env], all or nothing.
    ///
    /// The entries go through the same validation as a PUT /api/secrets
    /// (the secrets plugin must be in the plugin folder): if any key is
    /// refused, nothing is written and every refused key is listed. Empty
    /// values are skipped.
    Import {
        /// The .env file.
        #[arg(value_name = "FILE.env")]
        file: PathBuf,
    },
    /// Copy the [env] secrets into the secret store named by [store].
    ///
    /// One KV v2 write with check-and-set into the fleet's secret; a key the
    /// store already has is kept unless --overwrite. The token comes from
    /// BAO_TOKEN or VAULT_TOKEN. The config file is left as it is.
    Migrate {
        /// The store to copy to (only `openbao`: OpenBao or Vault KV v2).
        #[arg(long, value_name = "STORE", value_parser = ["openbao"])]
        to: String,
        /// Replace keys the store already has.
        #[arg(long)]
        overwrite: bool,
    },
    /// Print the fingerprint key (kept with the secrets key) on stdout.
    ///
    /// Hosts holding the same fingerprint key show equal fingerprints for
    /// equal values: import it on another host of yours to compare keys
    /// without revealing them. It is not the secrets key, but keep it
    /// private: with it, a guess of a value can be checked against its
    /// fingerprint.
    ExportFingerprintKey,
    /// Install a fingerprint key printed by `export-fingerprint-key`
    /// (FILE, or `-` for stdin), replacing this host's. A running host
    /// uses it after a restart.
    ImportFingerprintKey {
        /// The exported key.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Check a plugin library and copy it into the plugin folder.
    ///
    /// The file is loaded in a separate process (a broken library cannot
    /// harm a running host), then its id and routes are compared with the
    /// installed plugins'. If all is well it is copied in atomically
    /// (temporary file, sync, rename), and a host running on the folder
    /// loads it: the command waits for that host's word and says whether
    /// it loaded the library, skipped it, or serves that plugin already (a
    /// new version waits for a restart). Otherwise nothing is copied and
    /// the reason is printed (exit status 1).
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
    /// start-up, `install` and `list`, which run it as a child process).
    /// Ends without running the library's destructors.
    #[command(hide = true)]
    Probe {
        /// The library to check.
        path: PathBuf,
        /// The name to report it by (the library's file when PATH is a
        /// private copy such as /proc/self/fd/0).
        #[arg(long, value_name = "NAME")]
        label: Option<PathBuf>,
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
        // Control, bidirectional and separator characters of file names,
        // ids and headers print escaped.
        LogFormat::Pretty => builder.fmt_fields(demo_host::log_fields()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // Before any secret is in memory: a crash must not write them to disk.
    if let Err(err) = demo_host::secrets_commands::disable_core_dumps() {
        tracing::warn!(error = %err, "cannot turn core dumps off");
    }
    if let Err(e) = run(cli) {
        // One clear line, not a backtrace.
        eprintln!(
            "demo-host: error: {}",
            demo_host::escape_controls(&format!("{e:#}"))
        );
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
        return plugin_command(command, &plugins_dir, file_policy(&cli));
    }
    let secrets_key = demo_host::SecretsKey::choose(
        cli.secrets_key.clone(),
        std::env::var(demo_host::SECRETS_KEY_ENV).ok(),
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    )?;
    match &cli.command {
        Some(Command::Secrets(SecretsCommand::Encrypt)) => {
            return secrets_encrypt(&config_path, secrets_key, file_policy(&cli));
        }
        Some(Command::Secrets(SecretsCommand::RotateKey)) => {
            return secrets_rotate(&config_path, secrets_key, file_policy(&cli));
        }
        Some(Command::Secrets(SecretsCommand::Migrate { to: _, overwrite })) => {
            return secrets_migrate(&config_path, secrets_key, file_policy(&cli), *overwrite);
        }
        Some(Command::Secrets(SecretsCommand::ExportFingerprintKey)) => {
            let text = demo_host::secrets_commands::export_fingerprint_key(&secrets_key)?;
            print!("{}", &*text);
            return Ok(());
        }
        Some(Command::Secrets(SecretsCommand::ImportFingerprintKey { file })) => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                text
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let (path, replaced) =
                demo_host::secrets_commands::import_fingerprint_key(&secrets_key, &text)?;
            println!(
                "{} the fingerprint key in {}",
                if replaced { "replaced" } else { "installed" },
                path.display()
            );
            return Ok(());
        }
        _ => {}
    }
    let mut token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let serving = matches!(cli.command, None | Some(Command::Serve));
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
        boundary: boundary_options(&cli),
        file_policy: file_policy(&cli),
        max_value_bytes: cli.max_value_bytes,
        secrets_key,
        audit_log: cli.audit_log.clone(),
        audit: true,
    };
    if serving || matches!(cli.command, Some(Command::Secrets(_))) {
        let store =
            demo_host::ConfigStore::new(&options.config_path).with_policy(options.file_policy);
        if store.create_default_if_missing()? {
            tracing::info!(path = %options.config_path.display(), "created a starter config file");
        }
    }
    if let Some(Command::Secrets(SecretsCommand::Import { file })) = &cli.command {
        return secrets_import(options, file);
    }
    let host = Host::build(options, std::env::vars())?;
    match cli.command {
        Some(Command::Openapi) => {
            println!("{}", serde_json::to_string_pretty(&host.openapi)?);
            Ok(())
        }
        None | Some(Command::Serve) => {
            let limits = demo_host::ConnectionLimits {
                header_read_timeout: Duration::from_secs(cli.header_read_timeout),
                idle_timeout: Duration::from_secs(cli.idle_timeout),
                max_connections: usize::try_from(cli.max_connections).unwrap_or(usize::MAX),
            };
            serve(host, cli.bind, limits)
        }
        Some(Command::Plugin(_) | Command::Secrets(_)) => {
            unreachable!("handled before the host is built")
        }
    }
}

fn secrets_encrypt(
    config: &Path,
    key: demo_host::SecretsKey,
    policy: demo_host::FilePolicy,
) -> anyhow::Result<()> {
    let report = demo_host::secrets_commands::encrypt(config, key, policy)
        .with_context(|| format!("nothing was encrypted in {}", config.display()))?;
    println!(
        "encrypted {} value(s) in {}{}",
        report.encrypted.len(),
        config.display(),
        if report.already > 0 {
            format!(" ({} already encrypted)", report.already)
        } else {
            String::new()
        }
    );
    for key in &report.encrypted {
        println!("  {key}");
    }
    Ok(())
}

fn secrets_rotate(
    config: &Path,
    key: demo_host::SecretsKey,
    policy: demo_host::FilePolicy,
) -> anyhow::Result<()> {
    let key_file = key.file().map(Path::to_owned);
    let report = demo_host::secrets_commands::rotate_key(config, key, policy)?;
    if report.resumed {
        println!("finished a key rotation that had been interrupted");
    }
    println!(
        "re-encrypted {} value(s) under the new key {}",
        report.rotated.len(),
        report.public_key
    );
    if let Some(file) = key_file {
        println!("the new key is in {}: back it up", file.display());
    }
    if report.plaintext > 0 {
        println!(
            "{} plaintext value(s) left as they are (`demo-host secrets encrypt` encrypts them)",
            report.plaintext
        );
    }
    if !report.unreadable.is_empty() {
        println!(
            "{} value(s) no key opens, left byte for byte:",
            report.unreadable.len()
        );
        for (key, reason) in &report.unreadable {
            println!("  {key}: {reason}");
        }
    }
    Ok(())
}

fn secrets_migrate(
    config: &Path,
    key: demo_host::SecretsKey,
    policy: demo_host::FilePolicy,
    overwrite: bool,
) -> anyhow::Result<()> {
    let process: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let report =
        demo_host::secrets_commands::migrate_to_openbao(config, key, policy, overwrite, &process)
            .context("nothing was migrated")?;
    println!(
        "copied {} secret(s) into the store (version {})",
        report.copied.len(),
        report.version
    );
    for key in &report.copied {
        println!("  {key}");
    }
    if !report.kept.is_empty() {
        println!(
            "kept {} key(s) the store already has (--overwrite replaces them):",
            report.kept.len()
        );
        for key in &report.kept {
            println!("  {key}");
        }
    }
    if !report.unreadable.is_empty() {
        println!(
            "left out {} value(s) that cannot be read: {}",
            report.unreadable.len(),
            report.unreadable.join(", ")
        );
    }
    Ok(())
}

fn secrets_import(options: HostOptions, file: &Path) -> anyhow::Result<()> {
    let config = options.config_path.clone();
    let report = demo_host::secrets_commands::import(options, file, std::env::vars())?;
    println!(
        "imported {} secret(s) from {} into {}",
        report.imported.len(),
        file.display(),
        config.display()
    );
    for key in &report.imported {
        println!("  {key}");
    }
    if !report.skipped_empty.is_empty() {
        println!(
            "skipped {} empty value(s): {}",
            report.skipped_empty.len(),
            report.skipped_empty.join(", ")
        );
    }
    Ok(())
}

/// Strict file rules unless `--no-strict-modes`, which is said once.
fn file_policy(cli: &Cli) -> demo_host::FilePolicy {
    if cli.no_strict_modes {
        tracing::warn!(
            "--no-strict-modes: the ownership and permission checks of the config file and \
             plugins are off"
        );
        demo_host::FilePolicy::permissive()
    } else {
        demo_host::FilePolicy::strict()
    }
}

fn plugin_command(
    command: &PluginCommand,
    plugins_dir: &Path,
    policy: demo_host::FilePolicy,
) -> anyhow::Result<()> {
    match command {
        PluginCommand::Probe { path, label } => plugin_cli::probe_and_exit(path, label.as_deref()),
        PluginCommand::List { json } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let listed = plugin_cli::list(&exe, plugins_dir, policy)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print!("{}", plugin_cli::render_list(plugins_dir, &listed));
            }
            Ok(())
        }
        PluginCommand::Install { path, replace } => {
            let exe = std::env::current_exe().context("cannot find this program's path")?;
            let done = plugin_cli::install(&exe, plugins_dir, path, *replace, policy)
                .with_context(|| format!("not installed: {}", path.display()))?;
            let r = &done.report;
            // What the library declares, printed escaped: it cannot drive
            // the terminal.
            let or_unknown = |v: &Option<String>| {
                demo_host::escape_controls(v.as_deref().unwrap_or("?")).into_owned()
            };
            println!(
                "installed {} {} (host-api {}) as {}",
                or_unknown(&r.id),
                or_unknown(&r.version),
                or_unknown(&r.interface),
                demo_host::escape_controls(&done.path.display().to_string())
            );
            if let Some(old) = &done.replaced {
                println!("replaced the previous version in {}", old.display());
            }
            println!("routes: {}", r.routes.join(", "));
            print_pickup(plugins_dir, &done.path);
            Ok(())
        }
    }
}

/// Whether a host running on `plugins_dir` picked up the library just
/// installed as `installed` (it watches the folder), as one line.
fn print_pickup(plugins_dir: &Path, installed: &Path) {
    use plugin_cli::{Pickup, PickupWait};
    let dir = demo_host::escape_controls(&plugins_dir.display().to_string()).into_owned();
    match plugin_cli::await_pickup(plugins_dir, installed, plugin_cli::PICKUP_WAIT) {
        PickupWait::NoHost => {
            println!("no running demo-host watches {dir}: start (or restart) demo-host to load it")
        }
        PickupWait::Picked(Pickup::Loaded { .. }) => {
            println!("the running demo-host loaded it: its routes answer now")
        }
        PickupWait::Picked(Pickup::PendingRestart { id, version }) => println!(
            "the running demo-host serves plugin {} already: version {} waits for a restart \
             (pendingRestart in GET /api/plugins)",
            demo_host::escape_controls(&id),
            demo_host::escape_controls(&version)
        ),
        PickupWait::Picked(Pickup::Skipped { reason }) => println!(
            "the running demo-host did not load it: {}",
            demo_host::escape_controls(&reason)
        ),
        PickupWait::TimedOut => println!(
            "a running demo-host watches {dir} but did not report on the library within {} s; \
             see GET /api/plugins or its log",
            plugin_cli::PICKUP_WAIT.as_secs()
        ),
    }
}

/// Deadlines from the flags; libraries probed by this very program, with
/// results cached under the XDG cache folder; browser origins from the
/// environment.
fn boundary_options(cli: &Cli) -> BoundaryOptions {
    BoundaryOptions {
        plugin_timeout: Duration::from_secs(cli.plugin_timeout),
        request_timeout: Duration::from_secs(cli.request_timeout),
        body_timeout: Duration::from_secs(cli.body_timeout),
        probe_program: std::env::current_exe().ok(),
        probe_cache: demo_host::default_cache_dir(
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        ),
        allowed_origins: std::env::var(ALLOWED_ORIGINS_ENV)
            .map(|v| demo_host::split_origins(&v))
            .unwrap_or_default(),
    }
}

fn generate_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot generate a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn serve(host: Host, bind: SocketAddr, limits: demo_host::ConnectionLimits) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Registered before the address is printed, so a signal sent as soon
        // as the host is seen listening still shuts it down gracefully.
        let shutdown = shutdown_signal()?;
        let listener =
            demo_host::listen(bind).with_context(|| format!("cannot listen on {bind}"))?;
        let addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        println!("demo-host listening on http://{addr}");
        tracing::info!(
            plugins = host.plugins.len(),
            skipped = host.skipped.len(),
            "serving; open /docs for the API"
        );
        // A library dropped into the plugin folder from now on is loaded.
        host.watch_plugin_folder();
        demo_host::serve(
            listener,
            host.endpoint(),
            limits,
            shutdown,
            Duration::from_secs(5),
        )
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
