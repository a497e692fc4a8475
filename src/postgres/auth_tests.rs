//! Both clients (the replication connection and `connect_sql`) against a fake server that asks
//! for what an on-path attacker would: a cleartext or MD5 password without TLS or over TLS with
//! a certificate nobody verified, a trust login or SCRAM without channel binding under
//! `channel_binding=require`. The fake server records the first message the client sends after
//! the request; a refusing client closes the socket instead, so "nothing" is a clean end of
//! stream, not a timeout. The tests against the real server are in `tests/postgres.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::connect::{ConnectParams, connect_sql};
use super::error::PgError;
use super::replication::ReplicationConnection;
use super::tls::test_support::openssl;
use super::transport::tls_server_end_point;
use crate::error::{Classify, ErrorClass};

const PASSWORD: &str = "s3cret-pw";

/// The SSLRequest code.
const SSL_REQUEST: u32 = 80_877_103;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A self-signed certificate for `localhost` and 127.0.0.1 (CA:TRUE, as `openssl req -x509`
/// makes it) and its key, in `dir`.
fn server_cert(dir: &Path) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
         -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
         -keyout server.key -out server.crt",
    );
    (dir.join("server.crt"), dir.join("server.key"))
}

fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A backend frame.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// An authentication request with code `code` and `rest` after it.
fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    frame(b'R', &body)
}

fn cleartext() -> Vec<u8> {
    auth(3, &[])
}

fn md5() -> Vec<u8> {
    auth(5, b"salt")
}

fn trust() -> Vec<u8> {
    auth(0, &[])
}

fn sasl(mechanisms: &[&str]) -> Vec<u8> {
    let mut rest = Vec::new();
    for m in mechanisms {
        rest.extend_from_slice(m.as_bytes());
        rest.push(0);
    }
    rest.push(0);
    auth(10, &rest)
}

/// What the fake server does.
struct Script {
    /// Accept TLS (with this acceptor) or answer `N` to the SSLRequest.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The authentication request sent after the startup message.
    request: Vec<u8>,
    /// Whether to let the client in after its first answer.
    accept: bool,
}

/// Serves one connection as scripted; the client's first message after the request (tag and
/// body), or `None` if the client closed the connection without sending anything.
async fn serve(listener: TcpListener, script: Script) -> Option<(u8, Vec<u8>)> {
    let (mut tcp, _) = listener.accept().await.unwrap();
    let len = tcp.read_u32().await.unwrap();
    let code = tcp.read_u32().await.unwrap();
    let mut sock: Box<dyn Io> = if code == SSL_REQUEST {
        match script.tls {
            Some(acceptor) => {
                tcp.write_all(b"S").await.unwrap();
                Box::new(acceptor.accept(tcp).await.unwrap())
            }
            None => {
                tcp.write_all(b"N").await.unwrap();
                Box::new(tcp)
            }
        }
    } else {
        let mut rest = vec![0; len as usize - 8];
        tcp.read_exact(&mut rest).await.unwrap();
        Box::new(tcp)
    };
    if code == SSL_REQUEST {
        let len = sock.read_u32().await.unwrap();
        let mut startup = vec![0; len as usize - 4];
        sock.read_exact(&mut startup).await.unwrap();
    }
    sock.write_all(&script.request).await.unwrap();
    sock.flush().await.unwrap();
    let Ok(tag) = sock.read_u8().await else {
        return None;
    };
    let len = sock.read_u32().await.unwrap();
    let mut body = vec![0; len as usize - 4];
    sock.read_exact(&mut body).await.unwrap();
    if script.accept {
        let mut ready = trust();
        ready.extend(frame(b'Z', b"I"));
        sock.write_all(&ready).await.unwrap();
        sock.flush().await.unwrap();
        // Until the client closes (when the test drops it).
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest).await;
    }
    Some((tag, body))
}

/// Which client to run.
#[derive(Clone, Copy, Debug)]
enum Client {
    Replication,
    Sql,
}

const CLIENTS: [Client; 2] = [Client::Replication, Client::Sql];

/// Runs `client` with the URL query `query` against the fake server; its result and what the
/// server received.
async fn attempt(
    client: Client,
    query: &str,
    script: Script,
) -> (Result<(), PgError>, Option<(u8, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve(listener, script));
    let params = ConnectParams::from_url(&format!(
        "postgres://u:{PASSWORD}@127.0.0.1:{port}/db?{query}"
    ))
    .unwrap();
    let result = match client {
        Client::Replication => ReplicationConnection::connect(&params).await.map(drop),
        Client::Sql => connect_sql(&params).await.map(drop),
    };
    (result, server.await.unwrap())
}

/// Asserts a fatal `Auth` refusal mentioning `expected` and free of the password.
fn assert_refused(result: Result<(), PgError>, expected: &str, context: &str) {
    let err = result.expect_err(context);
    assert!(matches!(err, PgError::Auth(_)), "{context}: {err:?}");
    assert_eq!(err.class(), ErrorClass::Fatal, "{context}");
    let text = format!("{err} {err:?}");
    assert!(text.contains(expected), "{context}: {text}");
    assert!(!text.contains(PASSWORD), "{context}: {text}");
}

#[tokio::test]
async fn no_password_without_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_cert(dir.path());
    for client in CLIENTS {
        for (name, request) in [("cleartext", cleartext()), ("md5", md5())] {
            // (query, server accepts TLS)
            for (query, tls) in [
                ("sslmode=disable", false),
                ("sslmode=prefer", false),
                ("sslmode=prefer", true),
                ("sslmode=require", true),
                ("sslmode=require&channel_binding=disable", true),
            ] {
                let script = Script {
                    tls: tls.then(|| acceptor(&cert, &key)),
                    request: request.clone(),
                    accept: true,
                };
                let context = format!("{client:?} {name} {query} tls={tls}");
                let (result, received) = attempt(client, query, script).await;
                assert_eq!(received, None, "{context}: the server got an answer");
                assert_refused(result, "sslmode=verify-full", &context);
            }
        }
    }
}

#[tokio::test]
async fn passwords_go_over_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_cert(dir.path());
    let root = format!("sslrootcert={}", cert.display());
    for client in CLIENTS {
        for query in [
            format!("sslmode=verify-full&{root}"),
            format!("sslmode=verify-ca&{root}"),
            format!("sslmode=require&{root}"),
        ] {
            for (request, expected) in [
                (cleartext(), format!("{PASSWORD}\0")),
                (md5(), "md5".to_string()),
            ] {
                let script = Script {
                    tls: Some(acceptor(&cert, &key)),
                    request,
                    accept: true,
                };
                let (result, received) = attempt(client, &query, script).await;
                result.unwrap_or_else(|e| panic!("{client:?} {query}: {e:?}"));
                let (tag, body) = received.expect("a password message");
                assert_eq!(tag, b'p', "{client:?} {query}");
                assert!(
                    String::from_utf8_lossy(&body).starts_with(&expected),
                    "{client:?} {query}"
                );
            }
        }
    }
}

#[tokio::test]
async fn channel_binding_require_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_cert(dir.path());
    let verified = format!(
        "sslmode=verify-full&sslrootcert={}&channel_binding=require",
        cert.display()
    );
    for client in CLIENTS {
        // (query, TLS, request, expected in the error)
        let cases = [
            (
                verified.as_str(),
                true,
                sasl(&["SCRAM-SHA-256"]),
                "does not offer",
            ),
            (verified.as_str(), true, trust(), "without"),
            (verified.as_str(), true, cleartext(), "cannot be bound"),
            (verified.as_str(), true, md5(), "cannot be bound"),
            (
                "sslmode=prefer&channel_binding=require",
                false,
                sasl(&["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]),
                "not TLS",
            ),
            (
                "sslmode=disable&channel_binding=require",
                false,
                sasl(&["SCRAM-SHA-256"]),
                "not TLS",
            ),
        ];
        for (query, tls, request, expected) in cases {
            let script = Script {
                tls: tls.then(|| acceptor(&cert, &key)),
                request,
                accept: true,
            };
            let context = format!("{client:?} {query} expecting {expected:?}");
            let (result, received) = attempt(client, query, script).await;
            assert_eq!(received, None, "{context}: the server got an answer");
            assert_refused(result, expected, &context);
        }
    }
}

/// The SASLInitialResponse's mechanism and GS2 header, from the client's first message.
fn initial_response(received: Option<(u8, Vec<u8>)>) -> (String, String) {
    let (tag, body) = received.expect("a SASLInitialResponse");
    assert_eq!(tag, b'p');
    let nul = body.iter().position(|&b| b == 0).unwrap();
    let mechanism = String::from_utf8(body[..nul].to_vec()).unwrap();
    let message = String::from_utf8_lossy(&body[nul + 5..]).into_owned();
    let header = message.split(",n=").next().unwrap().to_string();
    (mechanism, header)
}

#[tokio::test]
async fn scram_binds_to_tls_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = server_cert(dir.path());
    let both = ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"];
    for client in CLIENTS {
        // (query, TLS, mechanisms offered, mechanism and GS2 header sent)
        let cases = [
            (
                "sslmode=require",
                true,
                &both[..],
                "SCRAM-SHA-256-PLUS",
                "p=tls-server-end-point,",
            ),
            (
                "sslmode=prefer",
                true,
                &both[..],
                "SCRAM-SHA-256-PLUS",
                "p=tls-server-end-point,",
            ),
            ("sslmode=require", true, &both[..1], "SCRAM-SHA-256", "y,"),
            ("sslmode=prefer", false, &both[..1], "SCRAM-SHA-256", "n,"),
            (
                "sslmode=require&channel_binding=disable",
                true,
                &both[..],
                "SCRAM-SHA-256",
                "n,",
            ),
        ];
        for (query, tls, offered, mechanism, header) in cases {
            let script = Script {
                tls: tls.then(|| acceptor(&cert, &key)),
                request: sasl(offered),
                accept: false,
            };
            let (result, received) = attempt(client, query, script).await;
            // The fake server ends the exchange there.
            assert!(result.is_err(), "{client:?} {query}");
            let got = initial_response(received);
            assert_eq!(
                got,
                (mechanism.to_string(), header.to_string()),
                "{client:?} {query}"
            );
        }
    }
}

/// The end-point hash follows the certificate's signature hash (RFC 5929).
#[test]
fn end_point_hash_follows_the_signature_algorithm() {
    use sha2::{Digest, Sha256, Sha384};
    let dir = tempfile::tempdir().unwrap();
    let der = |name: &str, args: &str| {
        openssl(
            dir.path(),
            &format!(
                "req -x509 {args} -nodes -days 1 -subj /CN=x -keyout {name}.key -out {name}.crt"
            ),
        );
        let pem = std::fs::read(dir.path().join(format!("{name}.crt"))).unwrap();
        rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    let p256 = der(
        "p256",
        "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256",
    );
    assert_eq!(
        tls_server_end_point(&p256),
        Some(Sha256::digest(&p256).to_vec())
    );
    let p384 = der(
        "p384",
        "-newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -sha384",
    );
    assert_eq!(
        tls_server_end_point(&p384),
        Some(Sha384::digest(&p384).to_vec())
    );
    // SHA-1 is replaced by SHA-256.
    let sha1 = der(
        "sha1",
        "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha1",
    );
    assert_eq!(
        tls_server_end_point(&sha1),
        Some(Sha256::digest(&sha1).to_vec())
    );
    // Ed25519 has no separate hash function: no end-point binding.
    let ed = der("ed", "-newkey ed25519");
    assert_eq!(tls_server_end_point(&ed), None);
    assert_eq!(tls_server_end_point(b"not a certificate"), None);
}
