//! The rustls client configuration for an [`SslMode`], shared by the replication connection and
//! the ordinary SQL connection.
//!
//! Owns the trust anchors (`sslrootcert` or the system roots) and the certificate verifier in
//! its two modes: accept any certificate (libpq's `prefer`/`require` without a root) and
//! chain-with-optional-name (`verify-ca`, `verify-full`, `require` with a root).
//!
//! Invariants:
//! - rustls always uses the ring provider given explicitly here, never a process-wide default.
//! - Without verification the handshake signatures are still checked, so the session keys
//!   belong to the presented certificate.
//! - `disable` gives no configuration at all; every other mode gives one, and the caller never
//!   falls back to plaintext except under `prefer` (see `connect`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

use super::connect::{ConnectParams, SslMode};
use super::error::PgError;

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

/// The server certificate check of one [`SslMode`]. Handshake signatures are always verified
/// with the provider's algorithms, so the session keys belong to the presented certificate.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// `None`: any server certificate is accepted (libpq's `prefer`/`require` without a root
    /// certificate).
    roots: Option<RootVerifier>,
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

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let result = roots.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match result {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !roots.check_name => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if other.0.to_string() == "CaUsedAsEndEntity"
                    && roots
                        .trusted
                        .iter()
                        .any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                if roots.check_name {
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
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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
pub(crate) fn tls_config(params: &ConnectParams) -> Result<Option<ClientConfig>, PgError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(format!("cannot configure TLS: {e}")))?;
    if params.sslmode == SslMode::Disable {
        return Ok(None);
    }
    // The one rule for "verified" (`verify-ca`, `verify-full`, `require` with `sslrootcert`),
    // which the authentication policy relies on too.
    let roots = if params.verifies_certificate() {
        let check_name = params.sslmode == SslMode::VerifyFull;
        Some(root_verifier(params, &provider, check_name)?)
    } else {
        None
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { provider, roots }))
        .with_no_client_auth();
    Ok(Some(config))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Certificates made with `openssl` for the TLS tests.

    use std::path::{Path, PathBuf};

    /// Runs `openssl` with whitespace-separated `args` in `dir`.
    pub(crate) fn openssl(dir: &Path, args: &str) {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args.split_whitespace())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    }

    /// Writes a fresh self-signed CA (not the server's) into `dir`.
    pub(crate) fn wrong_ca(dir: &Path) -> PathBuf {
        openssl(
            dir,
            "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=wrong-ca -keyout wrong-ca.key \
             -out wrong-ca.crt",
        );
        dir.join("wrong-ca.crt")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::test_support::{openssl, wrong_ca};
    use super::*;

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

    fn first_cert(path: &std::path::Path) -> CertificateDer<'static> {
        let pem = std::fs::read(path).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap()
    }

    fn verifier_for(root: PathBuf, check_name: bool) -> Verifier {
        let params = ConnectParams {
            sslrootcert: Some(root),
            ..ConnectParams::from_url("postgres://u@localhost/db").unwrap()
        };
        let provider = provider();
        let roots = Some(root_verifier(&params, &provider, check_name).unwrap());
        Verifier { provider, roots }
    }

    #[test]
    fn root_verifier_checks_chain_and_name_and_accepts_a_pinned_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A CA and a leaf for "localhost" signed by it.
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
        // Self-signed with CA:TRUE, like `openssl req -x509` and the test server's certificate.
        openssl(
            d,
            "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
             -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout s.key -out s.crt",
        );
        let (leaf, self_signed) = (
            first_cert(&d.join("leaf.crt")),
            first_cert(&d.join("s.crt")),
        );
        // An unrelated CA.
        let (ca, pinned, wrong) = (d.join("ca.crt"), d.join("s.crt"), wrong_ca(d));
        // (server certificate, sslrootcert, check_name, server name, accepted)
        let cases = [
            (&leaf, &ca, true, "localhost", true),
            (&leaf, &ca, true, "db.example.com", false),
            (&leaf, &ca, false, "db.example.com", true),
            (&leaf, &wrong, true, "localhost", false),
            (&leaf, &wrong, false, "localhost", false),
            (&self_signed, &pinned, true, "localhost", true),
            (&self_signed, &pinned, true, "127.0.0.1", true),
            (&self_signed, &pinned, true, "db.example.com", false),
            (&self_signed, &pinned, false, "db.example.com", true),
            // Not pinned: another certificate in sslrootcert does not make it acceptable.
            (&self_signed, &wrong, false, "localhost", false),
        ];
        for (cert, root, check_name, name, accepted) in cases {
            let server_name = ServerName::try_from(name).unwrap();
            let verdict = verifier_for(root.clone(), check_name).verify_server_cert(
                cert,
                &[],
                &server_name,
                &[],
                UnixTime::now(),
            );
            assert_eq!(
                verdict.is_ok(),
                accepted,
                "{root:?} check_name={check_name} {name}: {verdict:?}"
            );
        }
    }
}
