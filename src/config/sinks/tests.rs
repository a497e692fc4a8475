//! Unit tests of the parent module and of the two-way settings it validates. Fixtures are a
//! valid base config ([`BASE`]) followed by sinks built by [`sink`] and its per-kind helpers,
//! so that each test states only what it is about.

use super::super::two_way::{OnCrmDelete, Owner};
use super::super::{Problem, SecretSource, ValidConfig, parse};
use super::{
    Auth, DEFAULT_WEBHOOK_TIMEOUT_MS, HUBSPOT_TOKEN_URL, SinkKind, WebhookMode, ZOHO_BASE_URL,
    ZOHO_TOKEN_URL,
};

const BASE: &str = r#"
    [source]
    url_env = "U"
    slot = "s"
    publication = "p"
    tables = ["public.contacts"]
    [kafka]
    brokers = "127.0.0.1:9092"
    [audit]
    key_env = "AUDIT_KEY"
"#;

/// A `[[sinks]]` table named `name`, of `kind`, reading `public.contacts`, then `lines`.
fn sink(name: &str, kind: &str, lines: &str) -> String {
    format!("[[sinks]]\nname = {name:?}\nkind = {kind:?}\ntable = \"public.contacts\"\n{lines}\n")
}

/// A HubSpot contacts sink upserting by `email`; `lines` add its auth, fields and options.
fn hubspot(name: &str, lines: &str) -> String {
    sink(
        name,
        "hubspot",
        &format!("object = \"contacts\"\nid_property = \"email\"\n{lines}"),
    )
}

/// A Zoho Leads sink upserting by `Email`; `lines` add its auth, fields and options.
fn zoho(name: &str, lines: &str) -> String {
    sink(
        name,
        "zoho",
        &format!("module = \"Leads\"\nid_property = \"Email\"\n{lines}"),
    )
}

/// A webhook sink posting to `url`, signed with `HOOK_SECRET`; `lines` add its options.
fn webhook(name: &str, url: &str, lines: &str) -> String {
    sink(
        name,
        "webhook",
        &format!("url = {url:?}\nsecret_env = \"HOOK_SECRET\"\n{lines}"),
    )
}

/// `[sinks.oauth]` naming the three secret variables (it must end the sink's keys).
fn oauth(client_id: &str, client_secret: &str, refresh_token: &str) -> String {
    format!(
        "[sinks.oauth]\nclient_id_env = {client_id:?}\nclient_secret_env = {client_secret:?}\n\
         refresh_token_env = {refresh_token:?}\n"
    )
}

/// [`BASE`] with `sinks`, validated; panics with the problems if any.
fn valid(sinks: &[String]) -> ValidConfig {
    let text = format!("{BASE}{}", sinks.concat());
    parse(&text).unwrap().validate().unwrap()
}

/// The problems of [`BASE`] with `sinks`, after asserting their paths are `expected`, in order.
fn problems_at(sinks: &[String], expected: &[&str]) -> Vec<Problem> {
    let text = format!("{BASE}{}", sinks.concat());
    let problems = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, expected, "{problems:#?}");
    problems
}

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
    let two_way = |inbound: &str, ownership: &str| {
        zoho(
            "zoho-leads",
            &format!(
                "token_env = \"ZOHO_TOKEN\"\ndirection = \"both\"\n[sinks.inbound]\n\
                 listen = \"127.0.0.1:8091\"\nwebhook_path = \"/hooks/zoho\"\n{inbound}\n\
                 [sinks.ownership]\n{ownership}\n\
                 [sinks.fields]\nid = \"External_Id\"\nemail = \"Email\"\n"
            ),
        )
    };
    let c = valid(&[two_way("", r#"email = "zoho""#)]);
    let t = c.sinks[0].two_way.as_ref().unwrap();
    assert_eq!(t.client_secret, None);
    assert_eq!(
        t.public_url.as_deref(),
        Some("http://127.0.0.1:8091/hooks/zoho")
    );
    assert_eq!(t.owner("email"), Owner::Crm);
    assert_eq!(t.on_crm_delete, OnCrmDelete::Ignore, "the default");
    let c = valid(&[two_way(
        "public_url = \"https://sync.example.com/hooks/zoho\"\non_crm_delete = \"delete\"",
        "",
    )]);
    let t = c.sinks[0].two_way.as_ref().unwrap();
    assert_eq!(
        t.public_url.as_deref(),
        Some("https://sync.example.com/hooks/zoho")
    );
    assert_eq!(t.on_crm_delete, OnCrmDelete::Delete);
    problems_at(
        &[two_way(
            "public_url = \"ftp://x\"\nclient_secret_env = \"S\"\non_crm_delete = \"archive\"",
            r#"email = "hubspot""#,
        )],
        &[
            "sinks[0].inbound.client_secret_env",
            "sinks[0].inbound.public_url",
            "sinks[0].inbound.on_crm_delete",
            "sinks[0].ownership.email",
        ],
    );
    // HubSpot: a public_url (behind a proxy) is what its signatures cover; no default.
    let hs = |inbound: &str| {
        hubspot(
            "hs",
            &format!(
                "token_env = \"T\"\ndirection = \"both\"\n[sinks.inbound]\n\
                 client_secret_env = \"S\"\n{inbound}\n[sinks.fields]\nemail = \"email\""
            ),
        )
    };
    let c = valid(&[hs(
        "public_url = \"https://sync.example.com/hooks/hubspot\"",
    )]);
    let t = c.sinks[0].two_way.as_ref().unwrap();
    assert_eq!(
        t.public_url.as_deref(),
        Some("https://sync.example.com/hooks/hubspot")
    );
    assert_eq!(
        valid(&[hs("")]).sinks[0]
            .two_way
            .as_ref()
            .unwrap()
            .public_url,
        None
    );
    // HubSpot still needs its client secret; its public_url (behind a proxy) is checked too.
    problems_at(
        &[hubspot(
            "hs",
            "token_env = \"T\"\ndirection = \"both\"\n[sinks.inbound]\n\
             public_url = \"ftp://x\"\n[sinks.fields]\nemail = \"email\"",
        )],
        &[
            "sinks[0].inbound.client_secret_env",
            "sinks[0].inbound.public_url",
        ],
    );
}

#[test]
fn every_sink_problem_has_its_path() {
    let bad_hubspot = r#"
        [[sinks]]
        name = "a"
        kind = "hubspot"
        table = "public.other"
        object = "tickets"
        batch_max_events = 500
        colour = 1
        [sinks.fields]
        email = { property = "email", transform = "shout" }
        "#;
    problems_at(
        &[
            bad_hubspot.to_string(),
            sink("a", "webhook", "url = \"ftp://x\""),
        ],
        &[
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
    );
}

#[test]
fn oauth_is_an_alternative_to_token_env_with_default_token_urls() {
    let c = valid(&[
        zoho(
            "zoho-leads",
            &format!(
                "fields = {{ email = \"Email\" }}\n{}",
                oauth("ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN")
            ),
        ),
        hubspot(
            "hs",
            &format!(
                "fields = {{ email = \"email\" }}\n{}",
                oauth("HS_ID", "HS_SECRET", "HS_REFRESH")
            ),
        ),
        zoho(
            "zoho-eu",
            &format!(
                "fields = {{ email = \"Email\" }}\n{}\
                 token_url = \"https://accounts.zoho.eu/oauth/v2/token\"",
                oauth("A", "B", "C")
            ),
        ),
    ]);
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
    assert_eq!(c.sinks[0].base_url, ZOHO_BASE_URL);
    // Debug output names variables only.
    assert!(format!("{:?}", c.sinks[0]).contains("ZOHO_REFRESH_TOKEN"));
}

#[test]
fn auth_problems_have_their_paths() {
    let problems = problems_at(
        &[
            zoho(
                "both",
                &format!(
                    "token_env = \"T\"\nfields = {{ email = \"Email\" }}\n{}",
                    oauth("A", "B", "C")
                ),
            ),
            zoho("neither", "fields = { email = \"Email\" }"),
            hubspot(
                "broken",
                "fields = { email = \"email\" }\n[sinks.oauth]\nclient_id_env = \"not a name\"\n\
                 refresh_token_env = \"R\"\ntoken_url = \"ftp://x\"\nscope = \"x\"",
            ),
            webhook(
                "hook",
                "https://example.com/hook",
                "[sinks.oauth]\nclient_id_env = \"A\"",
            ),
        ],
        &[
            "sinks[0].oauth",
            "sinks[1].token_env",
            "sinks[2].oauth.scope",
            "sinks[2].oauth.client_id_env",
            "sinks[2].oauth.client_secret_env",
            "sinks[2].oauth.token_url",
            "sinks[3].oauth",
        ],
    );
    assert!(problems[1].message.contains("[sinks.oauth]"));
}

#[test]
fn webhook_defaults_and_options() {
    let c = valid(&[
        webhook("hook", "https://hooks.example.com/in", ""),
        webhook(
            "hook-single",
            "http://127.0.0.1:9000/in",
            "mode = \"single\"\nallow_private_destinations = true\ntimeout_ms = 2500\n\
             batch_max_events = 500",
        ),
    ]);
    let secret = SecretSource::Env("HOOK_SECRET".into());
    assert_eq!(
        c.sinks[0].kind,
        SinkKind::Webhook {
            url: "https://hooks.example.com/in".into(),
            secret: secret.clone(),
            mode: WebhookMode::Batch,
            allow_private_destinations: false,
            timeout_ms: DEFAULT_WEBHOOK_TIMEOUT_MS,
        },
        "defaults: batched, private destinations refused"
    );
    assert_eq!(c.sinks[0].batch_max_events, 100);
    assert_eq!(
        c.sinks[1].kind,
        SinkKind::Webhook {
            url: "http://127.0.0.1:9000/in".into(),
            secret,
            mode: WebhookMode::Single,
            allow_private_destinations: true,
            timeout_ms: 2500,
        }
    );
    assert_eq!(c.sinks[1].batch_max_events, 500);
}

#[test]
fn webhook_option_problems_have_their_paths() {
    let problems = problems_at(
        &[
            webhook(
                "hook",
                "https://hooks.example.com/in",
                "mode = \"stream\"\ntimeout_ms = 0",
            ),
            hubspot(
                "crm",
                "token_env = \"T\"\nmode = \"single\"\nallow_private_destinations = true\n\
                 timeout_ms = 10\n[sinks.fields]\nemail = \"email\"",
            ),
        ],
        &[
            "sinks[0].mode",
            "sinks[0].timeout_ms",
            "sinks[1].mode",
            "sinks[1].allow_private_destinations",
            "sinks[1].timeout_ms",
        ],
    );
    assert!(problems[2].message.contains("webhook"), "{problems:#?}");
}

#[test]
fn verify_every_is_a_schedule_of_one_way_crm_sinks() {
    let c = valid(&[hubspot(
        "crm",
        "token_env = \"T\"\nverify_every = \"every 6h\"\n[sinks.fields]\nemail = \"email\"\n",
    )]);
    assert_eq!(
        c.sinks[0].verify_every,
        Some(crate::config::schedule::Schedule::parse("every 6h").unwrap())
    );
    problems_at(
        &[
            hubspot(
                "bad",
                "token_env = \"T\"\nverify_every = \"sometimes\"\n[sinks.fields]\nemail = \"email\"\n",
            ),
            webhook(
                "hook",
                "https://x.example/h",
                "verify_every = \"every 1h\"\n",
            ),
        ],
        &["sinks[0].verify_every", "sinks[1].verify_every"],
    );
}

#[test]
fn a_hubspot_contacts_email_is_sent_in_the_form_hubspot_stores() {
    use super::super::fields::Transform;
    let fields = |email: &str| format!("token_env = \"T\"\n[sinks.fields]\nemail = {email}\n");
    let c = valid(&[
        hubspot("plain", &fields("\"email\"")),
        hubspot(
            "trimmed",
            &fields("{ property = \"email\", transform = \"trim\" }"),
        ),
        zoho("zoho", &fields("\"Email\"")),
    ]);
    let transform = |i: usize| c.sinks[i].fields[0].transform;
    assert_eq!(transform(0), Some(Transform::EmailAddress));
    assert_eq!(transform(1), Some(Transform::EmailAddress));
    assert_eq!(transform(2), None, "only HubSpot");
    assert_eq!(
        Transform::EmailAddress.apply(" Ana@Example.COM "),
        "ana@example.com"
    );
    let shout = hubspot(
        "shout",
        &fields("{ property = \"email\", transform = \"uppercase\" }"),
    );
    let problems = problems_at(&[shout], &["sinks[0].fields.email.transform"]);
    assert!(problems[0].message.contains("lowercased"), "{problems:?}");
}

#[test]
fn two_way_start_up_traps_are_refused_with_their_paths() {
    // A two-way HubSpot sink: `lines` go to [sinks.inbound], `fields` to [sinks.fields].
    let both = |name: &str, inbound: &str, fields: &str| {
        hubspot(
            name,
            &format!(
                "token_env = \"T\"\ndirection = \"both\"\n[sinks.inbound]\n\
                 client_secret_env = \"S\"\n{inbound}\n[sinks.fields]\n{fields}\n"
            ),
        )
    };
    let c = valid(&[both("a", "", "email = \"email\"")]);
    let t = c.sinks[0].two_way.as_ref().unwrap();
    assert!(
        !t.initial_import,
        "the default: reconcile from the first start on"
    );
    let c = valid(&[both("a", "initial_import = true", "email = \"email\"")]);
    assert!(c.sinks[0].two_way.as_ref().unwrap().initial_import);
    // id_property mapped from no column; an initial import without reconciliation.
    let problems = problems_at(
        &[both(
            "a",
            "initial_import = true\nreconcile_every = \"off\"",
            "first_name = \"firstname\"",
        )],
        &["sinks[0].inbound.initial_import", "sinks[0].fields"],
    );
    assert!(problems[1].message.contains("\"email\""), "{problems:?}");
    // Two two-way sinks whose names give one replication origin: the later names the earlier.
    let problems = problems_at(
        &[
            both("a-b", "listen = \"127.0.0.1:1\"", "email = \"email\""),
            both("a_b", "listen = \"127.0.0.1:2\"", "email = \"email\""),
        ],
        &["sinks[1].name"],
    );
    assert!(
        problems[0].message.contains("sinks[0].name \"a-b\"")
            && problems[0].message.contains("driftless_a_b"),
        "{problems:?}"
    );
    // One-way sinks write under no origin: the same names are fine there.
    valid(&[
        hubspot(
            "a-b",
            "token_env = \"T\"\n[sinks.fields]\nemail = \"email\"",
        ),
        both("a_b", "", "email = \"email\""),
    ]);
}

#[test]
fn crm_token_and_webhook_urls_must_be_https_unless_loopback() {
    let crm = |kind: &str, base_url: &str, token_url: &str| {
        let auth = format!("{}token_url = {token_url:?}\n", oauth("I", "S", "R"));
        let lines = format!("base_url = {base_url:?}\n{auth}[sinks.fields]\nemail = \"email\"");
        if kind == "hubspot" {
            hubspot("crm", &lines)
        } else {
            zoho("crm", &lines)
        }
    };
    // Loopback (the emulators) may be plain http; everything else must be https.
    for url in [
        "https://api.example.com",
        "http://127.0.0.1:8081",
        "http://127.9.9.9",
        "http://[::1]:8081",
        "http://localhost:8081",
    ] {
        let token_url = format!("{url}/oauth/token");
        valid(&[crm("hubspot", url, &token_url), webhook("hook", url, "")]);
        valid(&[crm("zoho", url, &token_url)]);
    }
    let problems = problems_at(
        &[
            crm("hubspot", "http://api.example.com", "http://10.0.0.1/token"),
            crm(
                "zoho",
                "http://192.168.1.2",
                "https://accounts.zoho.eu/oauth/v2/token",
            ),
            webhook("hook", "http://hooks.example.com/in", ""),
            webhook("hook2", "http://0.0.0.0:9000/in", ""),
        ],
        &[
            "sinks[0].oauth.token_url",
            "sinks[0].base_url",
            "sinks[1].name",
            "sinks[1].base_url",
            "sinks[2].url",
            "sinks[3].url",
        ],
    );
    assert!(
        problems[1].message.contains("must be https"),
        "{problems:#?}"
    );
}

#[test]
fn a_crm_webhook_public_url_must_be_https_unless_loopback() {
    let two_way = |listen: &str, inbound: &str| {
        zoho(
            "zoho-leads",
            &format!(
                "token_env = \"ZOHO_TOKEN\"\ndirection = \"both\"\n[sinks.inbound]\n\
                 listen = {listen:?}\nwebhook_path = \"/hooks/zoho\"\n{inbound}\n\
                 [sinks.fields]\nid = \"External_Id\"\nemail = \"Email\"\n"
            ),
        )
    };
    valid(&[two_way(
        "0.0.0.0:8091",
        "public_url = \"https://sync.example.com/hooks/zoho\"",
    )]);
    let problems = problems_at(
        &[two_way("0.0.0.0:8091", "")],
        &["sinks[0].inbound.public_url"],
    );
    assert!(
        problems[0].message.contains("the default, from listen"),
        "{problems:#?}"
    );
    problems_at(
        &[two_way(
            "127.0.0.1:8091",
            "public_url = \"http://sync.example.com/hooks/zoho\"",
        )],
        &["sinks[0].inbound.public_url"],
    );
    // A user and password in it: refused, and not echoed.
    let problems = problems_at(
        &[two_way(
            "0.0.0.0:8091",
            "public_url = \"https://u:hunter2@sync.example.com/hooks/zoho\"",
        )],
        &["sinks[0].inbound.public_url"],
    );
    assert!(
        problems[0].message.contains("user name or password")
            && !problems[0].message.contains("hunter2"),
        "{problems:#?}"
    );
}
