//! An HTTP listener with the limits a public endpoint needs: at most `max_connections` at
//! once (beyond that, new connections wait in the kernel's backlog), request headers within
//! `header_read_timeout` (which in HTTP/1 also closes a connection idle that long between
//! requests), and any connection with no request in progress and no bytes moving for
//! `idle_timeout` closed, HTTP/2 included. Body timeouts are the handlers' (they read bodies
//! themselves).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt as _;

use crate::config::ServerSettings;

/// Activity of one connection, watched for idleness.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `epoch` of the last byte read or written.
    last: AtomicU64,
    /// Requests being answered.
    active: AtomicUsize,
}

struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .last
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Connections open right now, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub open: AtomicUsize,
    pub closed_idle: AtomicU64,
}

/// Serves `app` on `listener` until `stop` turns true, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerSettings,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut stop) => break,
        };
        let (io, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = io.set_nodelay(true);
        let (app, stats, stop) = (app.clone(), stats.clone(), stop.clone());
        tasks.spawn(async move {
            stats.open.fetch_add(1, Relaxed);
            connection(io, app, limits, &stats, stop).await;
            stats.open.fetch_sub(1, Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    io: TcpStream,
    app: Router,
    limits: ServerSettings,
    stats: &Stats,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let epoch = Instant::now();
    let io = Watched {
        io,
        activity: activity.clone(),
        epoch,
    };
    let svc_activity = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let activity = svc_activity.clone();
        activity.active.fetch_add(1, Relaxed);
        async move {
            let resp = app.oneshot(req.map(axum::body::Body::new)).await;
            activity.active.fetch_sub(1, Relaxed);
            resp
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    let mut check = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(10)));
    // Once asked to close, a connection gets this long to finish; then it is dropped (an
    // HTTP/2 peer that never answers our GOAWAY cannot keep it open).
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let give_up =
            closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = check.tick(), if closing.is_none() => {
                let now = epoch.elapsed().as_millis() as u64;
                let quiet = now.saturating_sub(activity.last.load(Relaxed));
                if activity.active.load(Relaxed) == 0 && quiet >= idle_ms {
                    stats.closed_idle.fetch_add(1, Relaxed);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + IDLE_GRACE);
                }
            }
            _ = stopped(&mut stop), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tokio::time::sleep_until(give_up), if closing.is_some() => return,
        }
    }
}

/// How long an idle connection asked to close may take to do so.
const IDLE_GRACE: Duration = Duration::from_secs(1);
/// How long requests in progress get to finish at shutdown (within Kubernetes's 30 s grace).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
