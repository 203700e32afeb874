//! Listeners: accepts TCP connections (optionally TLS via rustls with ALPN), serves HTTP/1.1
//! and HTTP/2 on them with hyper, and shuts down gracefully — the listener closes at once so
//! new connections are refused, and in-flight requests get a grace period to finish.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::mtls::{ClientCert, OptionalClientCert};
use crate::body::Body;
use crate::forward::Peer;

/// Limits on how much of a request head hyper buffers and how long it waits for one.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Hard cap on buffered head bytes (HTTP/1) and header list size (HTTP/2). The pipeline's
    /// own, lower limit answers with the catalogue's JSON; this one protects memory.
    pub max_head_bytes: usize,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
}

/// Builds a TLS acceptor from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN and asking for
/// (not requiring) a client certificate.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read private key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    // Callers may present a certificate (mTLS credentials); callers with tokens need none.
    .with_client_cert_verifier(Arc::new(OptionalClientCert::new()))
    .with_single_cert(certs, key)
    .context("the certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `handler` on `listener` until `shutdown` turns true, then drains for up to `grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Peer, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = move |peer: Peer| {
            service_fn(move |req| {
                let response = handler(peer.clone(), req);
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let peer = Peer {
                        addr,
                        tls: false,
                        client_cert: None,
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service(peer));
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            let client_cert = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(ClientCert::from_chain);
                            let peer = Peer {
                                addr,
                                tls: true,
                                client_cert,
                            };
                            let conn =
                                builder.serve_connection(TokioIo::new(tls_stream), service(peer));
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%addr, error = %e, "connection ended with an error");
            }
        });
    }
    // Refuse new connections at once; let the open ones finish what they started.
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "connections still open after the grace period; closing them");
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
