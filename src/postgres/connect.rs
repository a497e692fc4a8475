//! Connection parameters (URL parsing) and the ordinary SQL connection.
//!
//! Owns everything the replication connection and the tokio-postgres connection share: the
//! parsed [`ConnectParams`], the libpq-compatible [`SslMode`] and [`ChannelBindingMode`] names
//! (turned into a rustls configuration by `postgres::tls`), the one rule for "the server
//! certificate authenticates the server" ([`ConnectParams::authenticates_server`]), the session
//! settings (`SESSION_OPTIONS`) that make server text output and literals deterministic, and the
//! handshake timeout.
//!
//! Invariants:
//! - The password never appears in `Debug`, in `ConnectParams::redacted_url`, in logs or in
//!   error messages.
//! - Under `require`, `verify-ca` and `verify-full` a connection never falls back to plaintext;
//!   only `prefer` does, and only when the server answers the SSL request with `N`.
//! - Both clients open their socket with `postgres::transport` and answer authentication
//!   requests only as `postgres::auth_policy` allows (the SQL connection through
//!   `postgres::sql_stream`): a cleartext or MD5 password only over verified TLS.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::pki_types::ServerName;

use super::error::PgError;
use super::sql_stream::{GuardedStream, HandOver, refusal};
use super::transport::open_transport;

/// Session settings that make text output deterministic (our value converter depends on them).
/// Sent as the `options` startup parameter on every connection.
pub(crate) const SESSION_OPTIONS: &str = "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=iso_8601 \
    -c extra_float_digits=3 -c bytea_output=hex -c client_encoding=UTF8 \
    -c standard_conforming_strings=on";

/// How long opening a TCP connection may take before it fails (as an I/O timeout).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `application_name` used when the URL does not give one.
pub(crate) const DEFAULT_APPLICATION_NAME: &str = "driftless";

/// The PostgreSQL port used when the URL does not give one.
pub(crate) const DEFAULT_PORT: u16 = 5432;

/// TLS policy, with libpq's names and semantics. The default is `prefer`, as in libpq.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// Try TLS (without certificate verification); use plaintext only if the server refuses TLS.
    #[default]
    Prefer,
    /// TLS mandatory; no certificate verification unless `sslrootcert` is given, in which case
    /// the chain is verified as under `verify-ca`.
    Require,
    /// TLS mandatory; the certificate chain is verified (against `sslrootcert` or the system
    /// roots), the host name is not. As with libpq/OpenSSL, a self-signed server certificate
    /// that is itself listed in `sslrootcert` is accepted even if it carries the CA flag.
    VerifyCa,
    /// TLS mandatory; the certificate chain (as for `verify-ca`) and the host name are verified.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`verify-full`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, PgError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(PgError::Config(
                    "sslmode=allow is not supported; use disable, prefer, require, verify-ca or \
                     verify-full"
                        .to_string(),
                ));
            }
            other => {
                return Err(PgError::Config(format!(
                    "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or \
                     verify-full"
                )));
            }
        })
    }
}

/// Channel binding (SCRAM-SHA-256-PLUS with `tls-server-end-point`), with libpq's names and
/// semantics. The default is `prefer`, as in libpq.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelBindingMode {
    /// Never bind: SCRAM-SHA-256 only (the client says it does not support binding).
    Disable,
    /// Bind when the connection is TLS and the server offers SCRAM-SHA-256-PLUS.
    #[default]
    Prefer,
    /// Authenticate only with SCRAM-SHA-256-PLUS: fails before sending anything derived from
    /// the password when the connection is not TLS, when the server does not offer it, or when
    /// the server asks for a cleartext or MD5 password or for none at all.
    Require,
}

impl ChannelBindingMode {
    /// The libpq spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChannelBindingMode::Disable => "disable",
            ChannelBindingMode::Prefer => "prefer",
            ChannelBindingMode::Require => "require",
        }
    }
}

impl fmt::Display for ChannelBindingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelBindingMode {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, PgError> {
        match s {
            "disable" => Ok(ChannelBindingMode::Disable),
            "prefer" => Ok(ChannelBindingMode::Prefer),
            "require" => Ok(ChannelBindingMode::Require),
            other => Err(PgError::Config(format!(
                "invalid channel_binding {other:?}: expected disable, prefer or require"
            ))),
        }
    }
}

/// A password whose `Debug` and `Display` are redacted. Read it with `Password::expose`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The password itself; only for sending it to the server.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Password(s)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything needed to open a connection. `Debug` redacts the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectParams {
    /// Host name or IP address (no brackets around IPv6 addresses).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<Password>,
    /// Database name.
    pub dbname: String,
    /// TLS policy.
    pub sslmode: SslMode,
    /// PEM file with the CA certificate(s) to verify the server against; `system` (as in libpq)
    /// or absent means the system roots for `verify-ca`/`verify-full`.
    pub sslrootcert: Option<PathBuf>,
    /// `application_name` reported to the server (`pg_stat_activity`).
    pub application_name: String,
    /// Channel binding policy (`channel_binding`).
    pub channel_binding: ChannelBindingMode,
}

/// Characters percent-encoded in the URL parts we print.
const URL_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters percent-encoded in query values we print (paths keep their slashes).
const URL_QUERY_VALUE: &AsciiSet = &URL_PART.remove(b'/');

fn decode(part: &str, what: &str) -> Result<String, PgError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| PgError::Config(format!("{what} in the postgres URL is not valid UTF-8")))
}

impl ConnectParams {
    /// Parses `postgres://` or `postgresql://user:pass@host:port/db?sslmode=..&sslrootcert=..&
    /// channel_binding=..&application_name=..`. All parts are percent-decoded. Defaults: host
    /// `localhost`, port 5432, database = user name, sslmode `prefer`, channel_binding `prefer`,
    /// application name `driftless`. An unknown query parameter is an error naming it. Error
    /// messages never contain the password.
    pub fn from_url(url: &str) -> Result<Self, PgError> {
        // url::ParseError's Display never echoes the input, so the password cannot leak here.
        let parsed = url::Url::parse(url)
            .map_err(|e| PgError::Config(format!("invalid postgres URL: {e}")))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(PgError::Config(format!(
                "unsupported URL scheme {:?}: expected postgres:// or postgresql://",
                parsed.scheme()
            )));
        }
        let user = decode(parsed.username(), "the user name")?;
        if user.is_empty() {
            return Err(PgError::Config(
                "the postgres URL has no user name".to_string(),
            ));
        }
        let password = parsed
            .password()
            .map(|p| decode(p, "the password"))
            .transpose()?
            .map(Password);
        let host = match parsed.host() {
            None => "localhost".to_string(),
            Some(url::Host::Domain(d)) => decode(d, "the host")?,
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
        };
        if host.is_empty() {
            return Err(PgError::Config(
                "the postgres URL has an empty host".to_string(),
            ));
        }
        let port = parsed.port().unwrap_or(DEFAULT_PORT);
        let path = parsed.path();
        let path = path.strip_prefix('/').unwrap_or(path);
        if path.contains('/') {
            return Err(PgError::Config(
                "the postgres URL path must be a single database name".to_string(),
            ));
        }
        let dbname = match decode(path, "the database name")? {
            db if db.is_empty() => user.clone(),
            db => db,
        };

        let mut sslmode = None;
        let mut sslrootcert = None;
        let mut application_name = None;
        let mut channel_binding = None;
        for (key, value) in parsed.query_pairs() {
            let slot = match key.as_ref() {
                "sslmode" => &mut sslmode,
                "sslrootcert" => &mut sslrootcert,
                "application_name" => &mut application_name,
                "channel_binding" => &mut channel_binding,
                other => {
                    return Err(PgError::Config(format!(
                        "unknown parameter {other:?} in the postgres URL (supported: sslmode, \
                         sslrootcert, channel_binding, application_name)"
                    )));
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(PgError::Config(format!(
                    "parameter {key:?} is given twice in the postgres URL"
                )));
            }
        }
        let sslmode = match sslmode {
            Some(s) => s.parse()?,
            None => SslMode::default(),
        };
        Ok(ConnectParams {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert: sslrootcert.filter(|s| !s.is_empty()).map(PathBuf::from),
            application_name: application_name
                .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_string()),
            channel_binding: match channel_binding {
                Some(s) => s.parse()?,
                None => ChannelBindingMode::default(),
            },
        })
    }

    /// Whether the server certificate is verified against trust anchors, as libpq does it:
    /// under `verify-ca` and `verify-full`, and under `require` when `sslrootcert` is given.
    /// (How the TLS client is built; what a password needs is [`Self::authenticates_server`].)
    pub(crate) fn verifies_certificate(&self) -> bool {
        match self.sslmode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.sslrootcert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// Whether a verified handshake proves the peer is this server: `verify-full` (chain and
    /// host name), or `verify-ca`/`require` against an `sslrootcert` file of the operator's own
    /// (a private CA). `verify-ca` against the system roots checks no name, so any holder of
    /// any publicly trusted certificate passes it. Only such a connection may carry a
    /// cleartext or MD5 password.
    pub(crate) fn authenticates_server(&self) -> bool {
        let own_roots = self
            .sslrootcert
            .as_ref()
            .is_some_and(|p| p.as_os_str() != "system");
        match self.sslmode {
            SslMode::VerifyFull => true,
            SslMode::VerifyCa | SslMode::Require => own_roots,
            SslMode::Disable | SslMode::Prefer => false,
        }
    }

    /// Why this URL's TLS settings do not protect the connection against an on-path attacker,
    /// if they do not (`disable`, `prefer`, `require` without `sslrootcert`).
    pub(crate) fn tls_weakness(&self) -> Option<String> {
        let why = match self.sslmode {
            SslMode::Disable => "sslmode=disable: the connection is not encrypted",
            SslMode::Prefer => {
                "sslmode=prefer: TLS is used only if the server accepts it and its certificate is \
                 not verified, so an on-path attacker can impersonate the server or force \
                 plaintext"
            }
            SslMode::Require if self.sslrootcert.is_none() => {
                "sslmode=require without sslrootcert: the connection is encrypted but the server \
                 certificate is not verified, so an on-path attacker can impersonate the server"
            }
            SslMode::VerifyCa | SslMode::Require if !self.authenticates_server() => {
                "sslmode=verify-ca against the system roots: the certificate chain is verified \
                 but not the host name, so any holder of a publicly trusted certificate can \
                 impersonate the server (and no password is sent over it)"
            }
            _ => return None,
        };
        Some(why.to_string())
    }

    /// The URL with the password replaced by `***`; safe to log.
    pub(crate) fn redacted_url(&self) -> String {
        let enc = |s: &str| utf8_percent_encode(s, URL_PART).to_string();
        let password = if self.password.is_some() { ":***" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            enc(&self.host)
        };
        let mut url = format!(
            "postgres://{}{password}@{host}:{}/{}?sslmode={}",
            enc(&self.user),
            self.port,
            enc(&self.dbname),
            self.sslmode
        );
        if let Some(root) = &self.sslrootcert {
            let root = root.to_string_lossy();
            url.push_str("&sslrootcert=");
            url.push_str(&utf8_percent_encode(&root, URL_QUERY_VALUE).to_string());
        }
        url.push_str("&channel_binding=");
        url.push_str(self.channel_binding.as_str());
        url.push_str("&application_name=");
        url.push_str(&enc(&self.application_name));
        url
    }

    /// The TLS server name for this host (a DNS name or an IP address).
    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, PgError> {
        ServerName::try_from(self.host.clone()).map_err(|_| {
            PgError::Config(format!(
                "host {:?} is not a valid TLS server name",
                self.host
            ))
        })
    }
}

/// Runs a connection handshake within `CONNECT_TIMEOUT` (a timeout is an I/O error).
pub(crate) async fn within_connect_timeout<T>(
    handshake: impl std::future::Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(PgError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting took longer than {CONNECT_TIMEOUT:?}"),
        ))),
    }
}

/// Opens an ordinary SQL connection (tokio-postgres) over the same socket, TLS policy,
/// authentication policy and session settings as the replication connection, and spawns its
/// connection task (which logs and ends when the connection closes). The whole handshake is
/// bounded by `CONNECT_TIMEOUT`.
pub async fn connect_sql(params: &ConnectParams) -> Result<tokio_postgres::Client, PgError> {
    use tokio_postgres::config::{ChannelBinding, SslMode as TpSslMode, SslNegotiation};
    let mut config = tokio_postgres::Config::new();
    config
        .user(params.user.as_str())
        .dbname(params.dbname.as_str())
        .application_name(params.application_name.as_str())
        .options(SESSION_OPTIONS)
        // The socket is negotiated by `open_transport`; `HandOver` passes it on as it is.
        .ssl_mode(TpSslMode::Require)
        .ssl_negotiation(SslNegotiation::Direct)
        .channel_binding(match params.channel_binding {
            ChannelBindingMode::Disable => ChannelBinding::Disable,
            ChannelBindingMode::Prefer => ChannelBinding::Prefer,
            ChannelBindingMode::Require => ChannelBinding::Require,
        });
    if let Some(password) = &params.password {
        config.password(password.expose());
    }
    tracing::debug!(url = %params.redacted_url(), "connecting sql client");
    let (client, connection) = within_connect_timeout(async {
        let stream = GuardedStream::new(open_transport(params).await?, params);
        config
            .connect_raw(stream, HandOver)
            .await
            .map_err(|e| refusal(&e).unwrap_or(PgError::Sql(e)))
    })
    .await?;
    tokio::spawn(drive(connection));
    Ok(client)
}

/// Drives a tokio-postgres connection to its end, logging (without server DETAIL) how it ended.
async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    match connection.await {
        Ok(()) => tracing::debug!("sql connection closed"),
        Err(e) => tracing::warn!(error = %PgError::Sql(e), "sql connection ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, ErrorClass};

    #[test]
    fn parses_a_full_url() {
        let p = ConnectParams::from_url(
            "postgresql://al%40ice:p%40ss%3Aw%2Fd@db.example.com:6543/my%20db?sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&application_name=cdc%20one",
        )
        .unwrap();
        assert_eq!(p.host, "db.example.com");
        assert_eq!(p.port, 6543);
        assert_eq!(p.user, "al@ice");
        assert_eq!(p.password.as_ref().unwrap().expose(), "p@ss:w/d");
        assert_eq!(p.dbname, "my db");
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        assert_eq!(p.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(p.application_name, "cdc one");
    }

    #[test]
    fn applies_defaults() {
        let p = ConnectParams::from_url("postgres://bob@localhost").unwrap();
        assert_eq!(p.port, 5432);
        assert_eq!(p.dbname, "bob");
        assert_eq!(p.password, None);
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert_eq!(p.sslrootcert, None);
        assert_eq!(p.application_name, "driftless");
        let p = ConnectParams::from_url("postgres://bob@[::1]:7000/x").unwrap();
        assert_eq!(p.host, "::1");
        assert_eq!(
            p.redacted_url(),
            "postgres://bob@[::1]:7000/x?sslmode=prefer&channel_binding=prefer\
             &application_name=driftless"
        );
    }

    #[test]
    fn rejects_bad_input_without_leaking_the_password() {
        let secret = "s3cr3t-pw";
        let cases = [
            (
                format!("postgres://u:{secret}@h/db?sslmode=sometimes"),
                "sometimes",
            ),
            (format!("postgres://u:{secret}@h/db?sslmode=allow"), "allow"),
            (
                format!("postgres://u:{secret}@h/db?foo=1&connect_timeout=2"),
                "\"foo\"",
            ),
            (format!("mysql://u:{secret}@h/db"), "scheme"),
            (format!("postgres://u:{secret}@h:99999/db"), "invalid"),
            (format!("postgres://:{secret}@h/db"), "user"),
            (
                format!("postgres://u:{secret}@h/db?sslmode=require&sslmode=disable"),
                "twice",
            ),
            (format!("postgres://u:{secret}%FF@h/db"), "UTF-8"),
            (
                format!("postgres://u:{secret}@h/db?channel_binding=maybe"),
                "channel_binding",
            ),
        ];
        for (url, expected) in cases {
            let err = ConnectParams::from_url(&url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, PgError::Config(_)), "{url}: {err:?}");
            assert!(text.contains(expected), "{url}: {text}");
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(!format!("{err:?}").contains(secret));
            assert_eq!(err.class(), ErrorClass::Fatal);
        }
    }

    #[test]
    fn channel_binding_and_certificate_verification() {
        let p =
            |query: &str| ConnectParams::from_url(&format!("postgres://u@h/db?{query}")).unwrap();
        assert_eq!(p("").channel_binding, ChannelBindingMode::Prefer);
        for mode in [
            ChannelBindingMode::Disable,
            ChannelBindingMode::Prefer,
            ChannelBindingMode::Require,
        ] {
            let parsed = p(&format!("channel_binding={mode}"));
            assert_eq!(parsed.channel_binding, mode);
            assert!(
                parsed
                    .redacted_url()
                    .contains(&format!("channel_binding={mode}"))
            );
        }
        // (query, certificate verified, what the weakness names)
        let cases = [
            ("sslmode=disable", false, Some("not encrypted")),
            (
                "sslmode=disable&sslrootcert=/ca.pem",
                false,
                Some("not encrypted"),
            ),
            ("", false, Some("sslmode=prefer")),
            (
                "sslmode=prefer&sslrootcert=/ca.pem",
                false,
                Some("force plaintext"),
            ),
            ("sslmode=require", false, Some("without sslrootcert")),
            ("sslmode=require&sslrootcert=/ca.pem", true, None),
            ("sslmode=verify-ca&sslrootcert=/ca.pem", true, None),
            ("sslmode=verify-ca", false, Some("system roots")),
            (
                "sslmode=verify-ca&sslrootcert=system",
                false,
                Some("system roots"),
            ),
            ("sslmode=verify-full", true, None),
            ("sslmode=verify-full&sslrootcert=/ca.pem", true, None),
        ];
        for (query, authenticated, weakness) in cases {
            let params = p(query);
            assert_eq!(params.authenticates_server(), authenticated, "{query}");
            let got = params.tls_weakness();
            match weakness {
                None => assert_eq!(got, None, "{query}"),
                Some(w) => assert!(got.as_deref().unwrap_or("").contains(w), "{query}: {got:?}"),
            }
        }
    }

    #[test]
    fn debug_and_redacted_url_hide_the_password() {
        let p = ConnectParams::from_url(
            "postgres://app:hunter2%21@127.0.0.1:5433/shop?sslmode=require&sslrootcert=/tmp/ca.crt",
        )
        .unwrap();
        let debug = format!("{p:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
        let url = p.redacted_url();
        assert_eq!(
            url,
            "postgres://app:***@127.0.0.1:5433/shop?sslmode=require&sslrootcert=/tmp/ca.crt\
             &channel_binding=prefer&application_name=driftless"
        );
        // The redacted URL parses back to the same parameters except the password.
        let back = ConnectParams::from_url(&url).unwrap();
        assert_eq!(back.password.unwrap().expose(), "***");
        assert_eq!(
            (back.user, back.host, back.port, back.dbname),
            ("app".into(), p.host, 5433, p.dbname)
        );
    }
}
