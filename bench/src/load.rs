//! A small HTTP/1.1 load generator for loopback benchmarks: keep-alive
//! connections, one request in flight per connection, the latency of every
//! request recorded. Deliberately minimal (no header map, no allocation per
//! response in the load loop) so that it takes as little CPU as possible
//! from the server it measures on a 2-core machine.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Builds the bytes of request number `seq` on connection `conn`.
pub type RequestFn = Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;

/// What each connection sends.
#[derive(Clone)]
pub enum Requests {
    /// The same request every time.
    Fixed(Arc<[u8]>),
    /// A request built per connection and sequence number.
    Generated(RequestFn),
}

/// One bounded load run.
#[derive(Clone)]
pub struct Load {
    /// The server (a loopback address).
    pub addr: SocketAddr,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Stop sending new requests after this long.
    pub duration: Duration,
    /// Stop each connection after this many requests.
    pub max_per_connection: u64,
    /// What to send.
    pub requests: Requests,
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered with any other status.
    pub errors: u64,
    /// Wall time from the first request to the last response.
    pub elapsed: Duration,
    /// Latency of every 2xx request in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    /// 2xx responses per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0..=100) in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        crate::stats::percentile(&self.latencies_us, p)
    }
}

/// Runs `load` on the current tokio runtime; connections run as tasks.
pub async fn run(load: &Load) -> Result<LoadResult> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::with_capacity(load.connections);
    for conn in 0..load.connections {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            connection(&load, conn, deadline).await
        }));
    }
    let mut result = LoadResult::default();
    for task in tasks {
        let (ok, errors, mut latencies) = task.await.context("load task failed")??;
        result.ok += ok;
        result.errors += errors;
        result.latencies_us.append(&mut latencies);
    }
    result.elapsed = start.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

async fn connection(load: &Load, conn: usize, deadline: Instant) -> Result<(u64, u64, Vec<u32>)> {
    let mut client = Client::connect(load.addr).await?;
    let mut latencies = Vec::with_capacity(4096);
    let (mut ok, mut errors) = (0, 0);
    for seq in 0..load.max_per_connection {
        if Instant::now() >= deadline {
            break;
        }
        let generated;
        let bytes: &[u8] = match &load.requests {
            Requests::Fixed(b) => b,
            Requests::Generated(f) => {
                generated = f(conn, seq);
                &generated
            }
        };
        let started = Instant::now();
        let status = client.send(bytes, false).await?.status;
        let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        if (200..300).contains(&status) {
            ok += 1;
            latencies.push(micros);
        } else {
            errors += 1;
        }
    }
    Ok((ok, errors, latencies))
}

/// A response as read by [`Client::send`].
#[derive(Debug, Default)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Status line and headers (only when kept).
    pub head: String,
    /// Body, de-chunked (only when kept).
    pub body: Vec<u8>,
}

impl Reply {
    /// A header value by name (case-insensitive), when the head was kept.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects (with `TCP_NODELAY`, as any HTTP client does).
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Sends one complete request and reads its response; `keep` keeps
    /// the head and body, otherwise they are skipped.
    pub async fn send(&mut self, request: &[u8], keep: bool) -> Result<Reply> {
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("response status line")?;
        let mut length = None;
        let mut chunked = false;
        for line in head.split("\r\n").skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>().context("content-length")?);
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut reply = Reply {
            status,
            ..Reply::default()
        };
        if keep {
            reply.head = head.to_owned();
        }
        self.buf.drain(..head_end);
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_text = std::str::from_utf8(&self.buf[..line_end])?;
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16).context("chunk size")?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // No trailers are expected: just the final empty line.
                    while self.buf.len() < 2 {
                        self.fill().await?;
                    }
                    self.buf.drain(..2);
                    break;
                }
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                if keep {
                    reply.body.extend_from_slice(&self.buf[..size]);
                }
                self.buf.drain(..size + 2);
            }
        } else {
            let length = length.unwrap_or(0);
            while self.buf.len() < length {
                self.fill().await?;
            }
            if keep {
                reply.body = self.buf[..length].to_vec();
            }
            self.buf.drain(..length);
        }
        Ok(reply)
    }

    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(1 << 16);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The bytes of an HTTP/1.1 request with a loopback `Host` header.
pub fn request(method: &str, addr: SocketAddr, path: &str, json: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: milady-bench\r\nAccept: application/json\r\n"
    )
    .into_bytes();
    if let Some(body) = json {
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = json {
        out.extend_from_slice(body);
    }
    out
}

/// One request on a fresh connection, keeping the whole response.
pub async fn fetch(addr: SocketAddr, request: &[u8]) -> Result<Reply> {
    Client::connect(addr).await?.send(request, true).await
}
