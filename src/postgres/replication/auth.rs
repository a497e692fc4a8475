//! Authentication of the replication connection: SCRAM-SHA-256 with channel binding
//! (SCRAM-SHA-256-PLUS, `tls-server-end-point`) or without, and md5 and cleartext passwords
//! where `postgres::auth_policy` allows them (over TLS with a verified certificate only).
//!
//! Owns the exchange from the startup message's reply up to AuthenticationOk.
//!
//! Invariants:
//! - Every authentication request is judged by [`AuthPolicy`] before anything is answered; a
//!   refused request leaves the connection without a byte derived from the password.
//! - The password is only ever written into the outgoing buffer; it is never logged and never
//!   part of an error message.
//! - Mechanisms this client cannot do (GSSAPI, SSPI, Kerberos, SASL without SCRAM-SHA-256) are
//!   refused with an `Auth` error naming what to configure instead.
//! - The server's final SCRAM signature is verified.

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::Conn;
use super::frame::{Frame, server_error, unexpected};
use crate::postgres::auth_policy::{AuthPolicy, AuthRequest, Scram, TlsFacts, Verdict};
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
    let facts = conn.io.facts(params);
    let mut policy = AuthPolicy::new(params, &facts);
    loop {
        let message = match conn.recv().await? {
            Frame::Message(m) => m,
            frame => return Err(unexpected(&frame, "during authentication")),
        };
        let verdict = match AuthRequest::of(&message)? {
            Some(request) => policy.judge(request)?,
            None => Verdict::Other,
        };
        match (verdict, message) {
            (Verdict::Done, _) => {
                tracing::debug!("authenticated");
                return Ok(());
            }
            (Verdict::SendPassword, Message::AuthenticationCleartextPassword) => {
                put_password(conn, password_for(params)?.as_bytes())?;
                conn.flush_out().await?;
            }
            (Verdict::SendPassword, Message::AuthenticationMd5Password(body)) => {
                let hash = md5_hash(
                    params.user.as_bytes(),
                    password_for(params)?.as_bytes(),
                    body.salt(),
                );
                put_password(conn, hash.as_bytes())?;
                conn.flush_out().await?;
            }
            (Verdict::Scram(how), _) => {
                scram_sha_256(conn, password_for(params)?, how, &facts).await?;
            }
            (_, Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
            (_, other) => {
                return Err(unexpected(&Frame::Message(other), "during authentication"));
            }
        }
    }
}

/// SCRAM-SHA-256, bound to the TLS channel (`-PLUS`) or not, as the policy decided.
async fn scram_sha_256(
    conn: &mut Conn,
    password: &str,
    how: Scram,
    facts: &TlsFacts,
) -> Result<(), PgError> {
    let (mechanism, binding) = match (how, &facts.end_point) {
        (Scram::Plus, Some(hash)) => (
            SCRAM_SHA_256_PLUS,
            ChannelBinding::tls_server_end_point(hash.clone()),
        ),
        (Scram::Plus, None) => {
            return Err(PgError::Auth(
                "channel binding was chosen without channel binding data".to_string(),
            ));
        }
        (Scram::Unrequested, _) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
        (Scram::Unsupported, _) => (SCRAM_SHA_256, ChannelBinding::unsupported()),
    };
    let mut scram = ScramSha256::new(password.as_bytes(), binding);
    frontend::sasl_initial_response(mechanism, scram.message(), &mut conn.wbuf)
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
