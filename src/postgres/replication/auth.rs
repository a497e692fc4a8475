//! Authentication of the replication connection: SCRAM-SHA-256 (without channel binding),
//! md5 and cleartext passwords.
//!
//! Owns the exchange from the startup message's reply up to AuthenticationOk.
//!
//! Invariants:
//! - The password is only ever written into the outgoing buffer; it is never logged and never
//!   part of an error message.
//! - Mechanisms this client cannot do (GSSAPI, SSPI, Kerberos, SASL without SCRAM-SHA-256) are
//!   refused with an `Auth` error naming what to configure instead.
//! - The server's final SCRAM signature is verified.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::Conn;
use super::frame::{Frame, server_error, unexpected};
use crate::postgres::connect::ConnectParams;
use crate::postgres::error::PgError;

/// The password for an authentication request, or an `Auth` error if there is none.
fn password_for(params: &ConnectParams) -> Result<&str, PgError> {
    params
        .password
        .as_ref()
        .map(|p| p.expose())
        .ok_or_else(|| PgError::Auth("the server asks for a password but none is given".into()))
}

/// Appends a PasswordMessage (cleartext or md5 hash).
fn put_password(conn: &mut Conn, password: &[u8]) -> Result<(), PgError> {
    frontend::password_message(password, &mut conn.wbuf)
        .map_err(|_| PgError::Auth("the password must not contain NUL bytes".to_string()))
}

/// Runs the authentication exchange up to AuthenticationOk.
pub(super) async fn authenticate(conn: &mut Conn, params: &ConnectParams) -> Result<(), PgError> {
    loop {
        let message = match conn.recv().await? {
            Frame::Message(m) => m,
            frame => return Err(unexpected(&frame, "during authentication")),
        };
        match message {
            Message::AuthenticationOk => {
                tracing::debug!("authenticated");
                return Ok(());
            }
            Message::AuthenticationCleartextPassword => {
                if !conn.is_tls() {
                    tracing::warn!(
                        "server asks for a cleartext password over an unencrypted connection"
                    );
                }
                put_password(conn, password_for(params)?.as_bytes())?;
                conn.flush_out().await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(
                    params.user.as_bytes(),
                    password_for(params)?.as_bytes(),
                    body.salt(),
                );
                put_password(conn, hash.as_bytes())?;
                conn.flush_out().await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram = false;
                while let Some(m) = mechanisms
                    .next()
                    .map_err(|e| PgError::Protocol(format!("malformed SASL mechanisms: {e}")))?
                {
                    scram |= m == SCRAM_SHA_256;
                }
                if !scram {
                    return Err(PgError::Auth(
                        "the server offers no SASL mechanism this client supports (needs \
                         SCRAM-SHA-256)"
                            .to_string(),
                    ));
                }
                scram_sha_256(conn, password_for(params)?).await?;
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => {
                return Err(PgError::Auth(
                    "the server requires an authentication method this client does not support \
                     (GSSAPI/SSPI/Kerberos); use scram-sha-256 or md5 in pg_hba.conf"
                        .to_string(),
                ));
            }
            other => return Err(unexpected(&Frame::Message(other), "during authentication")),
        }
    }
}

/// SCRAM-SHA-256 without channel binding (the client says it does not support it, which
/// servers accept also over TLS).
async fn scram_sha_256(conn: &mut Conn, password: &str) -> Result<(), PgError> {
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut conn.wbuf)
        .map_err(|e| PgError::Protocol(format!("cannot frame a SASL message: {e}")))?;
    conn.flush_out().await?;
    match conn.recv().await? {
        Frame::Message(Message::AuthenticationSaslContinue(body)) => scram
            .update(body.data())
            .map_err(|e| PgError::Auth(format!("invalid SCRAM challenge from the server: {e}")))?,
        Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
        frame => return Err(unexpected(&frame, "during SCRAM authentication")),
    }
    frontend::sasl_response(scram.message(), &mut conn.wbuf)
        .map_err(|e| PgError::Protocol(format!("cannot frame a SASL message: {e}")))?;
    conn.flush_out().await?;
    match conn.recv().await? {
        Frame::Message(Message::AuthenticationSaslFinal(body)) => {
            scram.finish(body.data()).map_err(|e| {
                PgError::Auth(format!("the server's SCRAM signature does not verify: {e}"))
            })?;
        }
        Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
        frame => return Err(unexpected(&frame, "during SCRAM authentication")),
    }
    Ok(())
}
