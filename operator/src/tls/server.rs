//! The HTTPS server for the webhook and the report endpoint: tokio-rustls for TLS, hyper's
//! HTTP/1.1 connection, axum for routing, and a graceful shutdown that lets requests in
//! flight finish.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::report::throttle::Peer;

/// A client that opens a connection and never finishes the handshake or its headers
/// holds a task, nothing more, and only this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one server holds at most, whoever connects. How many requests are handled at once is
/// each router's own limit ([`MAX_REQUESTS_IN_FLIGHT`]), so that a router can read a body
/// before a request takes its slot.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections; one more is closed as soon as it is accepted.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { connections: 1024 }
    }
}

/// Requests a router handles at once over every connection; more wait their turn.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 256;

/// Serves `app` over HTTPS on `listener` until `shutdown` completes, then drains. The caller
/// binds, so a bind error is reported before anything runs (and tests can bind port 0).
pub async fn serve_listener(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_limits(listener, tls, app, shutdown, Limits::default()).await
}

/// [`serve_listener`] with these limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> io::Result<()> {
    let connection_slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "serving HTTPS");
    let acceptor = TlsAcceptor::from(tls);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "too many open connections; closed");
                    continue;
                };
                // Answers go out as soon as they are written: with Nagle's algorithm a small
                // last TLS record waits for the client's delayed ACK (40 ms on Linux).
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, %error, "cannot disable Nagle's algorithm");
                }
                let serve = connection(acceptor.clone(), stream, peer, app.clone(), stopping.clone());
                connections.spawn(async move {
                    serve.await;
                    drop(slot);
                });
            }
            // Reap finished connections so the set stays as large as the live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Ignored error: no connection task is listening, so nothing is in flight.
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
        connections.abort_all();
    }
    tracing::info!(address = %local, "HTTPS server stopped");
    Ok(())
}

async fn connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stopping: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Handlers that bound what one client may cost (refusals per address) read its address.
    let app = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer.ip()));
        request
    });
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
    tokio::pin!(conn);
    // Ends when shutdown is asked for (or the server is gone); holds no borrow of the flag.
    let stop = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop => {
            // Finish the request in flight, answer with `Connection: close`, then end.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
