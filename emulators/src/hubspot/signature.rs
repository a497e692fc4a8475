//! HubSpot webhook request signatures, as the emulator produces them.
//!
//! Owns the emulator's own reading of HubSpot's published request-validation contract, kept
//! independent of the product's code so that the emulator is a second opinion on it:
//! - **v1** (`X-HubSpot-Signature`, with `X-HubSpot-Signature-Version: v1`): the lowercase hex
//!   SHA-256 digest of the app's client secret immediately followed by the raw body;
//! - **v3** (`X-HubSpot-Signature-v3`): the base64 HMAC-SHA256, keyed by the client secret, of
//!   the HTTP method, the full request URI, the raw body and the `X-HubSpot-Request-Timestamp`
//!   value (epoch milliseconds), concatenated without separators. Before signing, the URI has
//!   HubSpot's listed percent-escapes decoded (`%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`,
//!   in either hex case); every other escape stays as it is.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use sha2::Digest as _;

/// `X-HubSpot-Signature` (v1) for `body`.
pub fn sign_v1(client_secret: &str, body: &[u8]) -> String {
    let mut digest = sha2::Sha256::new();
    digest.update(client_secret.as_bytes());
    digest.update(body);
    hex::encode(digest.finalize())
}

/// `X-HubSpot-Signature-v3` for a request to `uri` sent at `timestamp_ms`.
pub fn sign_v3(
    client_secret: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(client_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(method.as_bytes());
    mac.update(canonical_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `uri` with HubSpot's listed percent-escapes decoded.
fn canonical_uri(uri: &str) -> String {
    const DECODED: &str = ":/?@!$'()*,;";
    let mut out = String::with_capacity(uri.len());
    let mut chars = uri.char_indices();
    while let Some((at, c)) = chars.next() {
        let escaped = (c == '%')
            .then(|| uri.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .map(char::from)
            .filter(|decoded| DECODED.contains(*decoded));
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                chars.nth(1);
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";

    #[test]
    fn v1_matches_hubspots_published_example() {
        let body = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            sign_v1(SECRET, body),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
    }

    #[test]
    fn v3_matches_the_documented_algorithm() {
        let body = br#"{"example_field":"example_value"}"#;
        let uri = "https://www.example.com/webhook_uri";
        let expected = "rQEKkaNUiu+1qGF//O/pw4BCzstSqO1PyUnGICmf+7o=";
        assert_eq!(
            sign_v3(SECRET, "POST", uri, body, 1_700_000_000_000),
            expected
        );
        assert_ne!(
            sign_v3(SECRET, "POST", uri, body, 1_700_000_000_001),
            expected
        );
        assert_ne!(
            sign_v3("other", "POST", uri, body, 1_700_000_000_000),
            expected
        );
    }

    #[test]
    fn v3_signs_the_uri_with_listed_escapes_decoded() {
        assert_eq!(
            canonical_uri("https://h/p%3Fq?a=%40b%2c%3b&c=%20%25x%2"),
            "https://h/p?q?a=@b,;&c=%20%25x%2"
        );
        let encoded = sign_v3(SECRET, "POST", "https://h/x?t=a%40b", b"[]", 1);
        assert_eq!(
            encoded,
            sign_v3(SECRET, "POST", "https://h/x?t=a@b", b"[]", 1)
        );
    }
}
