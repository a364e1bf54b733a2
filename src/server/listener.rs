//! Accepting connections: a connection limit, TLS (rustls) with a handshake timeout, HTTP/1.1
//! with a header-read timeout (slow-loris clients are dropped), and graceful shutdown.

use super::config::Limits;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish (at most `limits.shutdown_grace_secs`), and waits for writes
/// that were handed to `writes`.
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    limits: Limits,
    writes: tokio_util::task::TaskTracker,
    shutdown: impl Future<Output = ()> + Send,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    let header_timeout = limits.header_timeout();
    tokio::pin!(shutdown);
    loop {
        // A permit first: past the limit, connections wait in the accept queue.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(connection).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(connection).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    let grace = std::time::Duration::from_secs(limits.shutdown_grace_secs);
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {grace:?}; closing their connections (writes already started still finish)"
        );
    }
    writes.close();
    writes.wait().await;
    tracing::info!("gateway stopped");
}
