//! The listener: accepts TCP connections and serves the host's endpoint on
//! each with hyper (HTTP/1.1, and HTTP/2 with prior knowledge), under the
//! limits a hostile client meets before it has sent a single request.
//!
//! - **Header-read timeout** (default 10 s): a connection must deliver a
//!   complete request head within this time, counted from the accept (first
//!   request) or from the first byte of a later request. A connection that
//!   sends nothing, or trickles its headers, is closed, not held.
//! - **Idle timeout** (default 60 s): a keep-alive connection with no
//!   request in progress is closed after this long; so is one whose response
//!   makes no progress for this long (a client that stops reading).
//! - **Connection cap** (default 1,024): at most this many connections are
//!   open at once. Past it the loop stops accepting (new connections wait in
//!   the kernel's backlog until one closes) and logs it once.
//! - **Out of file descriptors**: `EMFILE`/`ENFILE` (and `ENOBUFS`,
//!   `ENOMEM`) make the loop back off (10 ms doubling to 1 s) instead of
//!   spinning on a connection it cannot accept, with one log line.
//!
//! hyper's own header-read timeout cannot express the first two (it restarts
//! whenever a connection goes idle, so it would also be the keep-alive
//! timeout), so each connection has a small watchdog fed by its socket reads
//! and writes and by the requests in progress.
//!
//! On shutdown the loop stops accepting, asks every connection to finish
//! (idle ones close at once, requests in progress complete), and after the
//! grace period drops whatever is left.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use poem::{
    Addr, Endpoint, Response,
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
    time::Instant,
};

/// The default header-read timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default idle keep-alive timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default cap on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// File descriptors kept beside the connections (config file, libraries,
/// probe pipes, the runtime's own).
const FD_RESERVE: u64 = 64;

/// The listen backlog: connections the kernel completes before they are
/// accepted. The usual 128 drops the handshakes of a burst of clients
/// (each then retries a second later), and past the connection cap this
/// is where new connections wait.
const BACKLOG: u32 = 1024;

/// A listening socket on `addr` (address reuse on, as usual for servers),
/// with a backlog of 1,024 (the system may cap it, `net.core.somaxconn`).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The limits of [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a connection may take to deliver a request head.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with nothing in progress.
    pub idle_timeout: Duration,
    /// The most connections open at once (at least 1).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `endpoint` on `listener` until `shutdown` resolves, then lets the
/// open connections finish for at most `grace`.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let limits = ConnectionLimits {
        max_connections: limits.max_connections.max(1),
        ..limits
    };
    check_fd_limit(limits.max_connections);
    let local = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut at_cap = RateLimited::new();
    let mut out_of_fds = RateLimited::new();
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);

    loop {
        while connections.try_join_next().is_some() {}
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                at_cap.run(|suppressed| {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times_since_last_report = suppressed + 1,
                        "connection limit reached: new connections wait until one closes \
                         (idle ones close after the header-read or idle timeout; see --max-connections)"
                    );
                });
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                let Some(pause) = accept_error_pause(&error, &mut backoff) else {
                    continue;
                };
                if is_out_of_resources(&error) {
                    out_of_fds.run(|suppressed| {
                        tracing::error!(
                            %error,
                            open_connections = limits.max_connections - permits.available_permits(),
                            times_since_last_report = suppressed + 1,
                            "cannot accept connections: out of file descriptors or memory; \
                             backing off (raise `ulimit -n` or lower --max-connections)"
                        );
                    });
                } else {
                    tracing::warn!(%error, "accepting a connection failed; retrying");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // Responses are written whole; Nagle's delay would only add latency.
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            Peers { local, peer },
            Arc::clone(&endpoint),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "connections still open after the grace period are closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The two ends of a connection.
#[derive(Clone, Copy)]
struct Peers {
    local: SocketAddr,
    peer: SocketAddr,
}

/// Serves one connection until it ends, its watchdog closes it, or the
/// server shuts down.
async fn serve_connection<E>(
    stream: TcpStream,
    peers: Peers,
    endpoint: Arc<E>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    E: Endpoint<Output = Response> + 'static,
{
    let watchdog = Arc::new(Watchdog::new(limits));
    let io = TokioIo::new(Watched {
        inner: stream,
        watchdog: Arc::clone(&watchdog),
    });
    let service = {
        let watchdog = Arc::clone(&watchdog);
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let handling = Handling::start(&watchdog);
            let endpoint = Arc::clone(&endpoint);
            async move {
                let req = poem::Request::from((
                    req,
                    LocalAddr(Addr::SocketAddr(peers.local)),
                    RemoteAddr(Addr::SocketAddr(peers.peer)),
                    Scheme::HTTP,
                ));
                let resp = endpoint.get_response(req).await;
                let resp: hyper::Response<_> = resp.into();
                let sending = handling.into_sending();
                Ok::<_, Infallible>(resp.map(|body| Sending {
                    body,
                    _guard: sending,
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(100)
        .max_header_list_size(64 * 1024);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);

    if *stop.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = watchdog.deadline();
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                // Requests in progress finish; `serve` bounds the wait.
                let _ = conn.as_mut().await;
                return;
            }
            () = watchdog.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let Some(phase) = watchdog.expired(Instant::now()) else {
                    continue;
                };
                tracing::debug!(peer = %peers.peer, phase = phase.describe(), "closing a connection");
                if phase == Phase::Idle {
                    // Nothing in progress: a graceful close is immediate.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.header_read_timeout, conn.as_mut()).await;
                }
                return;
            }
        }
    }
}

/// What a connection is waiting for, as far as its deadline is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A request head: since the accept, or since the first byte of a
    /// request after an idle spell.
    Head,
    /// A handler is working on a request: no deadline here (the body and
    /// request deadlines live in the router).
    Handling,
    /// A response is being written: it must make progress.
    Sending,
    /// Nothing: a keep-alive connection between requests.
    Idle,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Self::Head => "no complete request head within the header-read timeout",
            Self::Handling => "handling",
            Self::Sending => "the response made no progress within the idle timeout",
            Self::Idle => "idle for the idle timeout",
        }
    }
}

/// The deadline state of one connection.
struct Watchdog {
    limits: ConnectionLimits,
    state: Mutex<WatchState>,
    /// Woken when the deadline may have moved earlier.
    wake: Notify,
}

struct WatchState {
    /// Requests whose handler has not answered yet.
    handling: u32,
    /// Responses still being written.
    sending: u32,
    /// Between requests, whether a request has started arriving.
    reading_head: bool,
    /// When the current head or idle spell began.
    since: Instant,
    /// The last byte read or written.
    last_io: Instant,
}

impl Watchdog {
    fn new(limits: ConnectionLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            state: Mutex::new(WatchState {
                handling: 0,
                sending: 0,
                reading_head: true,
                since: now,
                last_io: now,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        // Plain counters and instants: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn phase(state: &WatchState) -> Phase {
        if state.handling > 0 {
            Phase::Handling
        } else if state.sending > 0 {
            Phase::Sending
        } else if state.reading_head {
            Phase::Head
        } else {
            Phase::Idle
        }
    }

    /// When the connection is due to be closed if nothing changes.
    fn deadline(&self) -> Instant {
        let state = self.lock();
        self.deadline_of(&state)
    }

    fn deadline_of(&self, state: &WatchState) -> Instant {
        let limits = &self.limits;
        match Self::phase(state) {
            Phase::Head => state.since + limits.header_read_timeout,
            // A year: effectively none, and far from overflowing.
            Phase::Handling => state.last_io + Duration::from_secs(365 * 24 * 3600),
            Phase::Sending => state.last_io + limits.idle_timeout,
            Phase::Idle => state.since + limits.idle_timeout,
        }
    }

    /// The phase whose deadline has passed at `now`, if any.
    fn expired(&self, now: Instant) -> Option<Phase> {
        let state = self.lock();
        (now >= self.deadline_of(&state)).then(|| Self::phase(&state))
    }

    fn on_read(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.last_io = now;
        if Self::phase(&state) == Phase::Idle {
            // The first byte of a new request: its head has a deadline now.
            state.reading_head = true;
            state.since = now;
            drop(state);
            self.wake.notify_one();
        }
    }

    fn on_write(&self) {
        self.lock().last_io = Instant::now();
    }

    fn request_started(&self) {
        let mut state = self.lock();
        state.handling += 1;
        state.reading_head = false;
    }

    fn response_ready(&self) {
        let mut state = self.lock();
        state.handling = state.handling.saturating_sub(1);
        state.sending += 1;
        state.last_io = Instant::now();
        drop(state);
        self.wake.notify_one();
    }

    fn request_dropped(&self) {
        let mut state = self.lock();
        state.handling = state.handling.saturating_sub(1);
        self.became_idle_if_done(state);
    }

    fn response_done(&self) {
        let mut state = self.lock();
        state.sending = state.sending.saturating_sub(1);
        self.became_idle_if_done(state);
    }

    fn became_idle_if_done(&self, mut state: std::sync::MutexGuard<'_, WatchState>) {
        if state.handling == 0 && state.sending == 0 {
            state.reading_head = false;
            state.since = Instant::now();
            drop(state);
            self.wake.notify_one();
        }
    }
}

/// A request whose handler is running; dropped without an answer (the
/// client went away) it still leaves the count right.
struct Handling {
    watchdog: Option<Arc<Watchdog>>,
}

impl Handling {
    fn start(watchdog: &Arc<Watchdog>) -> Self {
        watchdog.request_started();
        Self {
            watchdog: Some(Arc::clone(watchdog)),
        }
    }

    fn into_sending(mut self) -> SendingGuard {
        let watchdog = self.watchdog.take();
        if let Some(w) = &watchdog {
            w.response_ready();
        }
        SendingGuard { watchdog }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.request_dropped();
        }
    }
}

/// A response being written; hyper drops the body when it is done.
struct SendingGuard {
    watchdog: Option<Arc<Watchdog>>,
}

impl Drop for SendingGuard {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.response_done();
        }
    }
}

/// A response body that tells the watchdog when it is finished.
struct Sending<B> {
    body: B,
    _guard: SendingGuard,
}

impl<B: Body + Unpin> Body for Sending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket that reports its reads and writes to the watchdog.
struct Watched {
    inner: TcpStream,
    watchdog: Arc<Watchdog>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watchdog.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.watchdog.on_write();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.watchdog.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The pause before accepting again after `error`; `None` to retry at once
/// (the error concerned one connection only).
fn accept_error_pause(error: &io::Error, backoff: &mut Backoff) -> Option<Duration> {
    match error.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock => None,
        _ => Some(backoff.next()),
    }
}

/// `EMFILE`, `ENFILE`, `ENOBUFS` or `ENOMEM`: the process or the system is
/// out of what a new connection needs.
fn is_out_of_resources(error: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(error),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// Exponential back-off: 10 ms doubling to 1 s.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let pause = self.next.unwrap_or(Self::FIRST);
        self.next = Some((pause * 2).min(Self::MAX));
        pause
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

/// Runs a log statement at most once a minute, counting the times skipped.
struct RateLimited {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimited {
    const PERIOD: Duration = Duration::from_secs(60);

    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    fn run(&mut self, log: impl FnOnce(u64)) {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now - last < Self::PERIOD) {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Raises the soft limit on open files to the hard limit when it is below
/// what `max_connections` needs, and says so when even that is too low.
fn check_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let wanted = max_connections as u64 + FD_RESERVE;
    let mut limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return;
    };
    if current < wanted && limit.maximum.is_none_or(|max| max > current) {
        let raised = limit.maximum.map_or(wanted, |max| max.min(wanted));
        limit.current = Some(raised);
        if setrlimit(Resource::Nofile, limit).is_ok() {
            tracing::debug!(from = current, to = raised, "raised the open-file limit");
        }
    }
    if let Some(now) = getrlimit(Resource::Nofile).current
        && now < wanted
    {
        tracing::warn!(
            open_file_limit = now,
            max_connections,
            "the open-file limit is below --max-connections plus {FD_RESERVE}: past it, \
             connections wait (the accept loop backs off); raise `ulimit -n` or lower \
             --max-connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_moves_through_head_handling_sending_idle_and_head_again() {
        let w = Arc::new(Watchdog::new(limits()));
        let start = Instant::now();
        assert_eq!(w.deadline(), start + Duration::from_secs(10));
        // Bytes of the first head do not extend its deadline.
        tokio::time::advance(Duration::from_secs(3)).await;
        w.on_read();
        assert_eq!(w.deadline(), start + Duration::from_secs(10));
        assert_eq!(
            w.expired(start + Duration::from_secs(10)),
            Some(Phase::Head)
        );

        let handling = Handling::start(&w);
        assert_eq!(w.expired(start + Duration::from_secs(3600)), None);
        let sending = handling.into_sending();
        tokio::time::advance(Duration::from_secs(1)).await;
        w.on_write();
        assert_eq!(w.deadline(), Instant::now() + Duration::from_secs(60));
        drop(sending);
        let idle_since = Instant::now();
        assert_eq!(w.deadline(), idle_since + Duration::from_secs(60));
        assert_eq!(
            w.expired(idle_since + Duration::from_secs(60)),
            Some(Phase::Idle)
        );

        tokio::time::advance(Duration::from_secs(30)).await;
        w.on_read();
        assert_eq!(w.deadline(), Instant::now() + Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_unanswered_leaves_the_connection_idle() {
        let w = Arc::new(Watchdog::new(limits()));
        let a = Handling::start(&w);
        let b = Handling::start(&w);
        drop(a);
        assert_eq!(Watchdog::phase(&w.lock()), Phase::Handling);
        drop(b);
        assert_eq!(Watchdog::phase(&w.lock()), Phase::Idle);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }

    #[test]
    fn out_of_descriptors_backs_off_and_a_dropped_handshake_does_not() {
        let mut b = Backoff::default();
        let emfile = io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_out_of_resources(&emfile));
        assert!(accept_error_pause(&emfile, &mut b).is_some());
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert!(!is_out_of_resources(&aborted));
        assert_eq!(accept_error_pause(&aborted, &mut b), None);
    }

    #[test]
    fn rate_limited_logs_once_a_minute_and_counts_the_rest() {
        let mut r = RateLimited::new();
        let mut lines = Vec::new();
        for _ in 0..5 {
            r.run(|suppressed| lines.push(suppressed));
        }
        assert_eq!(lines, [0]);
        assert_eq!(r.suppressed, 4);
    }
}
