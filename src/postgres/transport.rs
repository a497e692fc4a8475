//! The socket under both PostgreSQL clients (the replication connection and the ordinary SQL
//! connection): plain TCP or TLS (tokio-rustls), opened and negotiated as `sslmode` requires.
//!
//! Owns the SSLRequest exchange, the TLS handshake, and what the authentication policy needs to
//! know of the result ([`TlsFacts`]: encrypted, verified, the `tls-server-end-point` channel
//! binding data).
//!
//! Invariants:
//! - TLS follows [`SslMode`]: only `prefer` continues in plaintext, and only when the server
//!   answers the SSLRequest with `N`; `require`/`verify-*` never fall back.
//! - Exactly one byte is read as the answer to the SSLRequest; anything after it belongs to the
//!   TLS handshake.
//! - The end-point hash follows RFC 5929: the server's leaf certificate hashed with its
//!   signature's hash function, SHA-256 in place of MD5 or SHA-1; none when the signature
//!   algorithm names no single hash function (Ed25519, RSASSA-PSS, ...).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::oid::db::rfc5912 as oid;

use super::auth_policy::TlsFacts;
use super::connect::{ConnectParams, SslMode};
use super::error::PgError;
use super::tls::tls_config;

/// The socket, plain or TLS.
pub(crate) enum Transport {
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

impl Transport {
    /// Whether the socket runs TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// What the authentication policy needs to know of this socket, opened for `params`.
    pub(crate) fn facts(&self, params: &ConnectParams) -> TlsFacts {
        let Transport::Tls(tls) = self else {
            return TlsFacts::default();
        };
        let (_, session) = tls.get_ref();
        TlsFacts {
            encrypted: true,
            // The handshake succeeded, so a verifying configuration verified the certificate.
            verified: params.authenticates_server(),
            end_point: session
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| tls_server_end_point(leaf.as_ref())),
        }
    }
}

/// Idle time before the first TCP keepalive probe.
const TCP_KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

/// `ecdsa-with-SHA1` (RFC 5758), which the RFC 5912 table lacks.
const ECDSA_WITH_SHA_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");

/// The `tls-server-end-point` channel binding data of a DER certificate (RFC 5929 section 4.1).
pub(crate) fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let cert = Certificate::from_der(der).ok()?;
    let hash = match cert.signature_algorithm.oid {
        oid::MD_5_WITH_RSA_ENCRYPTION
        | oid::SHA_1_WITH_RSA_ENCRYPTION
        | oid::DSA_WITH_SHA_1
        | ECDSA_WITH_SHA_1
        | oid::SHA_256_WITH_RSA_ENCRYPTION
        | oid::ECDSA_WITH_SHA_256
        | oid::DSA_WITH_SHA_256 => Sha256::digest(der).to_vec(),
        oid::SHA_224_WITH_RSA_ENCRYPTION | oid::ECDSA_WITH_SHA_224 | oid::DSA_WITH_SHA_224 => {
            Sha224::digest(der).to_vec()
        }
        oid::SHA_384_WITH_RSA_ENCRYPTION | oid::ECDSA_WITH_SHA_384 => Sha384::digest(der).to_vec(),
        oid::SHA_512_WITH_RSA_ENCRYPTION | oid::ECDSA_WITH_SHA_512 => Sha512::digest(der).to_vec(),
        _ => return None,
    };
    Some(hash)
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
pub(crate) async fn open_transport(params: &ConnectParams) -> Result<Transport, PgError> {
    let mut tcp = TcpStream::connect((params.host.as_str(), params.port)).await?;
    tcp.set_nodelay(true)?;
    // TCP keepalive after 2 hours idle, as tokio-postgres' own connect sets it: a peer that
    // vanished is noticed even by a connection waiting on a long query.
    socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE_IDLE))?;
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
