//! The stream under the ordinary SQL connection: our own [`Transport`] (the same SSLRequest
//! exchange, TLS handshake and certificate verification as the replication connection), handed
//! to tokio-postgres with the authentication policy watching what the server asks.
//!
//! tokio-postgres answers a cleartext or MD5 request whenever it has a password; the policy
//! forbids that without verified TLS. So until authentication completes, [`GuardedStream`]
//! reads whole backend frames itself and has [`AuthPolicy`] judge every authentication request
//! before tokio-postgres sees it: a refused request becomes a read error carrying the policy's
//! [`PgError::Auth`] (recovered by [`refusal`]), so tokio-postgres never gets to write a
//! password. After AuthenticationOk the stream passes bytes straight through.
//!
//! The socket is already negotiated when tokio-postgres gets it, so tokio-postgres is told to
//! use direct TLS (no SSLRequest of its own) and [`HandOver`] is the "TLS connector" that hands
//! the stream over as it is, with the channel binding data of our TLS session (tokio-postgres
//! then runs SCRAM-SHA-256-PLUS itself under the same rule as the policy).
//!
//! Invariants:
//! - Bytes reach tokio-postgres only after the frame they belong to was judged (during
//!   authentication); nothing is reordered or dropped.
//! - A refusal is final: every later read fails the same way.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use super::auth_policy::{AuthPolicy, AuthRequest};
use super::connect::ConnectParams;
use super::error::PgError;
use super::replication::frame::{Frame, frame_len, parse_frame};
use super::transport::Transport;

/// Bytes read from the socket at a time while watching authentication.
const CHUNK: usize = 8 * 1024;

/// A [`Transport`] whose authentication phase is judged by the policy.
pub(crate) struct GuardedStream {
    io: Transport,
    /// `Some` until AuthenticationOk has been passed on.
    policy: Option<AuthPolicy>,
    /// Bytes read but not yet judged (the start of an incomplete frame).
    pending: BytesMut,
    /// Bytes judged and not yet read by tokio-postgres.
    judged: BytesMut,
    /// The `tls-server-end-point` data of the TLS session, if any.
    end_point: Option<Vec<u8>>,
    /// The refusal, once there was one.
    refused: Option<String>,
}

impl GuardedStream {
    /// Wraps `io`, opened for `params`.
    pub(crate) fn new(io: Transport, params: &ConnectParams) -> GuardedStream {
        let facts = io.facts(params);
        GuardedStream {
            policy: Some(AuthPolicy::new(params, &facts)),
            end_point: facts.end_point,
            io,
            pending: BytesMut::new(),
            judged: BytesMut::new(),
            refused: None,
        }
    }

    /// Moves every complete frame of `pending` to `judged` after judging it. Stops watching
    /// after AuthenticationOk.
    fn judge_pending(&mut self) -> Result<(), PgError> {
        while let Some(policy) = &mut self.policy {
            let Some(total) = frame_len(&self.pending)? else {
                break;
            };
            if self.pending.len() < total {
                break;
            }
            let frame = self.pending.split_to(total);
            if frame[0] == b'R'
                && let Some(Frame::Message(message)) = parse_frame(&mut frame.clone())?
                && let Some(request) = AuthRequest::of(&message)?
            {
                policy.judge(request)?;
                if request == AuthRequest::Ok {
                    self.policy = None;
                }
            }
            self.judged.unsplit(frame);
        }
        if self.policy.is_none() {
            self.judged.unsplit(self.pending.split());
        }
        Ok(())
    }

    /// The error every read returns after a refusal.
    fn refusal_error(message: &str) -> io::Error {
        io::Error::other(PgError::Auth(message.to_string()))
    }
}

/// The policy's refusal inside a tokio-postgres error, as the `PgError` it was.
pub(crate) fn refusal(e: &tokio_postgres::Error) -> Option<PgError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(pg) = s
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<PgError>())
        {
            return match pg {
                PgError::Auth(m) => Some(PgError::Auth(m.clone())),
                PgError::Protocol(m) => Some(PgError::Protocol(m.clone())),
                _ => None,
            };
        }
        source = s.source();
    }
    None
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(message) = &this.refused {
                return Poll::Ready(Err(GuardedStream::refusal_error(message)));
            }
            if !this.judged.is_empty() {
                let n = buf.remaining().min(this.judged.len());
                buf.put_slice(&this.judged[..n]);
                this.judged.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.policy.is_none() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: pass on what is left (tokio-postgres reports the cut message).
                this.policy = None;
                this.judged.unsplit(this.pending.split());
                if this.judged.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.pending.extend_from_slice(read.filled());
            match this.judge_pending() {
                Ok(()) => {}
                Err(PgError::Auth(message)) => this.refused = Some(message),
                Err(e) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl TlsStream for GuardedStream {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.end_point {
            Some(hash) => ChannelBinding::tls_server_end_point(hash.clone()),
            None => ChannelBinding::none(),
        }
    }
}

/// The "TLS connector" for tokio-postgres' direct TLS: the stream is already negotiated, so it
/// is handed over unchanged.
pub(crate) struct HandOver;

impl TlsConnect<GuardedStream> for HandOver {
    type Stream = GuardedStream;
    type Error = io::Error;
    type Future = Ready<io::Result<GuardedStream>>;

    fn connect(self, stream: GuardedStream) -> Self::Future {
        ready(Ok(stream))
    }
}
