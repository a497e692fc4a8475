//! Unit tests of the parent module.

use super::*;
use crate::config::fields::FieldRule;
use crate::config::sinks::OnDelete;
use crate::event::{ChangeEvent, Op};
use crate::sink::Sink;
use crate::sink::crm::Ledgered;
use crate::sink::test_support::{
    applied, apply_with_poison, as_update, assert_update_keeps_the_record, batch, crm_config,
    emulator_fault as fault, emulator_state as state, event, fatal, mapped_rule, rejected, serve,
    transient,
};
use driftless_emulators::hubspot::{BatchInvalidInput, Options, router};
use limits::RateLimiter;
use reqwest::header::HeaderValue;

async fn start(opts: Options) -> String {
    serve(router(opts)).await
}

fn valid_sink(base_url: &str) -> ValidSink {
    let stage = mapped_rule(
        "stage",
        "lifecyclestage",
        &[("Lead", "lead"), ("Bogus", "not_an_option")],
    );
    let fields = vec![
        FieldRule::new("email", "email"),
        FieldRule::new("first_name", "firstname"),
        FieldRule::new("extra", "no_such_property"),
        stage,
    ];
    let kind = SinkKind::Hubspot {
        object: "contacts".into(),
    };
    crm_config("contacts", kind, fields, "email", "HUBSPOT_TOKEN", base_url)
}

async fn sink(base: &str) -> Ledgered<HubspotSink> {
    let creds = Credentials::token("test-token".into(), "HUBSPOT_TOKEN");
    Ledgered::in_memory(HubspotSink::new(&valid_sink(base), creds).unwrap())
}

fn contact(email: &str, first: &str) -> ChangeEvent {
    event(
        Op::Create,
        json!({"email": email, "first_name": first, "stage": "Lead"}),
    )
}

async fn contacts(base: &str) -> Vec<Value> {
    state(base).await["objects"]["contacts"]
        .as_array()
        .unwrap()
        .clone()
}

/// The properties of `a@x.io`, checked to be one of two contacts and renamed Adele.
async fn adele_and_one_more(base: &str) -> Value {
    let recs = contacts(base).await;
    assert_eq!(recs.len(), 2);
    let a = recs
        .iter()
        .find(|r| r["properties"]["email"] == "a@x.io")
        .unwrap();
    assert_eq!(a["properties"]["firstname"], "Adele");
    a["properties"].clone()
}

#[tokio::test]
async fn upsert_creates_then_updates_one_object_per_key() {
    let base = start(Options::default()).await;
    let mut s = sink(&base).await;
    assert_update_keeps_the_record(
        &mut s,
        vec![contact("a@x.io", "Ada"), contact("b@x.io", "Bob")],
        as_update(contact("a@x.io", "Adele")),
    )
    .await;
    let a = adele_and_one_more(&base).await;
    assert_eq!(a["lifecyclestage"], "lead");
}

#[tokio::test]
async fn delete_archives_and_absent_delete_succeeds() {
    let base = start(Options::default()).await;
    let mut s = sink(&base).await;
    s.apply(&batch(vec![contact("a@x.io", "Ada")]))
        .await
        .unwrap();
    let del = |email: &str| event(Op::Delete, json!({"email": email}));
    let out = s
        .apply(&batch(vec![del("a@x.io"), del("ghost@x.io")]))
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{out:?}");
    assert_eq!(out.destination_ids.len(), 1);
    let recs = contacts(&base).await;
    assert_eq!(recs[0]["archived"], true);
    // Replaying the delete is harmless.
    let out = s.apply(&batch(vec![del("a@x.io")])).await.unwrap();
    assert!(out.rejected.is_empty() && out.destination_ids.is_empty());
}

/// Invalid values are refused per input (207) or for the whole batch (400, bisected): either
/// way exactly the bad entries are rejected and the good one is written.
#[tokio::test]
async fn partial_207_rejects_only_the_bad_entries() {
    for mode in [
        BatchInvalidInput::WholeBatch400,
        BatchInvalidInput::MultiStatus207,
    ] {
        bad_entries_are_rejected_alone(mode).await;
    }
}

async fn bad_entries_are_rejected_alone(mode: BatchInvalidInput) {
    let base = start(Options {
        batch_invalid_input: mode,
        ..Options::default()
    })
    .await;
    let mut s = sink(&base).await;
    let bad_option = event(Op::Create, json!({"email": "b@x.io", "stage": "Bogus"}));
    let bad_prop = event(Op::Create, json!({"email": "c@x.io", "extra": "x"}));
    let unmapped = event(Op::Create, json!({"email": "d@x.io", "stage": "Nope"}));
    let poison = vec![bad_option, bad_prop, unmapped];
    let out = apply_with_poison(&mut s, contact("a@x.io", "Ada"), poison).await;
    assert_eq!(
        rejected(&out),
        [
            (1, "VALIDATION_ERROR"),
            (2, "VALIDATION_ERROR"),
            (3, "MAPPING")
        ]
    );
    assert!(
        out.rejected[1].message.contains("no_such_property"),
        "{out:?}"
    );
    assert_eq!(contacts(&base).await.len(), 1);
}

#[tokio::test]
async fn whole_batch_400_is_bisected() {
    let base = start(Options::default()).await;
    let mut s = sink(&base).await;
    // Every input invalid → HubSpot answers 400 for the whole request.
    let bad = |e: &str| event(Op::Create, json!({"email": e, "extra": "x"}));
    let out = s
        .apply(&batch(vec![bad("a@x.io"), bad("b@x.io"), bad("c@x.io")]))
        .await
        .unwrap();
    assert_eq!(
        out.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // Two keys with one email are never merged into one record: the second is refused
    // before any request (one record per key).
    let dup = |id: u32, first: &str| {
        event(
            Op::Create,
            json!({"id": id, "email": "dup@x.io", "first_name": first}),
        )
    };
    let out = s
        .apply(&batch(vec![dup(1, "One"), dup(2, "Two")]))
        .await
        .unwrap();
    assert_eq!(rejected(&out), [(1, "IDENTITY_CONFLICT")]);
    assert_eq!(applied(&out), [0]);
    let recs = contacts(&base).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["properties"]["firstname"], "One");
    let st = state(&base).await;
    let upserts = &st["requests"]["byPath"]["/crm/v3/objects/contacts/batch/upsert"];
    assert_eq!(
        upserts.as_u64(),
        Some(6),
        "5 for the first batch (bisected), 1 for the second"
    );
}

#[tokio::test]
async fn rate_limits_are_transient_with_retry_after() {
    let base = start(Options {
        burst_limit: 3,
        ..Options::default()
    })
    .await;
    // Three clients share the token but not an account (as in three processes); their
    // limiters know nothing of the others.
    let detached = || Account::detached(RateLimiter::new(1000, DEFAULT_WINDOW));
    let mut s = sink(&base).await;
    s.account = detached(); // let the emulator answer 429
    s.apply(&batch(vec![contact("a@x.io", "A")])).await.unwrap(); // schema + upsert
    let mut s2 = sink(&base).await;
    s2.schema = s.schema.clone();
    s2.account = detached();
    s2.apply(&batch(vec![contact("b@x.io", "B")]))
        .await
        .unwrap(); // the window is full
    let mut s3 = sink(&base).await;
    s3.schema = s.schema.clone();
    s3.account = detached();
    let (retry_after, _) = transient(s3.apply(&batch(vec![contact("c@x.io", "C")])).await);
    // s3 sent nothing else in the window: it must wait for a whole one.
    assert_eq!(retry_after, Some(Duration::from_secs(10)));
    // s sent a request in the window: it retries when that one expires, not a whole
    // window after the 429.
    let (retry_after, _) = transient(s.apply(&batch(vec![contact("d@x.io", "D")])).await);
    let d = retry_after.unwrap();
    assert!(d < Duration::from_secs(10), "{d:?}");

    let base = start(Options {
        daily_limit: 1,
        ..Options::default()
    })
    .await;
    let mut s = sink(&base).await;
    // The schema fetch uses the day's only request.
    let (retry_after, _) = transient(s.apply(&batch(vec![contact("a@x.io", "A")])).await);
    let d = retry_after.unwrap();
    assert!(d > Duration::from_secs(10) && d <= Duration::from_secs(86_400));
}

#[tokio::test]
async fn server_error_is_transient_then_retry_succeeds() {
    let base = start(Options::default()).await;
    let mut s = sink(&base).await;
    fault(&base, json!({"path": "batch/upsert", "status": 500})).await;
    let b = batch(vec![contact("a@x.io", "Ada")]);
    transient(s.apply(&b).await);
    let out = s.apply(&b).await.unwrap();
    assert_eq!(out.destination_ids.len(), 1);
    assert_eq!(contacts(&base).await.len(), 1);
}

#[tokio::test]
async fn bad_token_is_fatal_with_hint() {
    let base = start(Options::default()).await;
    let creds = Credentials::token("wrong".into(), "HUBSPOT_TOKEN");
    let mut s = Ledgered::in_memory(HubspotSink::new(&valid_sink(&base), creds).unwrap());
    let (message, hint) = fatal(s.apply(&batch(vec![contact("a@x.io", "Ada")])).await);
    assert!(hint.contains("HUBSPOT_TOKEN"), "{hint}");
    assert!(!message.contains("wrong"));
}

#[tokio::test]
async fn oauth_token_expiry_mid_run_refreshes_and_converges() {
    let base = start(Options::default()).await;
    let creds = Credentials::oauth(
        "test-client-id".into(),
        "test-client-secret".into(),
        "test-refresh-token".into(),
        format!("{base}/oauth/v3/token"),
        "HUBSPOT_REFRESH_TOKEN",
    );
    let mut s = Ledgered::in_memory(HubspotSink::new(&valid_sink(&base), creds).unwrap());
    s.apply(&batch(vec![contact("a@x.io", "Ada")]))
        .await
        .unwrap();
    // Every token expires before the next upsert: 401, refresh, retry, success.
    fault(
        &base,
        json!({"path": "batch/upsert", "expire_tokens": true}),
    )
    .await;
    let e = as_update(contact("a@x.io", "Adele"));
    let out = s
        .apply(&batch(vec![e, contact("b@x.io", "Bob")]))
        .await
        .unwrap();
    assert!(out.rejected.is_empty(), "{out:?}");
    adele_and_one_more(&base).await;
    let st = state(&base).await;
    assert_eq!(st["requests"]["byPath"]["/oauth/v3/token"], 2, "{st:#}");

    // A refresh token the server refuses: fatal, hint names the variable.
    let creds = Credentials::oauth(
        "test-client-id".into(),
        "test-client-secret".into(),
        "revoked".into(),
        format!("{base}/oauth/v3/token"),
        "HUBSPOT_REFRESH_TOKEN",
    );
    let mut s = Ledgered::in_memory(HubspotSink::new(&valid_sink(&base), creds).unwrap());
    let (_, hint) = fatal(s.apply(&batch(vec![contact("c@x.io", "C")])).await);
    assert!(hint.contains("HUBSPOT_REFRESH_TOKEN"), "{hint}");
}

#[tokio::test]
async fn missing_scope_is_fatal_with_a_hint_naming_it() {
    let base = start(Options {
        token_scopes: vec![
            "crm.objects.contacts.read".into(),
            "crm.schemas.contacts.read".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut s = sink(&base).await;
    let (message, hint) = fatal(s.apply(&batch(vec![contact("a@x.io", "Ada")])).await);
    assert!(message.contains("MISSING_SCOPES"), "{message}");
    assert!(message.contains("crm.objects.contacts.write"), "{message}");
    assert!(hint.contains("crm.objects.contacts.write"), "{hint}");
    assert!(
        !hint.contains("contacts.read"),
        "only the missing one: {hint}"
    );
    assert!(contacts(&base).await.is_empty());
}

#[tokio::test]
async fn wrong_client_secret_on_refresh_is_fatal_and_says_so() {
    let base = start(Options::default()).await;
    let creds = Credentials::oauth(
        "test-client-id".into(),
        "not-the-s3cret".into(),
        "test-refresh-token".into(),
        format!("{base}/oauth/v3/token"),
        "HUBSPOT_REFRESH_TOKEN (with HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET)",
    );
    let mut s = Ledgered::in_memory(HubspotSink::new(&valid_sink(&base), creds).unwrap());
    let (message, hint) = fatal(s.apply(&batch(vec![contact("a@x.io", "Ada")])).await);
    assert!(message.contains("BAD_CLIENT_SECRET"), "{message}");
    assert!(
        message.contains("the client secret was refused"),
        "{message}"
    );
    assert!(!message.contains("s3cret") && !hint.contains("s3cret"));
    assert!(hint.contains("HUBSPOT_CLIENT_SECRET"), "{hint}");
    assert!(contacts(&base).await.is_empty());
}

#[tokio::test]
async fn fetch_schema_reads_types_unique_and_read_only() {
    let base = start(Options::default()).await;
    let s = sink(&base).await;
    let schema = s.fetch_schema().await.unwrap();
    assert!(schema["email"].unique);
    assert_eq!(schema["email"].kind, PropertyType::String);
    assert!(schema["hs_object_id"].read_only);
    assert_eq!(schema["date_of_birth"].kind, PropertyType::Date);
    assert_eq!(schema["lifecyclestage"].kind, PropertyType::Enumeration);
    assert!(
        schema["lifecyclestage"]
            .options
            .contains(&"lead".to_string())
    );
    assert!(!schema["firstname"].unique && !schema["firstname"].read_only);
}

#[tokio::test]
async fn deletes_ignored_and_truncates_are_no_ops() {
    let base = start(Options::default()).await;
    let mut cfg = valid_sink(&base);
    cfg.on_delete = OnDelete::Ignore;
    let mut s = Ledgered::in_memory(HubspotSink::new(&cfg, "test-token".into()).unwrap());
    let out = s
        .apply(&batch(vec![
            event(Op::Delete, json!({"email": "a@x.io"})),
            event(Op::Truncate, json!({})),
        ]))
        .await
        .unwrap();
    assert_eq!(out, Outcome::default());
    assert_eq!(state(&base).await["requests"]["total"], 0);
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn limiter_counts_a_sliding_window() {
    let t0 = Instant::now();
    let mut l = RateLimiter::new(3, Duration::from_secs(10));
    for i in 0..3 {
        assert_eq!(l.wait_needed(t0 + Duration::from_secs(i)), None);
        l.record(t0 + Duration::from_secs(i));
    }
    assert_eq!(
        l.wait_needed(t0 + Duration::from_secs(4)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(l.wait_needed(t0 + Duration::from_secs(10)), None);
}

#[test]
fn limiter_takes_headers_as_truth() {
    let t0 = Instant::now();
    let mut l = RateLimiter::default();
    l.record(t0);
    l.observe(
        &headers(&[
            ("x-hubspot-ratelimit-max", "2"),
            ("x-hubspot-ratelimit-remaining", "1"),
            ("x-hubspot-ratelimit-interval-milliseconds", "1000"),
        ]),
        t0,
    );
    assert_eq!(l.wait_needed(t0), None);
    l.record(t0);
    assert_eq!(
        l.wait_needed(t0),
        Some(Duration::from_secs(1)),
        "max 2 per 1 s"
    );
    // Remaining 0 (another client shares the token): wait until the window rolls.
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(l.wait_needed(t1), None);
    l.observe(&headers(&[("x-hubspot-ratelimit-remaining", "0")]), t1);
    assert_eq!(l.wait_needed(t1), Some(Duration::from_secs(1)));
    assert_eq!(l.wait_needed(t1 + Duration::from_secs(1)), None);
    l.block_for(Duration::from_secs(3), t1);
    assert_eq!(
        l.wait_needed(t1 + Duration::from_secs(1)),
        Some(Duration::from_secs(2))
    );
}

#[test]
fn limiter_counts_a_request_from_its_answer() {
    // HubSpot counts a request when it arrives, somewhere between our send and its answer.
    // Request 1 was slow to arrive (sent at 0, counted at 300 ms, answered at 310 ms): a
    // window stamped with send times would allow request 3 at 10 s, which HubSpot counts
    // at (say) 10.001 s, 9.701 s after request 1: a 429.
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut l = RateLimiter::new(2, Duration::from_secs(10));
    let first = l.record(t0);
    l.answered(first, t0 + ms(310));
    let second = l.record(t0 + ms(400));
    l.answered(second, t0 + ms(410));
    assert_eq!(l.wait_needed(t0 + ms(10_000)), Some(ms(310)));
    assert_eq!(l.wait_needed(t0 + ms(10_310)), None);
    // A late answer never moves a stamp back.
    let mut one = RateLimiter::new(1, Duration::from_secs(10));
    let late = one.record(t0 + ms(50));
    one.answered(late, t0);
    assert_eq!(one.wait_needed(t0 + ms(50)), Some(ms(10_000)));
}

#[tokio::test]
async fn a_daily_limit_parks_until_midnight_in_the_accounts_time_zone() {
    for zone in [chrono_tz::US::Eastern, chrono_tz::Asia::Tokyo] {
        // The zone read and the schema fetch use the day's budget; the upsert meets DAILY.
        let base = start(Options {
            daily_limit: 2,
            time_zone: zone,
            ..Options::default()
        })
        .await;
        let mut s = sink(&base).await;
        let before = chrono::Utc::now();
        let (retry_after, _) = transient(s.apply(&batch(vec![contact("a@x.io", "A")])).await);
        let after = chrono::Utc::now();
        let parked = retry_after.unwrap();
        let until =
            |t: chrono::DateTime<chrono::Utc>| (limits::daily_reset(t, zone) - t).to_std().unwrap();
        // Between the park computed at the start and at the end of the call.
        let slack = (after - before).to_std().unwrap();
        assert!(
            parked + slack >= until(after) && parked <= until(before) + slack,
            "{zone}: parked {parked:?}, expected about {:?}",
            until(after)
        );
        // Never until UTC midnight (unless that is the account's midnight too).
        let utc_midnight = (after.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        let to_utc_midnight = (utc_midnight - after).to_std().unwrap();
        assert!(
            parked.abs_diff(to_utc_midnight) > Duration::from_secs(3600),
            "{zone}: {parked:?} vs {to_utc_midnight:?}"
        );
        // Every client of the account is parked, not only the one that met the 429.
        let now = Instant::now();
        assert!(s.account.wait_needed(now) > Some(Duration::from_secs(3600)));
    }
}

#[tokio::test]
async fn clients_of_one_account_share_one_window() {
    let base = start(Options {
        burst_limit: 3,
        burst_window: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    // Two sinks with the same token and a sibling: one account, one budget.
    let mut a = sink(&base).await;
    let mut b = sink(&base).await;
    assert!(Arc::ptr_eq(&a.account, &b.account));
    assert!(Arc::ptr_eq(&a.account, &a.sibling().account));
    // The zone read, the schema fetch and the upsert fill the window...
    a.apply(&batch(vec![contact("a@x.io", "A")])).await.unwrap();
    b.use_schema(a.known_schema().unwrap().clone());
    // ...so the other sink waits for it to roll instead of meeting a 429.
    b.apply(&batch(vec![contact("b@x.io", "B")])).await.unwrap();
    let st = state(&base).await;
    assert_eq!(st["requests"]["rateLimited"], 0, "{st}");
    assert_eq!(st["requests"]["total"], 4, "{st}");
}
