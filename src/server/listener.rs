//! Accepting connections: a connection limit, TLS (rustls) with a handshake timeout, HTTP/1.1
//! with a header-read timeout (slow-loris clients are dropped, and so are connections idle
//! between requests for as long), a write timeout (clients that do not read their answers are
//! dropped), and graceful shutdown. A connection's slot is released when it closes, whatever
//! closed it.

use super::config::Limits;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
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
        // Under TLS too: the deadline is on the bytes the client accepts.
        let stream = WriteDeadline::new(stream, limits.write_timeout());
        // The client's address, for the audit log and the failed-login limit.
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(
            router.clone(),
            axum::extract::ConnectInfo(peer),
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // Held for the connection's life; dropped (the slot freed) when this task ends,
            // which it does when the connection closes or fails.
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

/// The bytes a client must accept, within `timeout`, once a write has had to wait: a write
/// that waited starts the clock, and the clock stops when everything hyper had to send was
/// accepted (a flush completed) or another [`MIN_PROGRESS`] bytes were. A client that never
/// reads, or reads slower than that, gets `TimedOut`: hyper closes the connection.
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    clock: Option<Pin<Box<Sleep>>>,
    /// Bytes accepted since the clock started.
    progress: usize,
}

/// How much of an answer a slow client must accept per `write_timeout`.
const MIN_PROGRESS: usize = 64 * 1024;

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            clock: None,
            progress: 0,
        }
    }

    /// The inner write is pending: start the clock if it is not running, and fail if it ran
    /// out.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let progress = &mut self.progress;
        let clock = self.clock.get_or_insert_with(|| {
            *progress = 0;
            Box::pin(tokio::time::sleep(timeout))
        });
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not accept the answer within limits.write_timeout_secs",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote(&mut self, written: usize) {
        if self.clock.is_some() {
            self.progress += written;
            if self.progress >= MIN_PROGRESS {
                self.clock = None;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> WriteDeadline<S> {
    /// What a write's poll becomes: a write that must wait starts (or checks) the deadline,
    /// and one that wrote counts its bytes.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Pending => self.waiting(cx),
            Poll::Ready(result) => {
                if let Ok(written) = result {
                    self.wrote(written);
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            Poll::Ready(result) => {
                // Everything there was to send was accepted.
                self.clock = None;
                Poll::Ready(result)
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.waiting(cx),
            Poll::Ready(result) => Poll::Ready(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn a_write_the_peer_never_accepts_fails_after_the_timeout() {
        // A peer that never reads: a duplex pipe with a small buffer.
        let (client, _peer) = tokio::io::duplex(1024);
        let mut guarded = WriteDeadline::new(client, Duration::from_millis(100));
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            guarded.write_all(&[0u8; 64 * 1024]),
        )
        .await
        .expect("the write timeout fired");
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
