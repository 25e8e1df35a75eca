//! Connections that hold the host without ever making a request (issue 11,
//! SPEC §11): connections that send nothing or trickle their headers are
//! closed at the header-read timeout, an idle keep-alive connection at the
//! idle timeout, the number of connections is capped (and the cap logged
//! once), the accept loop backs off when the process is out of file
//! descriptors instead of spinning, and SIGTERM still stops the host while
//! such connections are open. Every test is bounded in time and connection
//! count, on loopback only, and waits are upper bounds, never timings.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::TcpStream,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use e2e_tests::{HostProcess, HostSpec, artifacts};

use crate::get;

fn addr(h: &HostProcess) -> String {
    h.base.trim_start_matches("http://").to_owned()
}

/// A host with the secrets plugin and extra flags.
fn host(args: &[&str]) -> Result<HostProcess> {
    let mut spec = HostSpec::with_secrets()?;
    spec.args = args.iter().map(|a| (*a).to_owned()).collect();
    HostProcess::start(spec)
}

/// Opens `n` connections that send nothing.
fn idle_connections(addr: &str, n: usize) -> Result<Vec<TcpStream>> {
    (0..n)
        .map(|_| TcpStream::connect(addr).context("connecting"))
        .collect()
}

/// Whether the host has closed `s` (end of stream or reset); reads with
/// short timeouts until `deadline`. Any bytes read are returned in `seen`.
fn closed_by_host(s: &mut TcpStream, deadline: Instant, seen: &mut Vec<u8>) -> Result<bool> {
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(true),
        }
    }
    Ok(false)
}

/// One complete keep-alive request and its response head and body, on `s`.
fn request_on(s: &mut TcpStream, host: &str, path: &str) -> Result<String> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed before a complete response");
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .context("a content-length")?;
            if body.len() >= length {
                return Ok(text.into_owned());
            }
        }
    }
}

/// Trickles a request head one byte every `gap` until the host closes the
/// connection or `stop` is set; returns whether the host closed it and
/// what it answered.
fn trickle(addr: String, gap: Duration, stop: Arc<AtomicBool>) -> Result<(bool, Vec<u8>)> {
    let mut s = TcpStream::connect(&addr)?;
    s.set_read_timeout(Some(gap))?;
    let head = format!(
        "GET /api/health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}",
        "a".repeat(4096)
    );
    let mut answered = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in head.bytes() {
        if stop.load(Ordering::Relaxed) {
            return Ok((false, answered));
        }
        if s.write_all(&[byte]).is_err() {
            return Ok((true, answered));
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok((true, answered)),
            Ok(n) => answered.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok((true, answered)),
        }
    }
    Ok((false, answered))
}

#[tokio::test]
async fn silent_and_trickling_connections_are_closed_at_the_header_read_timeout() -> Result<()> {
    let h = host(&["--header-read-timeout", "1"])?;
    let addr = addr(&h);
    let mut idle = idle_connections(&addr, 40)?;
    // A partial head, then nothing.
    for s in idle.iter_mut().take(10) {
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Partial: ")?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let trickles: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop) = (addr.clone(), Arc::clone(&stop));
            std::thread::spawn(move || trickle(addr, Duration::from_millis(200), stop))
        })
        .collect();

    // Well-behaved clients are served meanwhile.
    let (status, _) = get(&h, "/api/health").await?;
    assert_eq!(status, 200);

    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, s) in idle.iter_mut().enumerate() {
        let mut seen = Vec::new();
        assert!(
            closed_by_host(s, deadline, &mut seen)?,
            "connection {i} is still open after 15 s"
        );
        assert!(seen.is_empty(), "connection {i} got an answer: {seen:?}");
    }
    // A trickle of one byte every 200 ms would take 800 s to finish its
    // 4 KiB head; it is closed after the 1 s timeout, unanswered.
    for t in trickles {
        let waited = tokio::task::spawn_blocking(move || t.join()).await?;
        let (closed, answered) =
            waited.map_err(|_| anyhow::anyhow!("trickle thread panicked"))??;
        assert!(closed, "a trickling connection was held to the end");
        assert!(answered.is_empty(), "{answered:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let (status, _) = get(&h, "/api/health").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_until_the_idle_timeout_not_the_header_timeout()
-> Result<()> {
    let h = host(&["--header-read-timeout", "1", "--idle-timeout", "4"])?;
    let addr = addr(&h);
    let mut s = TcpStream::connect(&addr)?;
    let first = request_on(&mut s, &addr, "/api/health")?;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for twice the header-read timeout: still open, still served.
    std::thread::sleep(Duration::from_secs(2));
    let second = request_on(&mut s, &addr, "/api/health")?;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // Then idle for good: closed once the idle timeout has passed.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    assert!(
        closed_by_host(&mut s, deadline, &mut seen)?,
        "an idle keep-alive connection is held past the idle timeout"
    );
    assert!(seen.is_empty(), "{seen:?}");
    Ok(())
}

#[tokio::test]
async fn the_connection_cap_holds_new_connections_back_and_is_logged_once() -> Result<()> {
    let h = host(&["--max-connections", "8", "--header-read-timeout", "3"])?;
    let addr = addr(&h);
    let _first = idle_connections(&addr, 8)?;
    assert!(
        h.wait_for_log("connection limit reached", Duration::from_secs(10)),
        "no log line at the cap: {}",
        h.log()
    );
    // Over the cap: these wait in the backlog, unaccepted.
    let _more = idle_connections(&addr, 12)?;
    // A well-behaved client is served once the silent ones have been
    // closed by the header-read timeout (bounded wait).
    let started = Instant::now();
    let (status, _) = get(&h, "/api/health").await?;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(25));
    let lines = h.log().matches("connection limit reached").count();
    assert_eq!(lines, 1, "logged once: {}", h.log());
    Ok(())
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_logs_once() -> Result<()> {
    let a = artifacts()?;
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins)?;
    std::fs::copy(&a.secrets, plugins.join("libsecrets_plugin.so"))?;
    // A descriptor limit far below the connection cap, soft and hard, so
    // the host cannot raise it.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 40 && exec "$0" "$@""#)
        .arg(&a.host)
        .arg("--config")
        .arg(dir.path().join("milady.toml"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .args(["--bind", "127.0.0.1:0", "--header-read-timeout", "60"])
        .env_remove("MILADY_API_TOKEN")
        .env_remove("MILADY_CONFIG_PATH")
        .env_remove("MILADY_API_BIND")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null());
    let launched = e2e_tests::spawn_listening(&mut cmd, Duration::from_secs(30))?;
    let mut child = launched.child;
    let pid = child.id();
    let addr = launched.base.trim_start_matches("http://").to_owned();
    let log = || launched.log.lock().map(|l| l.clone()).unwrap_or_default();

    // More connections than descriptors: the rest wait in the backlog.
    let attackers = idle_connections(&addr, 60)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("out of file descriptors") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log().contains("out of file descriptors"), "{}", log());
    // While the attackers hold every descriptor, the loop sleeps between
    // attempts: a spinning loop burns a whole core (about 300 ticks in
    // these 3 s); backing off, a few.
    let before = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(pid)? - before;
    assert!(
        spent < 100,
        "{spent} ticks of CPU in 3 s out of descriptors"
    );
    assert_eq!(
        log().matches("out of file descriptors").count(),
        1,
        "{}",
        log()
    );

    // When the attackers let go, a well-behaved client is served.
    drop(attackers);
    let started = Instant::now();
    let answered = loop {
        let mut s = TcpStream::connect(&addr)?;
        if let Ok(resp) = request_on(&mut s, &addr, "/api/health") {
            break resp;
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("never served after the attackers left: {}", log());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_host_while_silent_connections_are_open() -> Result<()> {
    let mut h = host(&[])?;
    let addr = addr(&h);
    let _idle = idle_connections(&addr, 50)?;
    let mut keep_alive = TcpStream::connect(&addr)?;
    let resp = request_on(&mut keep_alive, &addr, "/api/health")?;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // `terminate` waits at most 10 s for a graceful exit.
    let status = h.terminate()?;
    assert!(status.success(), "{status:?}: {}", h.log());
    assert!(
        h.wait_for_log("shut down", Duration::from_secs(2)),
        "{}",
        h.log()
    );
    Ok(())
}
