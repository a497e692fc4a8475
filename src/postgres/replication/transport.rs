//! The socket under the replication connection: plain TCP or TLS (tokio-rustls), opened and
//! negotiated as `sslmode` requires.
//!
//! Owns the SSLRequest exchange and the TLS handshake.
//!
//! Invariants:
//! - TLS follows [`SslMode`]: only `prefer` continues in plaintext, and only when the server
//!   answers the SSLRequest with `N`; `require`/`verify-*` never fall back.
//! - Exactly one byte is read as the answer to the SSLRequest; anything after it belongs to the
//!   TLS handshake.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::postgres::connect::{ConnectParams, SslMode};
use crate::postgres::error::PgError;
use crate::postgres::tls::tls_config;

/// The socket, plain or TLS.
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Maps a TLS handshake failure: certificate/protocol problems are `Tls`, network ones `Io`.
fn tls_handshake_error(e: io::Error) -> PgError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => PgError::Tls(format!("tls handshake failed: {tls}")),
        None => PgError::Io(e),
    }
}

/// Opens the socket and negotiates TLS as `params.sslmode` requires.
pub(super) async fn open_transport(params: &ConnectParams) -> Result<Transport, PgError> {
    let mut tcp = TcpStream::connect((params.host.as_str(), params.port)).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls_config(params)? else {
        return Ok(Transport::Plain(tcp));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    // Exactly one byte: anything the server sent after it belongs to the TLS handshake.
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {
            let name = params.server_name()?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(tls_handshake_error)?;
            Ok(Transport::Tls(Box::new(tls)))
        }
        b'N' if params.sslmode == SslMode::Prefer => {
            tracing::debug!("server refused tls; continuing in plaintext (sslmode=prefer)");
            Ok(Transport::Plain(tcp))
        }
        b'N' => Err(PgError::Tls(format!(
            "the server does not accept TLS connections, but sslmode={}",
            params.sslmode
        ))),
        other => Err(PgError::Protocol(format!(
            "unexpected answer {:?} to the SSL request",
            char::from(other)
        ))),
    }
}
