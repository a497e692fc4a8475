//! Standard Webhooks 1.0 signing and verification.
//!
//! Owns the pure (no I/O) crypto of the generic-webhook sink:
//! - `webhook-signature` = space-separated `v1,<base64(HMAC-SHA256(secret, "{id}.{ts}.{body}"))>`;
//! - secrets are `whsec_<base64>` (or raw bytes), never printed (`Debug` is redacted);
//! - verification (the receiver's side, which the tests check our signatures with) compares MACs in constant time (`hmac::Mac::verify_slice`), accepts any one of
//!   several `v1,` signatures (key rotation), ignores unknown versions, and rejects timestamps more
//!   than `tolerance_s` seconds away from `now_s` in either direction (replay protection);

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The prefix of a Standard Webhooks secret.
pub(crate) const SECRET_PREFIX: &str = "whsec_";

/// The signature scheme version this module produces and verifies.
const VERSION: &str = "v1";

/// Why a secret or a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// The secret is empty, or `whsec_` is followed by invalid base64.
    #[error("invalid webhook secret: {0}")]
    InvalidSecret(&'static str),
    /// The `webhook-id` header is empty or malformed.
    #[cfg(test)]
    #[error("malformed webhook-id header")]
    MalformedId,
    /// The `webhook-timestamp` header is not an integer number of seconds.
    #[cfg(test)]
    #[error("malformed webhook-timestamp header")]
    MalformedTimestamp,
    /// The timestamp is older than the tolerance allows.
    #[cfg(test)]
    #[error("webhook-timestamp too old ({age_s} s > {tolerance_s} s)")]
    TimestampTooOld {
        /// How many seconds before `now` the message claims to be.
        age_s: i64,
        /// The tolerance in seconds.
        tolerance_s: i64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[cfg(test)]
    #[error("webhook-timestamp too far in the future ({ahead_s} s > {tolerance_s} s)")]
    TimestampTooNew {
        /// How many seconds after `now` the message claims to be.
        ahead_s: i64,
        /// The tolerance in seconds.
        tolerance_s: i64,
    },
    /// The `webhook-signature` header holds no parseable `version,signature` entry.
    #[cfg(test)]
    #[error("malformed webhook-signature header")]
    MalformedSignature,
    /// No `v1` signature in the header matches the message.
    #[cfg(test)]
    #[error("no matching v1 signature")]
    NoMatchingSignature,
}

/// A webhook signing secret. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Parses a secret: `whsec_<base64>` is decoded; any other non-empty string is used as raw
    /// bytes (some providers hand out unprefixed secrets).
    pub(crate) fn parse(s: &str) -> Result<Self, SignatureError> {
        let s = s.trim();
        let key = match s.strip_prefix(SECRET_PREFIX) {
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|_| SignatureError::InvalidSecret("whsec_ secret is not valid base64"))?,
            None => s.as_bytes().to_vec(),
        };
        Self::from_bytes(key)
    }

    /// Wraps raw key bytes (must be non-empty).
    pub(crate) fn from_bytes(key: impl Into<Vec<u8>>) -> Result<Self, SignatureError> {
        let key = key.into();
        if key.is_empty() {
            return Err(SignatureError::InvalidSecret("secret is empty"));
        }
        Ok(Self { key })
    }

    /// The `whsec_<base64>` form, for handing the secret to a receiver.
    #[cfg(test)]
    pub(crate) fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Signs a message: returns the `webhook-signature` header value `v1,<base64>`.
pub(crate) fn sign(secret: &Secret, msg_id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let tag = secret
        .mac(msg_id, &timestamp_s.to_string(), body)
        .finalize()
        .into_bytes();
    format!("{VERSION},{}", STANDARD.encode(tag))
}

/// Verifies a delivery from its three Standard Webhooks headers and raw body.
///
/// Checks, in order: the id is non-empty, the timestamp is an integer within `tolerance_s` of
/// `now_s`, and at least one space-separated `v1,<base64>` entry matches (constant-time).
/// Entries with other versions are ignored; the MAC is computed over the timestamp exactly as
/// sent. The receiver's side: here it checks our signatures in the tests.
#[cfg(test)]
pub(crate) fn verify(
    secret: &Secret,
    headers_id: &str,
    headers_ts: &str,
    headers_sig: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    if headers_id.is_empty()
        || headers_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(SignatureError::MalformedId);
    }
    let ts_text = headers_ts.trim();
    if ts_text.is_empty() || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::MalformedTimestamp);
    }
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)?;
    let tolerance_s = tolerance_s.max(0);
    let diff = now_s.saturating_sub(ts);
    if diff > tolerance_s {
        return Err(SignatureError::TimestampTooOld {
            age_s: diff,
            tolerance_s,
        });
    }
    if diff < -tolerance_s {
        return Err(SignatureError::TimestampTooNew {
            ahead_s: diff.saturating_neg(),
            tolerance_s,
        });
    }

    let mac = secret.mac(headers_id, ts_text, body);
    let mut parsed_any = false;
    for entry in headers_sig.split_ascii_whitespace() {
        let Some((version, sig)) = entry.split_once(',') else {
            continue;
        };
        parsed_any = true;
        if version != VERSION {
            continue;
        }
        let Ok(tag) = STANDARD.decode(sig) else {
            continue;
        };
        if mac.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    if parsed_any {
        Err(SignatureError::NoMatchingSignature)
    } else {
        Err(SignatureError::MalformedSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Standard Webhooks reference test vector (standard-webhooks/standard-webhooks libraries).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOL: i64 = 300;

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).unwrap()
    }

    fn check(id: &str, ts: &str, sig: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        verify(&spec_secret(), id, ts, sig, body, now, TOL)
    }

    #[test]
    fn spec_vector_signs_and_verifies() {
        assert_eq!(sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        check(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIG, SPEC_BODY, SPEC_TS).unwrap();
    }

    #[test]
    fn secret_parsing_and_redaction() {
        let s = spec_secret();
        assert_eq!(s.to_whsec(), SPEC_SECRET);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{s:?}").contains("MfKQ"));
        assert_eq!(Secret::parse("raw-secret").unwrap().key, b"raw-secret");
        assert!(matches!(
            Secret::parse("whsec_%%%"),
            Err(SignatureError::InvalidSecret(_))
        ));
        assert!(Secret::parse("").is_err());
        assert!(Secret::from_bytes(Vec::new()).is_err());
    }

    #[test]
    fn tampering_is_rejected() {
        let ts = SPEC_TS.to_string();
        let e = Err(SignatureError::NoMatchingSignature);
        assert_eq!(
            check(SPEC_ID, &ts, SPEC_SIG, br#"{"test": 2432232315}"#, SPEC_TS),
            e
        );
        assert_eq!(check("msg_other", &ts, SPEC_SIG, SPEC_BODY, SPEC_TS), e);
        let ts2 = (SPEC_TS + 1).to_string();
        assert_eq!(check(SPEC_ID, &ts2, SPEC_SIG, SPEC_BODY, SPEC_TS), e);
        let other = Secret::parse("whsec_c2VjcmV0").unwrap();
        assert_eq!(
            verify(&other, SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, SPEC_TS, TOL),
            e
        );
        // Truncated signature and wrong version.
        assert_eq!(check(SPEC_ID, &ts, "v1,g0hM9SsE", SPEC_BODY, SPEC_TS), e);
        let v2 = SPEC_SIG.replacen("v1", "v2", 1);
        assert_eq!(check(SPEC_ID, &ts, &v2, SPEC_BODY, SPEC_TS), e);
    }

    #[test]
    fn tolerance_window() {
        let ts = SPEC_TS.to_string();
        check(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, SPEC_TS + TOL).unwrap();
        check(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, SPEC_TS - TOL).unwrap();
        assert_eq!(
            check(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, SPEC_TS + TOL + 1),
            Err(SignatureError::TimestampTooOld {
                age_s: TOL + 1,
                tolerance_s: TOL
            })
        );
        assert_eq!(
            check(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, SPEC_TS - TOL - 1),
            Err(SignatureError::TimestampTooNew {
                ahead_s: TOL + 1,
                tolerance_s: TOL
            })
        );
        // Extreme values do not overflow.
        assert!(check(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, i64::MIN).is_err());
        assert!(check(SPEC_ID, &ts, SPEC_SIG, SPEC_BODY, i64::MAX).is_err());
    }

    #[test]
    fn multiple_signatures() {
        let ts = SPEC_TS.to_string();
        let other = sign(
            &Secret::parse("whsec_c2VjcmV0").unwrap(),
            SPEC_ID,
            SPEC_TS,
            SPEC_BODY,
        );
        let header = format!("v1a,xyz {other} v1,!!notbase64 {SPEC_SIG}");
        check(SPEC_ID, &ts, &header, SPEC_BODY, SPEC_TS).unwrap();
        let header = format!("{SPEC_SIG}  {other}");
        check(SPEC_ID, &ts, &header, SPEC_BODY, SPEC_TS).unwrap();
        assert_eq!(
            check(SPEC_ID, &ts, &other, SPEC_BODY, SPEC_TS),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn malformed_headers() {
        let ts = SPEC_TS.to_string();
        let now = SPEC_TS;
        use SignatureError::*;
        assert_eq!(check("", &ts, SPEC_SIG, SPEC_BODY, now), Err(MalformedId));
        assert_eq!(
            check("a b", &ts, SPEC_SIG, SPEC_BODY, now),
            Err(MalformedId)
        );
        for bad_ts in [
            "",
            "abc",
            "-1",
            "1614265330.5",
            "1e9",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(SPEC_ID, bad_ts, SPEC_SIG, SPEC_BODY, now),
                Err(MalformedTimestamp),
                "{bad_ts}"
            );
        }
        for bad_sig in ["", "   ", "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="] {
            assert_eq!(
                check(SPEC_ID, &ts, bad_sig, SPEC_BODY, now),
                Err(MalformedSignature),
                "{bad_sig:?}"
            );
        }
    }
}
