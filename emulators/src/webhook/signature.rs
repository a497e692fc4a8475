//! Standard Webhooks 1.0 signatures, as the receiver emulator checks them.
//!
//! Owns the emulator's own reading of the published contract, kept independent of the product's
//! signing code so the emulator is a second opinion on it:
//! - the signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, the timestamp exactly as
//!   it was sent (Unix seconds);
//! - the tag is `HMAC-SHA256(key, content)`, base64-encoded, sent as `v1,<tag>` in
//!   `webhook-signature`; that header may carry several space-separated `version,tag` entries (key
//!   rotation) and one matching `v1` entry is enough; other versions are ignored;
//! - the key is the base64 text after `whsec_` (an unprefixed secret is taken as raw bytes);
//! - a timestamp further than the tolerance from the receiver's clock, in either direction, is
//!   refused (replay protection); tags are compared in constant time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A signing key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Reads `whsec_<base64>`, or any other non-empty text as raw key bytes.
    pub fn parse(text: &str) -> Result<Secret, Refusal> {
        let text = text.trim();
        let key = match text.strip_prefix("whsec_") {
            Some(encoded) => BASE64
                .decode(encoded)
                .map_err(|_| Refusal::BadSecret("the text after whsec_ is not base64"))?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(Refusal::BadSecret("empty secret"));
        }
        Ok(Secret { key })
    }

    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
            mac.update(part);
        }
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a delivery's signature was refused (the text is recorded as the rejection reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The secret could not be read.
    BadSecret(&'static str),
    /// `webhook-id` is empty or holds whitespace or control characters.
    BadId,
    /// `webhook-timestamp` is not a whole number of seconds.
    BadTimestamp,
    /// The timestamp is this many seconds older than the tolerance allows.
    TooOld { age_s: i64, tolerance_s: i64 },
    /// The timestamp is this many seconds ahead of the receiver's clock.
    TooNew { ahead_s: i64, tolerance_s: i64 },
    /// `webhook-signature` has no `version,tag` entry at all.
    BadSignatureHeader,
    /// No `v1` entry matches the content.
    Mismatch,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadSecret(why) => write!(f, "invalid webhook secret: {why}"),
            Refusal::BadId => f.write_str("malformed webhook-id header"),
            Refusal::BadTimestamp => f.write_str("malformed webhook-timestamp header"),
            Refusal::TooOld { age_s, tolerance_s } => {
                write!(f, "webhook-timestamp too old ({age_s} s > {tolerance_s} s)")
            }
            Refusal::TooNew {
                ahead_s,
                tolerance_s,
            } => write!(
                f,
                "webhook-timestamp too far in the future ({ahead_s} s > {tolerance_s} s)"
            ),
            Refusal::BadSignatureHeader => f.write_str("malformed webhook-signature header"),
            Refusal::Mismatch => f.write_str("no matching v1 signature"),
        }
    }
}

/// The `webhook-signature` value (`v1,<base64 tag>`) for one delivery (the tests play the sender).
#[cfg(test)]
pub fn sign(secret: &Secret, id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let tag = secret
        .tag(id, &timestamp_s.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", BASE64.encode(tag))
}

/// Checks one delivery's `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
/// against its raw body, at receiver time `now_s`.
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), Refusal> {
    if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refusal::BadId);
    }
    let timestamp = timestamp.trim();
    let sent_s: i64 = match timestamp.bytes().all(|b| b.is_ascii_digit()) {
        true => timestamp.parse().map_err(|_| Refusal::BadTimestamp)?,
        false => return Err(Refusal::BadTimestamp),
    };
    let tolerance_s = tolerance_s.max(0);
    let age_s = now_s.saturating_sub(sent_s);
    if age_s > tolerance_s {
        return Err(Refusal::TooOld { age_s, tolerance_s });
    }
    if age_s < -tolerance_s {
        let ahead_s = age_s.saturating_neg();
        return Err(Refusal::TooNew {
            ahead_s,
            tolerance_s,
        });
    }
    let expected = secret.tag(id, timestamp, body);
    let mut entries = 0;
    for (version, tag) in signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
    {
        entries += 1;
        let Ok(tag) = BASE64.decode(tag) else {
            continue;
        };
        if version == "v1" && expected.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(if entries == 0 {
        Refusal::BadSignatureHeader
    } else {
        Refusal::Mismatch
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example in the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> Secret {
        Secret::parse(SECRET).unwrap()
    }

    #[test]
    fn signs_the_specification_example() {
        assert_eq!(sign(&secret(), ID, TS, BODY), SIGNATURE);
    }

    #[test]
    fn verifies_the_specification_example_among_other_entries() {
        let header = format!("v2,abc v1,AAAA {SIGNATURE}");
        assert_eq!(
            verify(&secret(), ID, &TS.to_string(), &header, BODY, TS, 300),
            Ok(())
        );
    }

    #[test]
    fn refuses_tampering_and_stale_or_future_timestamps() {
        let ts = TS.to_string();
        let check = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
            verify(&secret(), id, ts, sig, body, now, 300)
        };
        assert_eq!(check(ID, &ts, SIGNATURE, b"{}", TS), Err(Refusal::Mismatch));
        assert_eq!(
            check("msg_other", &ts, SIGNATURE, BODY, TS),
            Err(Refusal::Mismatch)
        );
        assert_eq!(check("", &ts, SIGNATURE, BODY, TS), Err(Refusal::BadId));
        assert_eq!(
            check(ID, "1614265330.5", SIGNATURE, BODY, TS),
            Err(Refusal::BadTimestamp)
        );
        assert_eq!(
            check(ID, &ts, "", BODY, TS),
            Err(Refusal::BadSignatureHeader)
        );
        let old = check(ID, &ts, SIGNATURE, BODY, TS + 301).unwrap_err();
        assert!(old.to_string().contains("too old"), "{old}");
        assert_eq!(
            check(ID, &ts, SIGNATURE, BODY, TS - 301),
            Err(Refusal::TooNew {
                ahead_s: 301,
                tolerance_s: 300
            })
        );
        assert_eq!(check(ID, &ts, SIGNATURE, BODY, TS + 300), Ok(()));
    }

    #[test]
    fn reads_prefixed_and_raw_secrets() {
        assert!(Secret::parse("whsec_!!").is_err());
        assert!(Secret::parse("  ").is_err());
        let raw = Secret::parse("secret").unwrap();
        assert_eq!(raw, Secret::parse("whsec_c2VjcmV0").unwrap());
        assert_eq!(format!("{raw:?}"), "Secret(..)");
    }
}
