//! Unit tests of the parent module.

use super::super::parse;
use super::{OnCrmDelete, Owner};

const BASE: &str = r#"
    [source]
    url_env = "U"
    slot = "s"
    publication = "p"
    tables = ["public.contacts"]
    [kafka]
    brokers = "127.0.0.1:9092"
"#;

#[test]
fn the_issue_example_is_valid() {
    let text = format!(
        r#"{BASE}
        [[sinks]]
        name = "hubspot-contacts"
        kind = "hubspot"
        table = "public.contacts"
        object = "contacts"
        id_property = "email"
        token_env = "HUBSPOT_TOKEN"
        base_url = "http://127.0.0.1:8081"
        on_delete = "archive"
        [sinks.fields]
        email = {{ property = "email", transform = "lowercase" }}
        first_name = "firstname"
        lifecycle = {{ property = "lifecyclestage", map = {{ lead = "lead", customer = "customer" }} }}
        "#
    );
    let c = parse(&text).unwrap().validate().unwrap();
    assert_eq!(c.sinks.len(), 1);
    let s = &c.sinks[0];
    assert_eq!(s.batch_max_events, 100);
    assert_eq!(s.fields.len(), 3);
    assert_eq!(s.fields[0].column, "email");
}

#[test]
fn zoho_two_way_needs_no_client_secret_and_defaults_public_url() {
    let zoho = |inbound: &str, ownership: &str| {
        format!(
            r#"{BASE}
        [[sinks]]
        name = "zoho-leads"
        kind = "zoho"
        table = "public.contacts"
        module = "Leads"
        id_property = "External_Id"
        token_env = "ZOHO_TOKEN"
        direction = "both"
        [sinks.inbound]
        listen = "0.0.0.0:8091"
        webhook_path = "/hooks/zoho"
        {inbound}
        [sinks.ownership]
        {ownership}
        [sinks.fields]
        id = "External_Id"
        email = "Email"
        "#
        )
    };
    let c = parse(&zoho("", r#"email = "zoho""#))
        .unwrap()
        .validate()
        .unwrap();
    let t = c.sinks[0].two_way.as_ref().unwrap();
    assert_eq!(t.client_secret, None);
    assert_eq!(
        t.public_url.as_deref(),
        Some("http://0.0.0.0:8091/hooks/zoho")
    );
    assert_eq!(t.owner("email"), Owner::Crm);
    assert_eq!(t.on_crm_delete, OnCrmDelete::Ignore, "the default");
    let c = parse(&zoho(
        "public_url = \"https://sync.example.com/hooks/zoho\"\non_crm_delete = \"delete\"",
        "",
    ))
    .unwrap()
    .validate()
    .unwrap();
    let t = c.sinks[0].two_way.as_ref().unwrap();
    assert_eq!(
        t.public_url.as_deref(),
        Some("https://sync.example.com/hooks/zoho")
    );
    assert_eq!(t.on_crm_delete, OnCrmDelete::Delete);
    let problems = parse(&zoho(
        "public_url = \"ftp://x\"\nclient_secret_env = \"S\"\non_crm_delete = \"archive\"",
        r#"email = "hubspot""#,
    ))
    .unwrap()
    .validate()
    .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sinks[0].inbound.client_secret_env",
            "sinks[0].inbound.public_url",
            "sinks[0].inbound.on_crm_delete",
            "sinks[0].ownership.email",
        ],
        "{problems:#?}"
    );
    // HubSpot still needs its client secret and has no public_url.
    let hubspot = format!(
        r#"{BASE}
        [[sinks]]
        name = "hs"
        kind = "hubspot"
        table = "public.contacts"
        object = "contacts"
        id_property = "email"
        token_env = "T"
        direction = "both"
        [sinks.inbound]
        public_url = "https://sync.example.com/hooks"
        [sinks.fields]
        email = "email"
        "#
    );
    let problems = parse(&hubspot).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sinks[0].inbound.client_secret_env",
            "sinks[0].inbound.public_url",
        ],
        "{problems:#?}"
    );
}

#[test]
fn every_sink_problem_has_its_path() {
    let text = format!(
        r#"{BASE}
        [[sinks]]
        name = "a"
        kind = "hubspot"
        table = "public.other"
        object = "tickets"
        batch_max_events = 500
        colour = 1
        [sinks.fields]
        email = {{ property = "email", transform = "shout" }}
        [[sinks]]
        name = "a"
        kind = "webhook"
        table = "public.contacts"
        url = "ftp://x"
        "#
    );
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sinks[0].colour",
            "sinks[0].table",
            "sinks[0].object",
            "sinks[0].id_property",
            "sinks[0].token_env",
            "sinks[0].batch_max_events",
            "sinks[0].fields.email.transform",
            "sinks[1].name",
            "sinks[1].url",
            "sinks[1].secret_env",
        ],
        "{problems:#?}"
    );
}

#[test]
fn oauth_is_an_alternative_to_token_env_with_default_token_urls() {
    use super::{Auth, HUBSPOT_TOKEN_URL, ZOHO_TOKEN_URL};
    use crate::config::SecretSource;
    let text = format!(
        r#"{BASE}
        [[sinks]]
        name = "zoho-leads"
        kind = "zoho"
        table = "public.contacts"
        module = "Leads"
        id_property = "Email"
        fields = {{ email = "Email" }}
        [sinks.oauth]
        client_id_env = "ZOHO_CLIENT_ID"
        client_secret_env = "ZOHO_CLIENT_SECRET"
        refresh_token_env = "ZOHO_REFRESH_TOKEN"
        [[sinks]]
        name = "hs"
        kind = "hubspot"
        table = "public.contacts"
        object = "contacts"
        id_property = "email"
        fields = {{ email = "email" }}
        [sinks.oauth]
        client_id_env = "HS_ID"
        client_secret_env = "HS_SECRET"
        refresh_token_env = "HS_REFRESH"
        [[sinks]]
        name = "zoho-eu"
        kind = "zoho"
        table = "public.contacts"
        module = "Leads"
        id_property = "Email"
        fields = {{ email = "Email" }}
        [sinks.oauth]
        client_id_env = "A"
        client_secret_env = "B"
        refresh_token_env = "C"
        token_url = "https://accounts.zoho.eu/oauth/v2/token"
        "#
    );
    let c = parse(&text).unwrap().validate().unwrap();
    let env = |n: &str| SecretSource::Env(n.into());
    assert_eq!(
        c.sinks[0].auth,
        Some(Auth::OAuth {
            client_id: env("ZOHO_CLIENT_ID"),
            client_secret: env("ZOHO_CLIENT_SECRET"),
            refresh_token: env("ZOHO_REFRESH_TOKEN"),
            token_url: ZOHO_TOKEN_URL.into(),
        })
    );
    assert!(
        matches!(&c.sinks[1].auth, Some(Auth::OAuth { token_url, .. }) if token_url == HUBSPOT_TOKEN_URL)
    );
    assert!(
        matches!(&c.sinks[2].auth, Some(Auth::OAuth { token_url, .. }) if token_url.contains("zoho.eu"))
    );
    assert_eq!(c.sinks[0].base_url, super::ZOHO_BASE_URL);
    // Debug output names variables only.
    assert!(format!("{:?}", c.sinks[0]).contains("ZOHO_REFRESH_TOKEN"));
}

#[test]
fn auth_problems_have_their_paths() {
    let text = format!(
        r#"{BASE}
        [[sinks]]
        name = "both"
        kind = "zoho"
        table = "public.contacts"
        module = "Leads"
        id_property = "Email"
        token_env = "T"
        fields = {{ email = "Email" }}
        [sinks.oauth]
        client_id_env = "A"
        client_secret_env = "B"
        refresh_token_env = "C"
        [[sinks]]
        name = "neither"
        kind = "zoho"
        table = "public.contacts"
        module = "Leads"
        id_property = "Email"
        fields = {{ email = "Email" }}
        [[sinks]]
        name = "broken"
        kind = "hubspot"
        table = "public.contacts"
        object = "contacts"
        id_property = "email"
        fields = {{ email = "email" }}
        [sinks.oauth]
        client_id_env = "not a name"
        refresh_token_env = "R"
        token_url = "ftp://x"
        scope = "x"
        [[sinks]]
        name = "hook"
        kind = "webhook"
        table = "public.contacts"
        url = "https://example.com/hook"
        secret_env = "S"
        [sinks.oauth]
        client_id_env = "A"
        "#
    );
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sinks[0].oauth",
            "sinks[1].token_env",
            "sinks[2].oauth.scope",
            "sinks[2].oauth.client_id_env",
            "sinks[2].oauth.client_secret_env",
            "sinks[2].oauth.token_url",
            "sinks[3].oauth",
        ],
        "{problems:#?}"
    );
    assert!(problems[1].message.contains("[sinks.oauth]"));
}

#[test]
fn webhook_defaults_and_options() {
    use super::{DEFAULT_WEBHOOK_TIMEOUT_MS, SinkKind, WebhookMode};
    let text = format!(
        r#"{BASE}
        [[sinks]]
        name = "hook"
        kind = "webhook"
        table = "public.contacts"
        url = "https://hooks.example.com/in"
        secret_env = "HOOK_SECRET"
        [[sinks]]
        name = "hook-single"
        kind = "webhook"
        table = "public.contacts"
        url = "http://127.0.0.1:9000/in"
        secret_env = "HOOK_SECRET"
        mode = "single"
        allow_private_destinations = true
        timeout_ms = 2500
        batch_max_events = 500
        "#
    );
    let c = parse(&text).unwrap().validate().unwrap();
    let SinkKind::Webhook {
        url,
        mode,
        allow_private_destinations,
        timeout_ms,
        ..
    } = &c.sinks[0].kind
    else {
        panic!("{:?}", c.sinks[0].kind);
    };
    assert_eq!(url, "https://hooks.example.com/in");
    assert_eq!(*mode, WebhookMode::Batch);
    assert!(
        !allow_private_destinations,
        "private destinations are refused by default"
    );
    assert_eq!(*timeout_ms, DEFAULT_WEBHOOK_TIMEOUT_MS);
    assert_eq!(c.sinks[0].batch_max_events, 100);
    let SinkKind::Webhook {
        mode,
        allow_private_destinations,
        timeout_ms,
        ..
    } = &c.sinks[1].kind
    else {
        panic!("{:?}", c.sinks[1].kind);
    };
    assert_eq!(*mode, WebhookMode::Single);
    assert!(allow_private_destinations);
    assert_eq!(*timeout_ms, 2500);
    assert_eq!(c.sinks[1].batch_max_events, 500);
}

#[test]
fn webhook_option_problems_have_their_paths() {
    let text = format!(
        r#"{BASE}
        [[sinks]]
        name = "hook"
        kind = "webhook"
        table = "public.contacts"
        url = "https://hooks.example.com/in"
        secret_env = "HOOK_SECRET"
        mode = "stream"
        timeout_ms = 0
        [[sinks]]
        name = "crm"
        kind = "hubspot"
        table = "public.contacts"
        object = "contacts"
        id_property = "email"
        token_env = "T"
        mode = "single"
        allow_private_destinations = true
        timeout_ms = 10
        [sinks.fields]
        email = "email"
        "#
    );
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sinks[0].mode",
            "sinks[0].timeout_ms",
            "sinks[1].mode",
            "sinks[1].allow_private_destinations",
            "sinks[1].timeout_ms",
        ],
        "{problems:#?}"
    );
    assert!(problems[2].message.contains("webhook"), "{problems:#?}");
}
