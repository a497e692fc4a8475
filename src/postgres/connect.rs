//! Connection parameters (URL parsing), TLS configuration and the ordinary SQL connection.
//!
//! Owns everything the replication connection and the tokio-postgres connection share: the
//! parsed [`ConnectParams`], the libpq-compatible [`SslMode`] semantics turned into a rustls
//! [`ClientConfig`](rustls::ClientConfig), and the session settings ([`SESSION_OPTIONS`]) that
//! make server text output deterministic.
//!
//! Invariants:
//! - The password never appears in `Debug`, in [`ConnectParams::redacted_url`], in logs or in
//!   error messages.
//! - Under `require`, `verify-ca` and `verify-full` a connection never falls back to plaintext;
//!   only `prefer` does, and only when the server answers the SSL request with `N`.
//! - rustls always uses the ring provider given explicitly here, never a process-wide default.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

use super::error::PgError;

/// Session settings that make text output deterministic (our value converter depends on them).
/// Sent as the `options` startup parameter on every connection.
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=iso_8601 \
    -c extra_float_digits=3 -c bytea_output=hex -c client_encoding=UTF8";

/// How long opening a TCP connection may take before it fails (as an I/O timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `application_name` used when the URL does not give one.
pub const DEFAULT_APPLICATION_NAME: &str = "driftless";

/// The PostgreSQL port used when the URL does not give one.
pub const DEFAULT_PORT: u16 = 5432;

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
    pub fn as_str(self) -> &'static str {
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

/// A password whose `Debug` and `Display` are redacted. Read it with [`Password::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The password itself; only for sending it to the server.
    pub fn expose(&self) -> &str {
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
    /// application_name=..`. All parts are percent-decoded. Defaults: host `localhost`, port
    /// 5432, database = user name, sslmode `prefer`, application name `driftless`. An unknown
    /// query parameter is an error naming it. Error messages never contain the password.
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
        for (key, value) in parsed.query_pairs() {
            let slot = match key.as_ref() {
                "sslmode" => &mut sslmode,
                "sslrootcert" => &mut sslrootcert,
                "application_name" => &mut application_name,
                other => {
                    return Err(PgError::Config(format!(
                        "unknown parameter {other:?} in the postgres URL (supported: sslmode, \
                         sslrootcert, application_name)"
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
        })
    }

    /// The URL with the password replaced by `***`; safe to log.
    pub fn redacted_url(&self) -> String {
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

/// The crypto provider used for every rustls configuration here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the trust anchors: the PEM file `sslrootcert` (also returned as certificates), or the
/// system roots when it is absent or `system`.
fn root_store(
    params: &ConnectParams,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), PgError> {
    let mut roots = RootCertStore::empty();
    let mut trusted = Vec::new();
    match &params.sslrootcert {
        Some(path) if path.as_os_str() != "system" => {
            let pem = std::fs::read(path).map_err(|e| {
                PgError::Config(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?;
            let mut reader = pem.as_slice();
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(|e| {
                    PgError::Config(format!(
                        "invalid PEM in sslrootcert {}: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert.clone()).map_err(|e| {
                    PgError::Config(format!(
                        "unusable certificate in sslrootcert {}: {e}",
                        path.display()
                    ))
                })?;
                trusted.push(cert);
            }
            if roots.is_empty() {
                return Err(PgError::Config(format!(
                    "sslrootcert {} contains no certificate",
                    path.display()
                )));
            }
        }
        _ => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(PgError::Config(
                    "no system CA certificates found; set sslrootcert".to_string(),
                ));
            }
        }
    }
    Ok((roots, trusted))
}

/// Accepts any server certificate (libpq's `prefer`/`require` without a root certificate), but
/// still checks the handshake signatures so the session keys belong to that certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the server certificate against explicit trust anchors (libpq's `verify-ca` and
/// `verify-full`, and `require` with `sslrootcert`). Delegates to rustls's WebPKI verifier and
/// departs from it in two libpq-compatible ways:
/// - without `check_name`, its name-mismatch error (reported after the chain verified) is
///   ignored;
/// - a server certificate that is itself one of the `sslrootcert` certificates is accepted even
///   though it is marked as a CA (the common self-signed setup, which OpenSSL accepts and WebPKI
///   rejects as `CaUsedAsEndEntity`). WebPKI checks the validity period before the CA flag, so
///   this error implies the certificate is in date; the name is still checked with
///   `check_name`, and the handshake signature is still verified against it.
#[derive(Debug)]
struct RootVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `sslrootcert` (empty with the system roots).
    trusted: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl ServerCertVerifier for RootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match result {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if other.0.to_string() == "CaUsedAsEndEntity"
                    && self
                        .trusted
                        .iter()
                        .any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                if self.check_name {
                    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Builds the verifier for `params` (trust anchors from `sslrootcert` or the system).
fn root_verifier(
    params: &ConnectParams,
    provider: &Arc<CryptoProvider>,
    check_name: bool,
) -> Result<RootVerifier, PgError> {
    let (roots, trusted) = root_store(params)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| PgError::Tls(format!("cannot configure certificate verification: {e}")))?;
    Ok(RootVerifier {
        webpki,
        trusted,
        check_name,
    })
}

/// The rustls client configuration for `params.sslmode`; `None` for `disable`.
pub fn tls_config(params: &ConnectParams) -> Result<Option<ClientConfig>, PgError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(format!("cannot configure TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match params.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Require if params.sslrootcert.is_some() => {
            Arc::new(root_verifier(params, &provider, false)?)
        }
        SslMode::Prefer | SslMode::Require => Arc::new(NoVerification(provider.clone())),
        SslMode::VerifyCa => Arc::new(root_verifier(params, &provider, false)?),
        SslMode::VerifyFull => Arc::new(root_verifier(params, &provider, true)?),
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(config))
}

/// Opens an ordinary SQL connection (tokio-postgres) with the same TLS policy and session
/// settings as the replication connection, and spawns its connection task (which logs and
/// ends when the connection closes).
pub async fn connect_sql(params: &ConnectParams) -> Result<tokio_postgres::Client, PgError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(params.host.as_str())
        .port(params.port)
        .user(params.user.as_str())
        .dbname(params.dbname.as_str())
        .application_name(params.application_name.as_str())
        .options(SESSION_OPTIONS)
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(password) = &params.password {
        config.password(password.expose());
    }
    tracing::debug!(url = %params.redacted_url(), "connecting sql client");
    let client = match tls_config(params)? {
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(drive(connection));
            client
        }
        Some(tls) => {
            config.ssl_mode(match params.sslmode {
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, connection) = config.connect(connector).await?;
            tokio::spawn(drive(connection));
            client
        }
    };
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
pub(crate) mod test_support {
    //! Helpers for tests that use the live server named by `DRIFTLESS_PG_URL`.

    use super::*;

    /// The database the postgres-connection tests use.
    pub const TEST_DB: &str = "repl_conn_test";

    /// Parameters for the live test server (database `postgres`), or `None` with a loud message.
    pub fn server_params(test: &str) -> Option<ConnectParams> {
        match std::env::var("DRIFTLESS_PG_URL") {
            Ok(url) => Some(ConnectParams::from_url(&url).expect("DRIFTLESS_PG_URL parses")),
            Err(_) => {
                eprintln!(
                    "!!! SKIPPING {test}: DRIFTLESS_PG_URL is not set (run `eval \"$(bash \
                     scripts/pg-start --env)\"`) !!!"
                );
                None
            }
        }
    }

    /// The CA certificate of the live test server.
    pub fn server_ca() -> PathBuf {
        std::env::var("DRIFTLESS_PG_CA")
            .unwrap_or_else(|_| "/var/tmp/driftless/pg15-54329.ca.crt".to_string())
            .into()
    }

    /// Parameters for [`TEST_DB`], creating it if needed.
    pub async fn test_db_params(test: &str) -> Option<ConnectParams> {
        let params = server_params(test)?;
        let admin = connect_sql(&params)
            .await
            .expect("connect to the test server");
        if let Err(e) = admin
            .batch_execute(&format!("CREATE DATABASE {TEST_DB}"))
            .await
        {
            // Concurrent tests race to create it: duplicate_database or unique_violation.
            let code = e.code().map(|c| c.code().to_string());
            assert!(
                matches!(code.as_deref(), Some("42P04" | "23505")),
                "create database: {e:?}"
            );
        }
        Some(ConnectParams {
            dbname: TEST_DB.to_string(),
            ..params
        })
    }

    /// Writes a fresh self-signed CA (not the server's) into `dir`.
    pub fn wrong_ca(dir: &std::path::Path) -> PathBuf {
        let cert = dir.join("wrong-ca.crt");
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=wrong-ca", "-keyout"])
            .arg(dir.join("wrong-ca.key"))
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success());
        cert
    }

    /// A name unique to this process and call, usable as a table, publication or slot name.
    pub fn unique_name(prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!(
            "{prefix}_{}_{}_{}",
            unix_secs(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Seconds since the Unix epoch, now.
    pub fn unix_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Whether a name made by [`unique_name`] with this prefix is more than an hour old (left
    /// behind by a failed run, not in use by a concurrent one).
    pub fn is_stale(name: &str, prefix: &str) -> bool {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok())
            .is_some_and(|secs| secs + 3600 < unix_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
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
            "postgres://bob@[::1]:7000/x?sslmode=prefer&application_name=driftless"
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
             &application_name=driftless"
        );
        // The redacted URL parses back to the same parameters except the password.
        let back = ConnectParams::from_url(&url).unwrap();
        assert_eq!(back.password.unwrap().expose(), "***");
        assert_eq!(
            (back.user, back.host, back.port, back.dbname),
            ("app".into(), p.host, 5433, p.dbname)
        );
    }

    #[test]
    fn test_names_know_their_age() {
        assert!(is_stale("rc_t_1000_5_0", "rc_t"));
        assert!(!is_stale(&unique_name("rc_t"), "rc_t"));
        assert!(!is_stale("rc_test_1000_1_1", "rc_t"));
        assert!(!is_stale("rc_t_x", "rc_t"));
    }

    #[test]
    fn tls_config_follows_sslmode() {
        let mut p = ConnectParams::from_url("postgres://u@localhost/db?sslmode=disable").unwrap();
        assert!(tls_config(&p).unwrap().is_none());
        for mode in [SslMode::Prefer, SslMode::Require] {
            p.sslmode = mode;
            assert!(tls_config(&p).unwrap().is_some());
        }
        p.sslmode = SslMode::VerifyFull;
        p.sslrootcert = Some("/nonexistent/ca.crt".into());
        let err = tls_config(&p).unwrap_err();
        assert!(matches!(err, PgError::Config(_)), "{err:?}");
    }

    /// Runs `select ssl from pg_stat_ssl` for the session itself.
    async fn session_uses_ssl(client: &tokio_postgres::Client) -> bool {
        client
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn sql_connection_applies_tls_modes_and_session_options() {
        let Some(base) = server_params("sql_connection_applies_tls_modes_and_session_options")
        else {
            return;
        };
        let with = |mode: SslMode, root: Option<PathBuf>, host: &str| ConnectParams {
            sslmode: mode,
            sslrootcert: root,
            host: host.to_string(),
            ..base.clone()
        };
        // disable: plaintext.
        let c = connect_sql(&with(SslMode::Disable, None, "127.0.0.1"))
            .await
            .unwrap();
        assert!(!session_uses_ssl(&c).await);
        // prefer and require (no verification): TLS.
        for mode in [SslMode::Prefer, SslMode::Require] {
            let c = connect_sql(&with(mode, None, "127.0.0.1")).await.unwrap();
            assert!(session_uses_ssl(&c).await, "{mode}");
        }
        // verify-full against the server's CA; the certificate has SAN 127.0.0.1 and localhost.
        for host in ["127.0.0.1", "localhost"] {
            let c = connect_sql(&with(SslMode::VerifyFull, Some(server_ca()), host))
                .await
                .unwrap();
            assert!(session_uses_ssl(&c).await, "{host}");
        }
        // Session settings are applied.
        let row = c
            .query_one(
                "select current_setting('DateStyle'), current_setting('TimeZone'), \
                 current_setting('IntervalStyle'), current_setting('extra_float_digits'), \
                 current_setting('bytea_output'), current_setting('application_name')",
                &[],
            )
            .await
            .unwrap();
        let got: Vec<String> = (0..6).map(|i| row.get(i)).collect();
        assert_eq!(
            got,
            ["ISO, MDY", "UTC", "iso_8601", "3", "hex", "driftless"]
        );
    }

    #[tokio::test]
    async fn sql_connection_rejects_untrusted_certificates() {
        let Some(base) = server_params("sql_connection_rejects_untrusted_certificates") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let wrong = wrong_ca(dir.path());
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull, SslMode::Require] {
            let params = ConnectParams {
                sslmode: mode,
                sslrootcert: Some(wrong.clone()),
                ..base.clone()
            };
            let err = connect_sql(&params).await.unwrap_err();
            assert_eq!(err.class(), ErrorClass::Fatal, "{mode}: {err}");
            assert!(err.hint().unwrap().contains("sslrootcert"), "{mode}: {err}");
        }
    }

    /// Runs `openssl` with whitespace-separated `args` in `dir`.
    fn openssl(dir: &std::path::Path, args: &str) {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args.split_whitespace())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    }

    fn first_cert(path: &std::path::Path) -> CertificateDer<'static> {
        let pem = std::fs::read(path).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap()
    }

    fn verifier_for(root: PathBuf, check_name: bool) -> RootVerifier {
        let params = ConnectParams {
            sslrootcert: Some(root),
            ..ConnectParams::from_url("postgres://u@localhost/db").unwrap()
        };
        root_verifier(&params, &provider(), check_name).unwrap()
    }

    #[test]
    fn root_verifier_checks_chain_and_optionally_the_name() {
        // A CA and a leaf for "localhost" signed by it, and an unrelated CA.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key \
             -out ca.crt",
        );
        openssl(
            d,
            "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout leaf.key -out leaf.csr",
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            d,
            "x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
             -extfile ext.cnf -out leaf.crt",
        );
        let leaf = first_cert(&d.join("leaf.crt"));
        let wrong = wrong_ca(d);
        let ours = ServerName::try_from("localhost").unwrap();
        let other = ServerName::try_from("db.example.com").unwrap();
        let now = UnixTime::now();

        let full = verifier_for(d.join("ca.crt"), true);
        assert!(full.verify_server_cert(&leaf, &[], &ours, &[], now).is_ok());
        assert!(
            full.verify_server_cert(&leaf, &[], &other, &[], now)
                .is_err()
        );
        let chain = verifier_for(d.join("ca.crt"), false);
        assert!(
            chain
                .verify_server_cert(&leaf, &[], &other, &[], now)
                .is_ok()
        );
        for check_name in [true, false] {
            let untrusted = verifier_for(wrong.clone(), check_name);
            assert!(
                untrusted
                    .verify_server_cert(&leaf, &[], &ours, &[], now)
                    .is_err()
            );
        }
    }

    #[test]
    fn root_verifier_accepts_a_pinned_self_signed_server_certificate() {
        // Self-signed with CA:TRUE, like `openssl req -x509` and the test server's certificate.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
             -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout s.key -out s.crt",
        );
        let cert = first_cert(&d.join("s.crt"));
        let ours = ServerName::try_from("localhost").unwrap();
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let other = ServerName::try_from("db.example.com").unwrap();
        let now = UnixTime::now();
        let full = verifier_for(d.join("s.crt"), true);
        assert!(full.verify_server_cert(&cert, &[], &ours, &[], now).is_ok());
        assert!(full.verify_server_cert(&cert, &[], &ip, &[], now).is_ok());
        assert!(
            full.verify_server_cert(&cert, &[], &other, &[], now)
                .is_err()
        );
        let chain = verifier_for(d.join("s.crt"), false);
        assert!(
            chain
                .verify_server_cert(&cert, &[], &other, &[], now)
                .is_ok()
        );
        // Not pinned: another certificate in sslrootcert does not make it acceptable.
        let wrong = verifier_for(wrong_ca(d), false);
        assert!(
            wrong
                .verify_server_cert(&cert, &[], &ours, &[], now)
                .is_err()
        );
    }

    #[tokio::test]
    async fn sql_connection_wrong_password_is_fatal() {
        let Some(base) = server_params("sql_connection_wrong_password_is_fatal") else {
            return;
        };
        let params = ConnectParams {
            password: Some(Password::new("definitely-not-the-password")),
            ..base
        };
        let err = connect_sql(&params).await.unwrap_err();
        assert_eq!(err.code(), Some("28P01"), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(err.hint().unwrap().contains("pg_hba.conf"));
        assert!(!err.to_string().contains("definitely-not-the-password"));
    }

    #[tokio::test]
    async fn sql_connection_refused_is_transient() {
        let Some(base) = server_params("sql_connection_refused_is_transient") else {
            return;
        };
        // Port 1 on loopback: nothing listens there.
        let params = ConnectParams { port: 1, ..base };
        let err = connect_sql(&params).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    }
}
