//! What a connection may answer to the server's authentication requests: the one decision,
//! shared by the replication client and the ordinary SQL connection.
//!
//! Owns the downgrade rules (libpq's `require_auth`/`channel_binding` semantics, made strict):
//! - A cleartext or MD5 password is sent only over TLS with a verified server certificate
//!   (`verify-full`, or `verify-ca`/`require` with an `sslrootcert` file: see
//!   `ConnectParams::authenticates_server`). Without verification an on-path attacker can
//!   refuse TLS or present a certificate of its own, ask for the password and then connect in
//!   our place; SCRAM never gives away the password, so it stays allowed.
//! - `channel_binding=require` accepts SCRAM-SHA-256-PLUS only: a connection without TLS, a
//!   server that does not offer it, a certificate without a `tls-server-end-point` hash, a
//!   cleartext/MD5 request and an AuthenticationOk without that exchange (trust) all fail.
//! - SCRAM binds to the TLS channel whenever it can (TLS, the server offers -PLUS, the
//!   certificate has an end-point hash) unless `channel_binding=disable`, as libpq does; over
//!   TLS without -PLUS on offer it says "supported but not requested", so a server that does
//!   support it detects the stripped mechanism list.
//!
//! Invariants:
//! - [`AuthPolicy::judge`] runs on every authentication request before anything derived from
//!   the password is written, in both clients.
//! - Every refusal is a [`PgError::Auth`] saying why and what to configure, never carrying the
//!   password.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use postgres_protocol::message::backend::Message;

use super::connect::{ChannelBindingMode, ConnectParams, SslMode};
use super::error::PgError;

/// What the policy needs to know of the established socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsFacts {
    /// The connection runs over TLS.
    pub(crate) encrypted: bool,
    /// ... and the handshake authenticated the server (`ConnectParams::authenticates_server`).
    pub(crate) verified: bool,
    /// The `tls-server-end-point` channel binding data (RFC 5929): the hash of the server's
    /// certificate, when TLS is on and the certificate's signature algorithm defines one.
    pub(crate) end_point: Option<Vec<u8>>,
}

/// An authentication request of the server, as far as the policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthRequest {
    /// AuthenticationOk.
    Ok,
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password.
    Md5,
    /// AuthenticationSASL, with the SCRAM mechanisms it offers.
    Sasl {
        /// `SCRAM-SHA-256` is offered.
        scram: bool,
        /// `SCRAM-SHA-256-PLUS` is offered.
        scram_plus: bool,
    },
    /// A mechanism neither client runs: GSSAPI, SSPI, Kerberos, SCM credentials.
    Unsupported,
    /// A SASL continuation or final message (the SCRAM exchange's own business).
    Other,
}

impl AuthRequest {
    /// The request `message` makes, or `None` when it is not an authentication message.
    pub(crate) fn of(message: &Message) -> Result<Option<AuthRequest>, PgError> {
        Ok(Some(match message {
            Message::AuthenticationOk => AuthRequest::Ok,
            Message::AuthenticationCleartextPassword => AuthRequest::Cleartext,
            Message::AuthenticationMd5Password(_) => AuthRequest::Md5,
            Message::AuthenticationSasl(body) => {
                let (mut scram, mut scram_plus) = (false, false);
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms
                    .next()
                    .map_err(|e| PgError::Protocol(format!("malformed SASL mechanisms: {e}")))?
                {
                    scram |= m == SCRAM_SHA_256;
                    scram_plus |= m == SCRAM_SHA_256_PLUS;
                }
                AuthRequest::Sasl { scram, scram_plus }
            }
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => AuthRequest::Unsupported,
            Message::AuthenticationSaslContinue(_) | Message::AuthenticationSaslFinal(_) => {
                AuthRequest::Other
            }
            _ => return Ok(None),
        }))
    }
}

/// How SCRAM is to be run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scram {
    /// SCRAM-SHA-256-PLUS bound to the TLS channel (`p=tls-server-end-point`).
    Plus,
    /// SCRAM-SHA-256, saying we could bind but the server did not offer it (`y`).
    Unrequested,
    /// SCRAM-SHA-256, saying we do not bind (`n`).
    Unsupported,
}

/// The policy's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Authentication is complete.
    Done,
    /// Send the password (cleartext or MD5-hashed, as asked).
    SendPassword,
    /// Run SCRAM this way.
    Scram(Scram),
    /// Not the policy's business (a SASL continuation, a mechanism the client refuses anyway).
    Other,
}

/// The authentication policy of one connection attempt.
#[derive(Clone, Debug)]
pub(crate) struct AuthPolicy {
    sslmode: SslMode,
    channel_binding: ChannelBindingMode,
    encrypted: bool,
    verified: bool,
    end_point: bool,
    /// A SCRAM-SHA-256-PLUS exchange was started.
    bound: bool,
}

/// What to configure instead of sending a password the policy refuses.
const DOWNGRADE_FIX: &str = "use scram-sha-256 for this user in the server's pg_hba.conf (with \
    password_encryption = scram-sha-256 and the password set again), or connect with \
    sslmode=verify-full and sslrootcert set to the CA that signed the server certificate";

impl AuthPolicy {
    /// The policy for `params` over a socket with these facts.
    pub(crate) fn new(params: &ConnectParams, tls: &TlsFacts) -> AuthPolicy {
        AuthPolicy {
            sslmode: params.sslmode,
            channel_binding: params.channel_binding,
            encrypted: tls.encrypted,
            verified: tls.encrypted && tls.verified,
            end_point: tls.encrypted && tls.end_point.is_some(),
            bound: false,
        }
    }

    /// Decides how to answer `request`, or refuses it.
    pub(crate) fn judge(&mut self, request: AuthRequest) -> Result<Verdict, PgError> {
        let require = self.channel_binding == ChannelBindingMode::Require;
        match request {
            AuthRequest::Ok if require && !self.bound => Err(PgError::Auth(
                "channel_binding=require, but the server accepted the connection without \
                 SCRAM-SHA-256-PLUS authentication (trust in pg_hba.conf?); use scram-sha-256 \
                 in pg_hba.conf over TLS, or remove channel_binding=require"
                    .to_string(),
            )),
            AuthRequest::Ok => Ok(Verdict::Done),
            AuthRequest::Cleartext | AuthRequest::Md5 => {
                let what = if request == AuthRequest::Md5 {
                    "an MD5-hashed password"
                } else {
                    "a cleartext password"
                };
                if require {
                    return Err(PgError::Auth(format!(
                        "channel_binding=require, but the server asks for {what}, which cannot \
                         be bound to the TLS channel; use scram-sha-256 for this user in the \
                         server's pg_hba.conf"
                    )));
                }
                if !self.verified {
                    return Err(PgError::Auth(format!(
                        "the server asks for {what} over {}; driftless sends a password only \
                         over TLS with a verified server certificate, so that an on-path \
                         attacker cannot collect it. Nothing was sent; {DOWNGRADE_FIX}",
                        self.channel()
                    )));
                }
                Ok(Verdict::SendPassword)
            }
            AuthRequest::Sasl { scram, scram_plus } => {
                let may_bind = self.channel_binding != ChannelBindingMode::Disable;
                if may_bind && scram_plus && self.end_point {
                    self.bound = true;
                    return Ok(Verdict::Scram(Scram::Plus));
                }
                if require {
                    let why = if !self.encrypted {
                        format!("the connection is not TLS (sslmode={})", self.sslmode)
                    } else if !scram_plus {
                        "the server does not offer SCRAM-SHA-256-PLUS".to_string()
                    } else {
                        "the server certificate's signature algorithm defines no \
                         tls-server-end-point hash"
                            .to_string()
                    };
                    return Err(PgError::Auth(format!(
                        "channel_binding=require, but {why}; nothing was sent"
                    )));
                }
                if !scram {
                    return Err(PgError::Auth(
                        "the server offers no SASL mechanism this client supports (needs \
                         SCRAM-SHA-256)"
                            .to_string(),
                    ));
                }
                Ok(Verdict::Scram(if may_bind && self.end_point {
                    Scram::Unrequested
                } else {
                    Scram::Unsupported
                }))
            }
            AuthRequest::Unsupported => Err(PgError::Auth(
                "the server requires an authentication method driftless does not support \
                 (GSSAPI/SSPI/Kerberos); use scram-sha-256 in pg_hba.conf"
                    .to_string(),
            )),
            AuthRequest::Other => Ok(Verdict::Other),
        }
    }

    /// The connection's protection, in words.
    fn channel(&self) -> String {
        if self.encrypted {
            format!(
                "TLS without certificate verification (sslmode={})",
                self.sslmode
            )
        } else {
            format!("an unencrypted connection (sslmode={})", self.sslmode)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, ErrorClass};

    fn policy(url_query: &str, encrypted: bool, verified: bool, end_point: bool) -> AuthPolicy {
        let params = ConnectParams::from_url(&format!("postgres://u:pw@h/db?{url_query}")).unwrap();
        let facts = TlsFacts {
            encrypted,
            verified,
            end_point: end_point.then(|| vec![1; 32]),
        };
        AuthPolicy::new(&params, &facts)
    }

    fn refused(result: Result<Verdict, PgError>, expected: &str) {
        let err = result.unwrap_err();
        assert!(matches!(err, PgError::Auth(_)), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(err.to_string().contains(expected), "{err}");
    }

    const SCRAM_ONLY: AuthRequest = AuthRequest::Sasl {
        scram: true,
        scram_plus: false,
    };
    const BOTH: AuthRequest = AuthRequest::Sasl {
        scram: true,
        scram_plus: true,
    };

    #[test]
    fn passwords_go_only_over_verified_tls() {
        for request in [AuthRequest::Cleartext, AuthRequest::Md5] {
            // (query, encrypted, verified)
            for (query, encrypted, verified) in [
                ("sslmode=disable", false, false),
                ("sslmode=prefer", false, false),
                ("sslmode=prefer", true, false),
                ("sslmode=require", true, false),
                // A verifying mode that somehow ended up without TLS is still refused.
                ("sslmode=verify-full", false, true),
            ] {
                let result = policy(query, encrypted, verified, encrypted).judge(request);
                refused(result, "verify-full");
            }
            for query in [
                "sslmode=verify-full",
                "sslmode=verify-ca",
                "sslmode=require&sslrootcert=/ca.pem",
            ] {
                let verdict = policy(query, true, true, true).judge(request).unwrap();
                assert_eq!(verdict, Verdict::SendPassword, "{query}");
            }
        }
        let text = policy("sslmode=prefer", false, false, false)
            .judge(AuthRequest::Cleartext)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("unencrypted") && text.contains("scram-sha-256"),
            "{text}"
        );
    }

    #[test]
    fn scram_binds_when_it_can() {
        let cases = [
            // (query, encrypted, end_point, request, verdict)
            ("", true, true, BOTH, Scram::Plus),
            ("", true, true, SCRAM_ONLY, Scram::Unrequested),
            ("", true, false, BOTH, Scram::Unsupported),
            ("", false, false, SCRAM_ONLY, Scram::Unsupported),
            (
                "channel_binding=disable",
                true,
                true,
                BOTH,
                Scram::Unsupported,
            ),
            ("channel_binding=require", true, true, BOTH, Scram::Plus),
        ];
        for (query, encrypted, end_point, request, expected) in cases {
            let mut p = policy(query, encrypted, false, end_point);
            assert_eq!(
                p.judge(request).unwrap(),
                Verdict::Scram(expected),
                "{query} {encrypted} {end_point} {request:?}"
            );
            assert_eq!(p.judge(AuthRequest::Other).unwrap(), Verdict::Other);
            let unsupported = p.judge(AuthRequest::Unsupported).unwrap_err().to_string();
            assert!(unsupported.contains("scram-sha-256"), "{unsupported}");
            assert_eq!(p.judge(AuthRequest::Ok).unwrap(), Verdict::Done);
        }
        // Trust without channel_binding=require is fine.
        let mut p = policy("", false, false, false);
        assert_eq!(p.judge(AuthRequest::Ok).unwrap(), Verdict::Done);
        let only_plus = AuthRequest::Sasl {
            scram: false,
            scram_plus: true,
        };
        refused(
            policy("", false, false, false).judge(only_plus),
            "SCRAM-SHA-256",
        );
    }

    #[test]
    fn channel_binding_require_fails_closed() {
        let require = "channel_binding=require&sslmode=verify-full";
        refused(
            policy(require, true, true, true).judge(SCRAM_ONLY),
            "does not offer",
        );
        refused(policy(require, false, false, false).judge(BOTH), "not TLS");
        refused(policy(require, true, true, false).judge(BOTH), "end-point");
        // Even over verified TLS, a password request cannot be bound.
        for request in [AuthRequest::Cleartext, AuthRequest::Md5] {
            refused(
                policy(require, true, true, true).judge(request),
                "cannot be bound",
            );
        }
        // AuthenticationOk without the -PLUS exchange (trust) is refused.
        refused(
            policy(require, true, true, true).judge(AuthRequest::Ok),
            "without",
        );
        let mut p = policy(require, true, true, true);
        assert_eq!(p.judge(BOTH).unwrap(), Verdict::Scram(Scram::Plus));
        assert_eq!(p.judge(AuthRequest::Ok).unwrap(), Verdict::Done);
    }
}
