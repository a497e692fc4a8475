//! Access tokens for the CRM sinks: a static token, or an OAuth 2.0 refresh-token grant with a
//! cached access token (HubSpot `POST /oauth/v3/token`, Zoho `POST {accounts}/oauth/v2/token`).
//!
//! Owns the token cache and the refresh call. Invariants:
//! - one cache per [`Credentials`] value, shared by its clones (`Arc`), so the workers of a
//!   process mint as few tokens as possible (Zoho allows 10 mints per refresh token per 10 min);
//!   refreshes are serialised by the cache's lock, so concurrent callers wait for one refresh;
//! - a cached token is used until it is within [`REFRESH_MARGIN`] of its `expires_in` (or half
//!   its lifetime, for very short lifetimes), then refreshed before use;
//! - [`Credentials::send_json`] sends every CRM request: after a 401 it drops the cached token
//!   (only if it is still the one that failed, [`Credentials::invalidate`]) and sends once more
//!   with a fresh one; a second 401 is the caller's to classify (fatal);
//! - the refresh is a form-encoded POST body (`grant_type=refresh_token`, `client_id`,
//!   `client_secret`, `refresh_token`): never a query string, so secrets stay out of URLs and
//!   proxy logs (Zoho documents the query string but accepts the form body);
//! - errors: network failures, 429 and 5xx are transient (also when the answer is not JSON, an
//!   HTML error page of a proxy); an answer that is not JSON with any other status (an HTML
//!   login page) is fatal, naming the endpoint, status and content type, never the body; Zoho's
//!   HTTP 200 `{"error": ...}`, HubSpot's 400 `BAD_CLIENT_ID` / `BAD_CLIENT_SECRET` /
//!   `BAD_REFRESH_TOKEN` and any other 4xx are fatal, saying which credential was refused when
//!   the answer tells, with a hint naming the environment variables; Zoho's mint-rate refusal
//!   ("too many requests") is transient;
//! - no secret reaches a log, an error or `Debug` output: [`Credentials`] prints only the names
//!   of the variables it was read from.
//!
//! Zoho answers the refresh with the `api_domain` of the account's data centre; it is kept
//! ([`Credentials::api_domain`]) for the Zoho sink, which sends requests there unless its
//! `base_url` pins another host. An `api_domain` that is plain http to a host other than
//! loopback is fatal (the access token would travel in clear).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::sinks::Auth;
use crate::config::{SecretSource, is_secure_url};
use crate::sink::SinkError;
use crate::sink::http::{self, JsonResponse};

/// Refresh a token this long before it expires.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed when the token response carries no `expires_in` (both vendors: 30-60 min).
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(1800);
/// Wait after the token endpoint refused to mint more tokens for now (Zoho: 10 per 10 min).
const MINT_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Where access tokens come from. Cheap to clone; clones share the token cache.
#[derive(Clone)]
pub(crate) struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    /// For hints: the variable names, never values.
    label: String,
    cache: Mutex<Option<Cached>>,
}

enum Source {
    Static(String),
    Refresh {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_url: String,
    },
}

struct Cached {
    token: String,
    refresh_at: Instant,
    api_domain: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.source {
            Source::Static(_) => "token",
            Source::Refresh { .. } => "oauth",
        };
        f.debug_struct("Credentials")
            .field("kind", &kind)
            .field("from", &self.inner.label)
            .finish_non_exhaustive()
    }
}

impl From<String> for Credentials {
    fn from(token: String) -> Self {
        Credentials::token(token, "the token")
    }
}

impl From<&str> for Credentials {
    fn from(token: &str) -> Self {
        Credentials::from(token.to_string())
    }
}

/// Where a secret lives, for hints: the variable name or the file path.
fn name(src: &SecretSource) -> String {
    match src {
        SecretSource::Env(n) => n.clone(),
        SecretSource::File(p) => p.display().to_string(),
    }
}

impl Credentials {
    /// A static token; `label` names where it came from (for hints).
    pub(crate) fn token(token: String, label: impl Into<String>) -> Self {
        Credentials::new(Source::Static(token), label.into())
    }

    /// An OAuth refresh grant against `token_url`; `label` names the variables (for hints).
    pub(crate) fn oauth(
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_url: String,
        label: impl Into<String>,
    ) -> Self {
        Credentials::new(
            Source::Refresh {
                client_id,
                client_secret,
                refresh_token,
                token_url,
            },
            label.into(),
        )
    }

    fn new(source: Source, label: String) -> Self {
        Credentials {
            inner: Arc::new(Inner {
                source,
                label,
                cache: Mutex::new(None),
            }),
        }
    }

    /// Reads the secrets a validated [`Auth`] names (at start). The error names the variable
    /// or file that is missing, never a value.
    pub(crate) fn from_auth(auth: &Auth) -> Result<Self, String> {
        match auth {
            Auth::Token(src) => Ok(Credentials::token(src.read()?, name(src))),
            Auth::OAuth {
                client_id,
                client_secret,
                refresh_token,
                token_url,
            } => Ok(Credentials::oauth(
                client_id.read()?,
                client_secret.read()?,
                refresh_token.read()?,
                token_url.clone(),
                format!(
                    "{} (with {} and {})",
                    name(refresh_token),
                    name(client_id),
                    name(client_secret)
                ),
            )),
        }
    }

    /// Where the secrets came from, e.g. `HUBSPOT_TOKEN` (for hints; never a value).
    pub(crate) fn label(&self) -> &str {
        &self.inner.label
    }

    /// Whether a refused token can be replaced by a refresh.
    pub(crate) fn can_refresh(&self) -> bool {
        matches!(self.inner.source, Source::Refresh { .. })
    }

    /// The `api_domain` of the last token response (Zoho), if any.
    pub(crate) async fn api_domain(&self) -> Option<String> {
        self.inner
            .cache
            .lock()
            .await
            .as_ref()
            .and_then(|c| c.api_domain.clone())
    }

    /// The access token to send: the cached one, or a fresh one when none is cached or it is
    /// close to expiry.
    pub(crate) async fn access_token(&self, client: &reqwest::Client) -> Result<String, SinkError> {
        let (client_id, client_secret, refresh_token, token_url) = match &self.inner.source {
            Source::Static(t) => return Ok(t.clone()),
            Source::Refresh {
                client_id,
                client_secret,
                refresh_token,
                token_url,
            } => (client_id, client_secret, refresh_token, token_url),
        };
        let mut cache = self.inner.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("refresh_token", refresh_token.as_str()),
        ];
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = client
            .post(token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                SinkError::transient(
                    format!("OAuth token refresh failed: {}", e.without_url()),
                    None,
                )
            })?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
        let text = resp.text().await.map_err(|e| {
            SinkError::transient(
                format!(
                    "OAuth token refresh: reading the response: {}",
                    e.without_url()
                ),
                None,
            )
        })?;
        let Ok(body) = serde_json::from_str::<Value>(&text) else {
            return Err(not_json(token_url, status, content_type.as_deref()));
        };
        let now = Instant::now();
        let (token, refresh_at, api_domain) = parse_token_response(status, &body, now)
            .map_err(|e| self.refresh_error(status, &body, e))?;
        if let Some(domain) = &api_domain {
            insecure_api_domain(domain)?;
        }
        tracing::debug!(
            valid_s = refresh_at.saturating_duration_since(now).as_secs(),
            "OAuth access token refreshed"
        );
        *cache = Some(Cached {
            token: token.clone(),
            refresh_at,
            api_domain,
        });
        Ok(token)
    }

    /// One JSON request to the destination `who`, read whole ([`http::send_json`]; `what`
    /// names it in errors and logs, so never a query string): `request(token)` builds it with
    /// the current access token (URL and the vendor's authorization header) and `body` is sent
    /// as JSON. When `who` answers 401 and the token can be refreshed, drops the token and
    /// sends once more with a fresh one: the one 401 policy of every OAuth destination.
    pub(crate) async fn send_json<F, Fut>(
        &self,
        client: &reqwest::Client,
        who: &str,
        what: &str,
        body: Option<&Value>,
        request: F,
    ) -> Result<JsonResponse, SinkError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = reqwest::RequestBuilder>,
    {
        let send = |token: String| async {
            let mut rb = request(token).await;
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let r = http::send_json(rb, &format!("{who} {what}")).await?;
            tracing::debug!(
                destination = who,
                path = what,
                status = r.status.as_u16(),
                "response"
            );
            Ok::<_, SinkError>(r)
        };
        let token = self.access_token(client).await?;
        let r = send(token.clone()).await?;
        // A missing scope (Zoho's 401 OAUTH_SCOPE_MISMATCH) is not cured by a fresh token.
        let scope = r.body["code"] == "OAUTH_SCOPE_MISMATCH";
        if r.status == reqwest::StatusCode::UNAUTHORIZED && self.can_refresh() && !scope {
            tracing::info!(
                destination = who,
                "{who} refused the access token; refreshing once"
            );
            self.invalidate(&token).await;
            return send(self.access_token(client).await?).await;
        }
        Ok(r)
    }

    /// Drops the cached token if it is still `failed` (a 401 answered it), so the next
    /// [`Credentials::access_token`] refreshes. No effect for static tokens.
    pub(crate) async fn invalidate(&self, failed: &str) {
        let mut cache = self.inner.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.token == failed) {
            *cache = None;
        }
    }

    fn refresh_error(&self, status: u16, body: &Value, what: String) -> SinkError {
        let description = body["error_description"].as_str().unwrap_or("");
        if status == 429
            || status >= 500
            || description
                .to_ascii_lowercase()
                .contains("too many requests")
        {
            let wait = (status != 429 && status < 500).then_some(MINT_LIMIT_WAIT);
            return SinkError::transient(format!("OAuth token refresh: {what}"), wait);
        }
        let code = body["status"]
            .as_str()
            .or_else(|| body["error"].as_str())
            .unwrap_or("")
            .to_ascii_uppercase();
        let refused = if code.contains("CLIENT_SECRET") {
            " (the client secret was refused)"
        } else if code.contains("CLIENT_ID") {
            " (the client id was refused)"
        } else if code.contains("CLIENT") {
            " (the client id or secret was refused)"
        } else if code.contains("REFRESH_TOKEN") || code.contains("INVALID_CODE") {
            " (the refresh token was refused)"
        } else {
            ""
        };
        SinkError::fatal(
            format!("OAuth token refresh refused: {what}{refused}"),
            format!(
                "check the OAuth client id, client secret and refresh token in {} and the \
                 token_url (it must be the token endpoint of the account's data centre)",
                self.inner.label
            ),
        )
    }
}

/// The token endpoint as errors name it: `token_url` without its query string.
fn endpoint(token_url: &str) -> String {
    url::Url::parse(token_url).map_or_else(
        |_| "(token_url)".to_string(),
        |u| format!("{}{}", u.origin().ascii_serialization(), u.path()),
    )
}

/// A token endpoint answer that is not JSON (an HTML error or login page, a proxy's or a
/// captive portal's answer), named by endpoint, status and content type, never its body:
/// transient for 429 and 5xx (a proxy's error page passes), fatal otherwise (a 200 or 4xx page
/// means `token_url` does not reach the token endpoint, which waiting does not cure).
fn not_json(token_url: &str, status: u16, content_type: Option<&str>) -> SinkError {
    let mut ct: String = content_type.unwrap_or("no content type").to_string();
    ct.truncate(64);
    let what = format!(
        "OAuth token endpoint {} answered HTTP {status} with {ct}, not JSON",
        endpoint(token_url)
    );
    if status == 429 || status >= 500 {
        return SinkError::transient(what, None);
    }
    SinkError::fatal(
        what,
        "check token_url: it must be the OAuth token endpoint of the account's data centre (an \
         HTML answer usually means a login page, a proxy or a captive portal in between)",
    )
}

/// Fatal unless the `api_domain` of a token response is https (or loopback, the emulators):
/// requests carrying the access token go there.
fn insecure_api_domain(domain: &str) -> Result<(), SinkError> {
    if url::Url::parse(domain).is_ok_and(|u| is_secure_url(&u)) {
        return Ok(());
    }
    Err(SinkError::fatal(
        "the OAuth token response names an api_domain that is not https; the access token \
         would travel in clear",
        "check that token_url is the token endpoint of the account's data centre (an https \
         URL), and nothing in between rewrites its answers",
    ))
}

/// Parses a token endpoint answer: `(token, refresh_at, api_domain)` or a value-free reason.
fn parse_token_response(
    status: u16,
    body: &Value,
    now: Instant,
) -> Result<(String, Instant, Option<String>), String> {
    // Zoho reports OAuth errors as HTTP 200 {"error": "invalid_client" | "invalid_code" | ..}.
    if let Some(e) = body["error"].as_str() {
        return Err(format!("HTTP {status}, error {e}"));
    }
    if !(200..300).contains(&status) {
        let code = body["status"]
            .as_str()
            .or_else(|| body["category"].as_str())
            .unwrap_or("");
        return Err(format!("HTTP {status} {code}").trim_end().to_string());
    }
    let Some(token) = body["access_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(format!("HTTP {status} without an access_token"));
    };
    let lifetime = body["expires_in"]
        .as_u64()
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_EXPIRES_IN);
    let refresh_at = now + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
    let api_domain = body["api_domain"]
        .as_str()
        .map(|d| d.trim_end_matches('/').to_string());
    Ok((token.to_string(), refresh_at, api_domain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::test_support::zoho_oauth as creds;
    use crate::sink::test_support::{emulator_fault, emulator_state, fatal, serve, transient};
    use driftless_emulators::zoho;
    use serde_json::json;

    #[test]
    fn token_responses_parse_and_errors_carry_no_secrets() {
        let now = Instant::now();
        let (t, at, dom) = parse_token_response(
            200,
            &json!({"access_token": "abc", "expires_in": 3600, "api_domain": "https://www.zohoapis.eu/"}),
            now,
        )
        .unwrap();
        assert_eq!(t, "abc");
        assert_eq!(at - now, Duration::from_secs(3540), "60 s margin");
        assert_eq!(dom.as_deref(), Some("https://www.zohoapis.eu"));
        let (_, at, _) =
            parse_token_response(200, &json!({"access_token": "x", "expires_in": 2}), now).unwrap();
        assert_eq!(at - now, Duration::from_secs(1), "short lifetimes: half");
        let e = parse_token_response(200, &json!({"error": "invalid_code"}), now).unwrap_err();
        assert_eq!(e, "HTTP 200, error invalid_code");
        let e =
            parse_token_response(400, &json!({"status": "BAD_REFRESH_TOKEN"}), now).unwrap_err();
        assert_eq!(e, "HTTP 400 BAD_REFRESH_TOKEN");
        let c = Credentials::oauth(
            "id".into(),
            "s3cret".into(),
            "r3fresh".into(),
            "http://x".into(),
            "R",
        );
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("r3fresh"), "{dbg}");
    }

    async fn zoho_emulator() -> String {
        serve(zoho::router(zoho::Options {
            api_domain: "http://127.0.0.1:9".into(),
            ..zoho::Options::default()
        }))
        .await
    }

    #[tokio::test]
    async fn refresh_is_cached_shared_and_invalidated() {
        let base = zoho_emulator().await;
        let client = reqwest::Client::new();
        let c = creds(&base, "test-refresh-token");
        let t1 = c.access_token(&client).await.unwrap();
        let t2 = c.clone().access_token(&client).await.unwrap();
        assert_eq!(t1, t2, "clones share the cache");
        assert_eq!(c.api_domain().await.as_deref(), Some("http://127.0.0.1:9"));
        c.invalidate("some other token").await;
        assert_eq!(c.access_token(&client).await.unwrap(), t1);
        c.invalidate(&t1).await;
        let t3 = c.access_token(&client).await.unwrap();
        assert_ne!(t3, t1);
        let st = emulator_state(&base).await;
        assert_eq!(st["request_counts"]["POST /oauth/v2/token"], 2);
    }

    #[tokio::test]
    async fn bad_refresh_token_is_fatal_and_server_errors_transient() {
        let base = zoho_emulator().await;
        let client = reqwest::Client::new();
        let (message, hint) = fatal(creds(&base, "revoked").access_token(&client).await);
        assert!(message.contains("invalid_code"), "{message}");
        assert!(!message.contains("revoked"));
        assert!(hint.contains("ZOHO_REFRESH_TOKEN"), "{hint}");
        emulator_fault(&base, json!({"path": "/oauth", "status": 503})).await;
        let c = creds(&base, "test-refresh-token");
        transient(c.access_token(&client).await);
        assert!(c.access_token(&client).await.is_ok());
        let unreachable = Credentials::oauth(
            "a".into(),
            "b".into(),
            "c".into(),
            "http://127.0.0.1:9/token".into(),
            "X",
        );
        transient(unreachable.access_token(&client).await);
    }

    /// A token endpoint answering HTML (a proxy's error page, a login page): named by endpoint,
    /// status and content type, never the page; transient for 5xx, fatal otherwise; nothing
    /// cached, so the next refresh after the page went away mints a token.
    #[tokio::test]
    async fn a_token_endpoint_answering_html_is_named_and_classified() {
        let base = zoho_emulator().await;
        let client = reqwest::Client::new();
        let endpoint = format!("{base}/oauth/v2/token");
        for (status, transient_expected) in [(502, true), (503, true), (200, false), (404, false)] {
            emulator_fault(
                &base,
                json!({"path": "/oauth", "status": status, "html": true}),
            )
            .await;
            let c = creds(&base, "test-refresh-token");
            let r = c.access_token(&client).await;
            let message = if transient_expected {
                transient(r).1
            } else {
                let (message, hint) = fatal(r);
                assert!(hint.contains("token_url"), "{hint}");
                message
            };
            for part in [
                endpoint.as_str(),
                &format!("HTTP {status}"),
                "text/html",
                "not JSON",
            ] {
                assert!(message.contains(part), "{status}: {part} in {message}");
            }
            assert!(!message.contains('<'), "no page in the error: {message}");
            assert!(
                c.access_token(&client).await.is_ok(),
                "{status}: then a token"
            );
        }
    }

    #[tokio::test]
    async fn an_api_domain_over_plain_http_to_another_host_is_fatal() {
        for (domain, ok) in [
            ("https://www.zohoapis.eu", true),
            ("http://localhost:8080", true),
            ("http://[::1]:8080", true),
            ("http://127.3.2.1", true),
            ("http://www.zohoapis.eu", false),
            ("http://10.0.0.1", false),
            ("ftp://www.zohoapis.eu", false),
            ("not a url", false),
        ] {
            assert_eq!(insecure_api_domain(domain).is_ok(), ok, "{domain}");
        }
        let base = serve(zoho::router(zoho::Options {
            api_domain: "http://www.zohoapis.eu".into(),
            ..zoho::Options::default()
        }))
        .await;
        let c = creds(&base, "test-refresh-token");
        let (message, hint) = fatal(c.access_token(&reqwest::Client::new()).await);
        assert!(message.contains("api_domain"), "{message}");
        assert!(hint.contains("token_url"), "{hint}");
        assert_eq!(c.api_domain().await, None, "nothing cached");
    }
}
