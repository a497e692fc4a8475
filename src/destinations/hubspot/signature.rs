//! HubSpot webhook request signatures v1, v2 and v3: signing and verification.
//!
//! Owns the pure (no I/O) crypto of HubSpot → driftless webhooks, as HubSpot's
//! request-validation documentation defines them. The two-way-sync receiver verifies with it (the
//! emulators crate signs with its own, independent code):
//! - **v3** (`X-HubSpot-Signature-v3`): `base64(HMAC-SHA256(client_secret, method + uri + body +
//!   timestamp))`, where `uri` is the full URL (scheme, host, path, query) with the characters in
//!   HubSpot's decoding table ([`decode_uri`]) percent-decoded, and `timestamp` is the
//!   `X-HubSpot-Request-Timestamp` header (epoch ms). Verification rejects timestamps more than
//!   [`MAX_SKEW_MS`] (5 minutes) old, or that far in the future, and compares MACs in constant time
//!   (`hmac::Mac::verify_slice`).
//! - **v1** (`X-HubSpot-Signature-Version: v1`): `hex(SHA-256(client_secret + body))`.
//! - **v2**: `hex(SHA-256(client_secret + method + uri + body))`.
//!
//! v1 and v2 carry no timestamp, so they do not protect against replay; a receiver should accept
//! them only when configured to. Their digests are compared in constant time too.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};
use sha2::Digest as _;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far `X-HubSpot-Request-Timestamp` may be from the receiver's clock (HubSpot: 5 minutes).
pub(crate) const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a signed HubSpot request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// `X-HubSpot-Request-Timestamp` is not a canonical integer number of milliseconds.
    #[error("malformed X-HubSpot-Request-Timestamp header")]
    MalformedTimestamp,
    /// The timestamp is more than [`MAX_SKEW_MS`] before `now`.
    #[error("X-HubSpot-Request-Timestamp too old ({age_ms} ms > {MAX_SKEW_MS} ms)")]
    TimestampTooOld {
        /// How many milliseconds before `now` the request claims to be.
        age_ms: i64,
    },
    /// The timestamp is more than [`MAX_SKEW_MS`] after `now`.
    #[error("X-HubSpot-Request-Timestamp too far in the future ({ahead_ms} ms > {MAX_SKEW_MS} ms)")]
    TimestampTooNew {
        /// How many milliseconds after `now` the request claims to be.
        ahead_ms: i64,
    },
    /// The signature header is not valid base64 (v3) or hex (v1, v2).
    #[error("malformed signature header")]
    MalformedSignature,
    /// The signature does not match the request.
    #[error("signature mismatch")]
    Mismatch,
}

/// The percent-encoded sequences HubSpot says to decode in the request URI before signing (v3),
/// and nothing else: `%3A : %2F / %3F ? %40 @ %21 ! %24 $ %27 ' %28 ( %29 ) %2A * %2C , %3B ;`
/// (hex digits in either case). Other escapes (`%20`, `%25`, …) stay encoded.
pub(crate) fn decode_uri(uri: &str) -> String {
    const TABLE: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let esc = rest.get(pos + 1..pos + 3);
        match esc.and_then(|e| TABLE.iter().find(|(h, _)| h.eq_ignore_ascii_case(e))) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[pos + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mac_v3(client_secret: &str, method: &str, uri: &str, body: &[u8], ts: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(client_secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(method.as_bytes());
    mac.update(decode_uri(uri).as_bytes());
    mac.update(body);
    mac.update(ts.as_bytes());
    mac
}

/// The `X-HubSpot-Signature-v3` value for a request sent at `timestamp_ms` (epoch ms, also sent
/// as `X-HubSpot-Request-Timestamp`). `uri` is the full target URL.
#[cfg(test)]
pub(crate) fn sign_v3(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> String {
    let tag = mac_v3(client_secret, method, uri, body, &timestamp_ms.to_string()).finalize();
    STANDARD.encode(tag.into_bytes())
}

/// Parses an `X-HubSpot-Request-Timestamp` header; only the canonical decimal form is accepted,
/// because the signature covers the header text.
pub(crate) fn parse_timestamp(header: &str) -> Result<i64, SignatureError> {
    let ms: i64 = header
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)?;
    if ms.to_string() != header {
        return Err(SignatureError::MalformedTimestamp);
    }
    Ok(ms)
}

/// Verifies `X-HubSpot-Signature-v3` (`signature`) for a request with
/// `X-HubSpot-Request-Timestamp` = `timestamp_ms`, received at `now_ms`. The timestamp must be
/// within [`MAX_SKEW_MS`] of `now_ms` in either direction; the MAC is compared in constant time.
pub(crate) fn verify_v3(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &str,
    timestamp_ms: i64,
    now_ms: i64,
) -> Result<(), SignatureError> {
    let age_ms = now_ms.saturating_sub(timestamp_ms);
    if age_ms > MAX_SKEW_MS {
        return Err(SignatureError::TimestampTooOld { age_ms });
    }
    if -age_ms > MAX_SKEW_MS {
        return Err(SignatureError::TimestampTooNew { ahead_ms: -age_ms });
    }
    let tag = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::MalformedSignature)?;
    mac_v3(client_secret, method, uri, body, &timestamp_ms.to_string())
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Compares a hex signature header with the expected digest in constant time.
fn verify_hex(expected_hex: &str, signature: &str) -> Result<(), SignatureError> {
    let got = hex::decode(signature.trim()).map_err(|_| SignatureError::MalformedSignature)?;
    let want = hex::decode(expected_hex).expect("own hex");
    if got.len() != want.len() {
        return Err(SignatureError::Mismatch);
    }
    let diff = got.iter().zip(&want).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The v1 `X-HubSpot-Signature` value: `hex(SHA-256(client_secret + body))`.
pub(crate) fn sign_v1(client_secret: &str, body: &[u8]) -> String {
    sha256_hex(&[client_secret.as_bytes(), body])
}

/// Verifies a v1 `X-HubSpot-Signature` (constant-time compare). No replay protection.
pub(crate) fn verify_v1(
    client_secret: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    verify_hex(&sign_v1(client_secret, body), signature)
}

/// The v2 `X-HubSpot-Signature` value: `hex(SHA-256(client_secret + method + uri + body))`;
/// `uri` is used exactly as given (v2 decodes nothing).
pub(crate) fn sign_v2(client_secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    sha256_hex(&[
        client_secret.as_bytes(),
        method.as_bytes(),
        uri.as_bytes(),
        body,
    ])
}

/// Verifies a v2 `X-HubSpot-Signature` (constant-time compare). No replay protection.
pub(crate) fn verify_v2(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    verify_hex(&sign_v2(client_secret, method, uri, body), signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const V1_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const V3_URI: &str = "https://www.example.com/webhook_uri";
    const V3_BODY: &[u8] = br#"{"example_field":"example_value"}"#;
    const V3_TS: i64 = 1_700_000_000_000;
    const V3_SIG: &str = "rQEKkaNUiu+1qGF//O/pw4BCzstSqO1PyUnGICmf+7o=";

    #[test]
    fn v1_golden_vector_and_tampering() {
        let sig = sign_v1(SECRET, V1_BODY.as_bytes());
        assert_eq!(
            sig,
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(verify_v1(SECRET, V1_BODY.as_bytes(), &sig), Ok(()));
        assert_eq!(
            verify_v1(SECRET, V1_BODY.as_bytes(), &sig.to_uppercase()),
            Ok(())
        );
        let tampered = V1_BODY.replace("\"objectId\":123", "\"objectId\":124");
        assert_eq!(
            verify_v1(SECRET, tampered.as_bytes(), &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v1("other-secret", V1_BODY.as_bytes(), &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v1(SECRET, V1_BODY.as_bytes(), "not hex"),
            Err(SignatureError::MalformedSignature)
        );
        assert_eq!(
            verify_v1(SECRET, V1_BODY.as_bytes(), &sig[..62]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn v2_golden_vector_and_tampering() {
        let sig = sign_v2(SECRET, "GET", V3_URI, b"");
        assert_eq!(
            sig,
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
        assert_eq!(verify_v2(SECRET, "GET", V3_URI, b"", &sig), Ok(()));
        assert_eq!(
            verify_v2(SECRET, "POST", V3_URI, b"", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v2(SECRET, "GET", "https://www.example.com/other", b"", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_v2(SECRET, "GET", V3_URI, b"x", &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn v3_golden_vector() {
        assert_eq!(sign_v3(SECRET, "POST", V3_URI, V3_BODY, V3_TS), V3_SIG);
        assert_eq!(
            verify_v3(SECRET, "POST", V3_URI, V3_BODY, V3_SIG, V3_TS, V3_TS + 1000),
            Ok(())
        );
    }

    #[test]
    fn v3_tampering_is_rejected() {
        let now = V3_TS + 10;
        let ok =
            |m: &str, u: &str, b: &[u8], s: &str, ts: i64| verify_v3(SECRET, m, u, b, s, ts, now);
        assert_eq!(ok("POST", V3_URI, V3_BODY, V3_SIG, V3_TS), Ok(()));
        let mis = Err(SignatureError::Mismatch);
        assert_eq!(ok("PUT", V3_URI, V3_BODY, V3_SIG, V3_TS), mis);
        assert_eq!(
            ok("POST", "https://www.example.com/x", V3_BODY, V3_SIG, V3_TS),
            mis
        );
        assert_eq!(
            ok("POST", V3_URI, b"{\"example_field\":\"x\"}", V3_SIG, V3_TS),
            mis
        );
        // The timestamp is signed: a replay with a fresh timestamp fails.
        assert_eq!(ok("POST", V3_URI, V3_BODY, V3_SIG, V3_TS + 1), mis);
        assert_eq!(
            verify_v3("wrong", "POST", V3_URI, V3_BODY, V3_SIG, V3_TS, now),
            mis
        );
        let mut flipped = V3_SIG.to_string();
        flipped.replace_range(0..1, "s");
        assert_eq!(ok("POST", V3_URI, V3_BODY, &flipped, V3_TS), mis);
        assert_eq!(
            ok("POST", V3_URI, V3_BODY, "%%%not base64", V3_TS),
            Err(SignatureError::MalformedSignature)
        );
    }

    #[test]
    fn v3_timestamp_window() {
        let v = |ts: i64, now: i64| verify_v3(SECRET, "POST", V3_URI, V3_BODY, V3_SIG, ts, now);
        // Exactly 5 minutes old or ahead is still accepted (with a valid MAC).
        assert_eq!(v(V3_TS, V3_TS + MAX_SKEW_MS), Ok(()));
        assert_eq!(v(V3_TS, V3_TS - MAX_SKEW_MS), Ok(()));
        assert_eq!(
            v(V3_TS, V3_TS + MAX_SKEW_MS + 1),
            Err(SignatureError::TimestampTooOld {
                age_ms: MAX_SKEW_MS + 1
            })
        );
        assert_eq!(
            v(V3_TS, V3_TS - MAX_SKEW_MS - 1),
            Err(SignatureError::TimestampTooNew {
                ahead_ms: MAX_SKEW_MS + 1
            })
        );
        // Stale requests are rejected before the MAC is even looked at.
        assert!(matches!(
            verify_v3(SECRET, "POST", V3_URI, V3_BODY, "junk", 0, V3_TS),
            Err(SignatureError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn v3_decodes_only_the_documented_escapes() {
        assert_eq!(
            decode_uri("https://x.io/h%3Fa?b=%3a%2F%40%21%24%27%28%29%2A%2C%3B&c=%20%25"),
            "https://x.io/h?a?b=:/@!$'()*,;&c=%20%25"
        );
        assert_eq!(decode_uri("https://x.io/%"), "https://x.io/%");
        assert_eq!(decode_uri("https://x.io/%3"), "https://x.io/%3");
        assert_eq!(decode_uri("%%3A"), "%:");
        // Encoded and decoded forms of the same URI sign identically.
        let enc = "https://www.example.com/webhook_uri?user=a%40b.io";
        let dec = "https://www.example.com/webhook_uri?user=a@b.io";
        let sig = sign_v3(SECRET, "POST", enc, V3_BODY, V3_TS);
        assert_eq!(sig, sign_v3(SECRET, "POST", dec, V3_BODY, V3_TS));
        assert_eq!(
            verify_v3(SECRET, "POST", dec, V3_BODY, &sig, V3_TS, V3_TS),
            Ok(())
        );
        // A space escape is not in the table, so it stays significant.
        assert_ne!(
            sign_v3(SECRET, "POST", "https://x.io/a%20b", V3_BODY, V3_TS),
            sign_v3(SECRET, "POST", "https://x.io/a b", V3_BODY, V3_TS)
        );
    }

    #[test]
    fn timestamp_header_parsing() {
        assert_eq!(parse_timestamp("1700000000000"), Ok(V3_TS));
        for bad in ["", "abc", "01700000000000", "+1700000000000", " 1", "1.5"] {
            assert_eq!(
                parse_timestamp(bad),
                Err(SignatureError::MalformedTimestamp),
                "{bad:?}"
            );
        }
    }
}
