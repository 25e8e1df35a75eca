//! What every section shares: the settings, the server and client runtimes,
//! the work folder, the main catalog and the release files under test.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::AtomicUsize,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use bench::load::{self, Load};
use demo_host::Host;
use poem::{IntoEndpoint, Server, listener::Acceptor as _, listener::Listener as _};
use tokio::runtime::Runtime;

use crate::{
    Args,
    catalog::{self, Catalog},
    hosts::{bench_env, build_host, lib_file_name},
};

/// The shared state of one benchmark run.
pub(crate) struct Ctx {
    pub(crate) args: Args,
    /// Runs the servers under test; multi-threaded like the real host.
    pub(crate) server: Runtime,
    /// Runs the load generator; one thread, to leave the cores to the server.
    pub(crate) client: Runtime,
    pub(crate) plugin_lib: PathBuf,
    pub(crate) host_bin: PathBuf,
    pub(crate) work: tempfile::TempDir,
    pub(crate) catalog: Catalog,
    /// Plugin library copies made so far.
    pub(crate) copies: AtomicUsize,
}

impl Ctx {
    /// Finds the release files, makes the work folder and the catalog, and
    /// starts the runtimes.
    pub(crate) fn new(args: Args) -> Result<Self> {
        let plugin_lib = plugin_lib(&args)?;
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
        let catalog = catalog::main_catalog(work.path())?;
        Ok(Self {
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
        })
    }

    /// A host with its own config file (the host's starter file) and, if
    /// `with_plugin`, its own copy of the plugin library.
    pub(crate) fn host(
        &self,
        name: &str,
        with_plugin: bool,
        catalog: &Path,
        keys: &[String],
    ) -> Result<Host> {
        build_host(
            &self.work.path().join(name),
            with_plugin.then_some(self.plugin_lib.as_path()),
            catalog,
            &bench_env(keys),
            &self.copies,
        )
    }

    /// Points a spawned host at a home of the bench's own (`HOME`,
    /// `XDG_DATA_HOME` in the work folder): its secrets key is never the
    /// machine's.
    pub(crate) fn own_home<'a>(
        &self,
        cmd: &'a mut std::process::Command,
    ) -> &'a mut std::process::Command {
        let home = self.work.path().join("home");
        cmd.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env_remove("MILADY_SECRETS_KEY")
            .env_remove("MILADY_SECRETS_KEY_FILE")
    }

    /// Serves `ep` on a fresh loopback port of the server runtime.
    pub(crate) fn serve<E>(&self, ep: E) -> Result<SocketAddr>
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

    /// Runs one load on the client runtime.
    pub(crate) fn load(&self, load: &Load) -> Result<load::LoadResult> {
        self.client.block_on(load::run(load))
    }

    /// The length of one load round.
    pub(crate) fn round(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds)
    }
}

/// The plugin library: `--plugin`, else the one next to this executable.
pub(crate) fn plugin_lib(args: &Args) -> Result<PathBuf> {
    match &args.plugin {
        Some(p) => Ok(p.clone()),
        None => beside_exe(&lib_file_name()),
    }
}

fn beside_exe(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("the executable has no folder")?
        .join(name))
}

/// A fresh temp folder under `--work-dir` (or the system temp folder),
/// removed when dropped.
pub(crate) fn work_dir(args: &Args) -> Result<tempfile::TempDir> {
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
