//! The public listener's accept loop: HTTP/1.1 connections served by hyper
//! with three limits `axum::serve` cannot set, so that idle or slow sockets
//! cannot pile up (each holds a file descriptor and a task):
//!
//! - `header_read_timeout`: from the connection's start, or the first byte of
//!   a later request, to the end of that request's headers;
//! - `idle_timeout`: a keep-alive connection with no request in flight and no
//!   byte of the next one is closed after this long;
//! - `max_connections`: beyond it the server stops accepting, so excess
//!   connections wait in the kernel's backlog instead of costing memory here.
//!
//! A request in flight (its handler running, or its response, e.g. an SSE
//! stream, still being written) is bounded by the request timeouts instead.
//! A connection upgraded to a WebSocket (the media-stream bridge) leaves
//! HTTP behind: no header or idle deadline applies to it any more (its
//! handler keeps its own), but it holds its connection slot until it closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures_util::task::AtomicWaker;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets the
/// requests in flight finish (connections are closed once idle).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of fds or a connection reset before accept: transient.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        // Streamed replies are many small writes: without TCP_NODELAY each waits
        // for the peer's delayed ACK (up to 40 ms a turn).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let router = router.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, permit, peer, router, limits, stop).await;
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let counts = Arc::new(Counts::default());
    let io = TimedIo::new(stream, permit, counts.clone(), limits);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // What `into_make_service_with_connect_info` would give handlers.
        request.extensions_mut().insert(ConnectInfo(peer));
        counts.started.fetch_add(1, Ordering::SeqCst);
        counts.busy.fetch_add(1, Ordering::SeqCst);
        let guard = BusyGuard(counts.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                guard.0.upgraded.store(true, Ordering::SeqCst);
            }
            // The connection stays busy until the response body is written.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(GuardedBody {
                    body,
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer would also run while a keep-alive connection
    // is idle (one deadline for both); TimedIo keeps the two apart.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        _ = stopped(&mut stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error during shutdown");
    }
}

/// Resolves once shutdown was asked (the watch guard is not held across awaits).
async fn stopped(receiver: &mut watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

/// Requests of one connection: started so far, and in flight.
#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    busy: AtomicUsize,
    /// The reader parked while a request was busy: woken when none is, so
    /// the idle deadline starts even if hyper had no reason to read again.
    reader: AtomicWaker,
    /// Answered 101: the socket belongs to the upgrade's handler now.
    upgraded: AtomicBool,
}

/// Counts a request as in flight until its response body is dropped.
struct BusyGuard(Arc<Counts>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.reader.wake();
        }
    }
}

struct GuardedBody {
    body: Body,
    _guard: BusyGuard,
}

impl HttpBody for GuardedBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in flight: no deadline here.
    Busy,
    /// Between requests, nothing of the next one read yet.
    Idle,
    /// Reading a request's headers (or waiting for the first request).
    Head,
}

/// The socket, with the idle and header deadlines checked on every read.
struct TimedIo {
    stream: TcpStream,
    /// The connection's slot under `max_connections`, released with the
    /// socket (an upgraded one outlives hyper's connection task).
    _permit: OwnedSemaphorePermit,
    counts: Arc<Counts>,
    /// `counts.started` when last read: a change means a request came and
    /// (if none is busy) went since, even if no read happened meanwhile.
    seen_started: usize,
    limits: ServerLimits,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
}

impl TimedIo {
    fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        counts: Arc<Counts>,
        limits: ServerLimits,
    ) -> Self {
        Self {
            stream,
            _permit: permit,
            counts,
            seen_started: 0,
            limits,
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
        }
    }

    fn enter(&mut self, phase: Phase) {
        let wait = match phase {
            Phase::Busy => None,
            Phase::Idle => Some(self.limits.idle_timeout),
            Phase::Head => Some(self.limits.header_read_timeout),
        };
        self.phase = phase;
        if let Some(wait) = wait {
            self.deadline.as_mut().reset(Instant::now() + wait);
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.counts.upgraded.load(Ordering::SeqCst) {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let started = this.counts.started.load(Ordering::SeqCst);
        let busy = this.counts.busy.load(Ordering::SeqCst) > 0;
        if busy {
            if this.phase != Phase::Busy {
                this.enter(Phase::Busy);
            }
        } else if this.phase == Phase::Busy || started != this.seen_started {
            this.enter(Phase::Idle);
        }
        this.seen_started = started;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                this.counts.reader.register(cx.waker());
                if this.phase != Phase::Busy && this.deadline.as_mut().poll(cx).is_ready() {
                    let what = if this.phase == Phase::Idle {
                        "idle keep-alive timeout"
                    } else {
                        "header read timeout"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
