//! Rate limits against the real Redis: each tier's headers and 429s, the
//! client IP behind (and not behind) trusted proxies, and one limit for
//! several instances.

use std::time::{Duration, Instant};

use agentry::configuration::Settings;
use reqwest::Response;
use serde_json::{json, Value};

use crate::chat_support::{say, site, visitor_token, ORIGIN};
use crate::cluster::ServerProcess;
use crate::dispatch::eventually;
use crate::helpers::{
    assert_error, body, create_token, spawn_app, spawn_app_on, spawn_app_with, TestApp,
};

fn limits_on(settings: &mut Settings) {
    settings.rate_limits.enabled = true;
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn new_session(app: &TestApp, public_key: &str, forwarded_for: Option<&str>) -> Response {
    let mut request = app
        .client
        .post(app.url("/api/widget/session"))
        .header("origin", ORIGIN)
        .json(&json!({ "public_key": public_key }));
    if let Some(chain) = forwarded_for {
        request = request.header("x-forwarded-for", chain);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn widget_sessions_count_down_then_get_429_with_retry_after() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = 3;
    })
    .await;
    let site = site(&app, "Limited Co").await;
    for remaining in ["2", "1", "0"] {
        let response = new_session(&app, &site.public_key, None).await;
        assert_eq!(response.status(), 201);
        assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        assert!(header(&response, "x-ratelimit-reset").is_some());
    }
    let refused = new_session(&app, &site.public_key, None).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        header(&refused, "access-control-allow-origin").as_deref(),
        Some(ORIGIN),
        "the page can read why"
    );
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn a_forged_origin_flood_from_one_ip_stops_at_the_widget_tier() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = 5;
    })
    .await;
    let site = site(&app, "Flooded Co").await;
    let mut created = 0;
    for _ in 0..40 {
        if new_session(&app, &site.public_key, None).await.status() == 201 {
            created += 1;
        }
    }
    assert_eq!(
        created, 5,
        "the page's Origin is forged easily; the IP is not"
    );
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = 2;
    })
    .await;
    let spoofed = site(&app, "Spoofed Co").await;
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|n| {
        let chain = format!("203.0.113.{n}");
        let (app, key) = (&app, spoofed.public_key.clone());
        async move { new_session(app, &key, Some(&chain)).await.status().as_u16() }
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );

    // Behind a trusted proxy, the forwarded client is what counts.
    let proxied = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = 2;
        settings.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let behind_proxy = site(&proxied, "Proxied Co").await;
    for n in 0..4 {
        let chain = format!("203.0.113.{n}");
        let response = new_session(&proxied, &behind_proxy.public_key, Some(&chain)).await;
        assert_eq!(response.status(), 201, "client {chain} has its own budget");
    }
}

#[tokio::test]
async fn chat_turns_are_limited_per_session_and_per_client_ip_and_widget() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.chat = 2;
        // Every message counts against both tiers, refused or not.
        settings.rate_limits.widget_messages = 4;
    })
    .await;
    let site = site(&app, "Chatty Co").await;
    let first = visitor_token(&app, &site.public_key).await;
    let statuses = [
        say(&app, &first, "hi").await.status().as_u16(),
        say(&app, &first, "hours?").await.status().as_u16(),
        say(&app, &first, "again").await.status().as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 429], "the session's chat tier");
    let second = visitor_token(&app, &site.public_key).await;
    let fresh = say(&app, &second, "hello").await;
    assert_eq!(fresh.status(), 200, "another session, its own chat budget");
    let over = say(&app, &second, "more").await;
    assert_eq!(
        over.status(),
        429,
        "but the client's widget budget (4) is spent"
    );
}

#[tokio::test]
async fn logins_are_limited_per_ip_even_with_the_right_password() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.auth = 3;
    })
    .await;
    let tenant = app.create_tenant("Login Co").await;
    // create_tenant logged in once already.
    let wrong = app.login(&tenant.email, "not-the-password").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        header(&wrong, "x-ratelimit-remaining"),
        None,
        "a refused login is an error: no allowance headers"
    );
    let right = app.login(&tenant.email, &tenant.password).await;
    assert_eq!(right.status(), 200);
    assert_eq!(
        header(&right, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let locked = app.login(&tenant.email, &tenant.password).await;
    assert_eq!(locked.status(), 429);
}

#[tokio::test]
async fn three_instances_on_one_redis_admit_exactly_the_limit_between_them() {
    const LIMIT: u32 = 60;
    let configure = |settings: &mut Settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = LIMIT;
    };
    let first = spawn_app_with(configure).await;
    let prefix = first.settings.redis.prefix.clone();
    let share = |settings: &mut Settings| {
        configure(settings);
        settings.redis.prefix = prefix.clone();
    };
    let second = spawn_app_on(&first.database, share, false).await;
    let third = spawn_app_on(&first.database, share, false).await;
    let site = site(&first, "Cluster Co").await;
    let apps = [&first, &second, &third];
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::future::join_all((0..600).map(|n| {
        let (app, key) = (apps[n % 3], site.public_key.clone());
        async move { new_session(app, &key, None).await.status().as_u16() }
    }))
    .await;
    let took = started.elapsed();
    let admitted = statuses.iter().filter(|s| **s == 201).count() as u64;
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    // GCRA gives back one request a second: the limit, plus one per whole
    // second the burst took (none when it is quicker than a second).
    let refilled = took.as_secs();
    assert!(
        (u64::from(LIMIT)..=u64::from(LIMIT) + refilled).contains(&admitted),
        "{admitted} admitted in {took:?}"
    );
    if refilled == 0 {
        assert_eq!(admitted, u64::from(LIMIT));
    }
}

#[tokio::test]
async fn the_highest_limit_still_decides_in_redis() {
    // One request a microsecond: the finest rate the script keeps.
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = agentry::rate_limit::MAX_PER_MINUTE;
    })
    .await;
    let site = site(&app, "Raised Co").await;
    for _ in 0..3 {
        let response = new_session(&app, &site.public_key, None).await;
        assert_eq!(response.status(), 201);
        let remaining: u64 = header(&response, "x-ratelimit-remaining")
            .unwrap()
            .parse()
            .unwrap();
        assert!(remaining > 59_000_000, "{remaining}");
    }
}

#[tokio::test]
async fn a_login_flood_queues_briefly_for_a_password_check_then_gets_503() {
    let app = spawn_app_with(|settings| {
        settings.auth.max_concurrent_hashes = 1;
        settings.auth.hash_queue_timeout_ms = 10;
    })
    .await;
    let tenant = app.create_tenant("Flooded Login Co").await;
    let logins =
        futures_util::future::join_all((0..16).map(|_| app.login(&tenant.email, &tenant.password)))
            .await;
    let mut admitted = 0;
    let mut refused = 0;
    for response in logins {
        match response.status().as_u16() {
            200 => admitted += 1,
            503 => {
                assert_eq!(header(&response, "retry-after").as_deref(), Some("1"));
                refused += 1;
            }
            other => panic!("a login answered {other}"),
        }
    }
    assert!(admitted >= 1, "the slot kept working");
    assert!(refused >= 1, "the rest did not all wait for it");
}

#[tokio::test]
async fn uploads_are_limited_per_tenant() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.upload = 2;
    })
    .await;
    let site = site(&app, "Uploads Co").await;
    let path = format!("/api/v1/agents/{}/documents", site.agent_id);
    let upload = |title: &'static str| {
        app.client
            .post(app.url(&path))
            .bearer_auth(&site.tenant.token)
            .json(&json!({ "title": title, "content": "Open 9 to 5." }))
            .send()
    };
    let first = upload("One").await.unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(
        header(&first, "x-ratelimit-remaining").as_deref(),
        Some("1")
    );
    assert_eq!(upload("Two").await.unwrap().status(), 201);
    assert_eq!(upload("Three").await.unwrap().status(), 429);
    let other = crate::chat_support::site(&app, "Other Uploads Co").await;
    let theirs = app
        .post_json(
            &format!("/api/v1/agents/{}/documents", other.agent_id),
            Some(&other.tenant.token),
            &json!({ "title": "Mine", "content": "Closed on Sundays." }),
        )
        .await;
    assert_eq!(theirs.status(), 201, "another tenant, its own budget");
}

#[tokio::test]
async fn three_server_processes_on_one_redis_admit_exactly_the_limit_between_them() {
    const LIMIT: u32 = 60;
    let app = spawn_app().await;
    let site = site(&app, "Processes Co").await;
    let limit = LIMIT.to_string();
    let servers: Vec<(ServerProcess, String)> = (0..3)
        .map(|_| {
            ServerProcess::start_listening(
                &app,
                &[
                    ("AGENTRY__RATE_LIMITS__ENABLED", "true"),
                    ("AGENTRY__RATE_LIMITS__WIDGET_SESSIONS", limit.as_str()),
                ],
            )
        })
        .collect();
    let client = reqwest::Client::new();
    for (_, base) in &servers {
        eventually(
            Duration::from_secs(30),
            "the server process to be ready",
            || async {
                let ready = client.get(format!("{base}/readyz")).send().await;
                ready
                    .is_ok_and(|response| response.status() == 200)
                    .then_some(())
            },
        )
        .await;
    }

    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::future::join_all((0..600).map(|n| {
        let request = client
            .post(format!("{}/api/widget/session", servers[n % 3].1))
            .header("origin", ORIGIN)
            .json(&json!({ "public_key": site.public_key }));
        async move { request.send().await.unwrap().status().as_u16() }
    }))
    .await;
    let took = started.elapsed();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    let admitted = statuses.iter().filter(|s| **s == 201).count() as u64;
    // As in-process: the limit, plus the one a second GCRA gives back.
    let refilled = took.as_secs();
    assert!(
        (u64::from(LIMIT)..=u64::from(LIMIT) + refilled).contains(&admitted),
        "{admitted} admitted in {took:?}"
    );
    if refilled == 0 {
        assert_eq!(admitted, u64::from(LIMIT));
    }
    for (n, (_, base)) in servers.iter().enumerate() {
        let served = statuses
            .iter()
            .skip(n)
            .step_by(3)
            .filter(|s| **s == 201)
            .count();
        assert!(served > 0, "{base} admitted none: the load was not shared");
    }
}

async fn set_overrides(app: &TestApp, operator: &str, tenant: &str, overrides: Value) -> Response {
    app.client
        .put(app.url(&format!("/api/v1/admin/tenants/{tenant}/rate-limits")))
        .bearer_auth(operator)
        .json(&json!({ "overrides": overrides }))
        .send()
        .await
        .unwrap()
}

/// Admits sessions of `public_key` until the first 429; how many got in.
async fn sessions_until_refused(app: &TestApp, public_key: &str, at_most: usize) -> usize {
    for admitted in 0..at_most {
        let status = new_session(app, public_key, None).await.status();
        if status == 429 {
            return admitted;
        }
        assert_eq!(status, 201);
    }
    at_most
}

#[tokio::test]
async fn an_operator_raises_one_tenants_tier_on_every_instance_and_the_others_keep_the_default() {
    let configure = |settings: &mut Settings| {
        limits_on(settings);
        settings.rate_limits.widget_sessions = 2;
        settings.rate_limits.admin = 1_000;
        settings.rate_limits.overrides_refresh_secs = 1;
    };
    let first = spawn_app_with(configure).await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        &first.database,
        |settings| {
            configure(settings);
            settings.redis.prefix = prefix.clone();
        },
        false,
    )
    .await;
    let raised = site(&first, "Raised Co").await;
    let plain = site(&first, "Plain Co").await;
    let operator = first.operator_token().await;
    let tenant = raised.tenant.id.to_string();

    let set = set_overrides(&first, &operator, &tenant, json!({ "widget_sessions": 5 })).await;
    assert_eq!(set.status(), 200);
    let shown = body(
        first
            .get(
                &format!("/api/v1/admin/tenants/{tenant}/rate-limits"),
                &operator,
            )
            .await,
    )
    .await;
    assert_eq!(shown["overrides"], json!({ "widget_sessions": 5 }));
    assert_eq!(shown["effective"]["widget_sessions"], 5);
    assert_eq!(shown["effective"]["chat"], first.settings.rate_limits.chat);
    assert!(shown["effective"].get("auth").is_none(), "{shown}");

    // At once here; the other instance within its refresh interval.
    assert_eq!(
        sessions_until_refused(&first, &raised.public_key, 10).await,
        5
    );
    assert_eq!(
        sessions_until_refused(&first, &plain.public_key, 10).await,
        2
    );
    let later = first
        .create_widget(&raised.tenant.token, &raised.agent_id)
        .await;
    let later_key = later["public_key"].as_str().unwrap();
    assert_eq!(
        sessions_until_refused(&first, later_key, 10).await,
        5,
        "a widget made after the override counts at it at once"
    );
    let fresh = site(&first, "Fresh Co").await;
    let moved = set_overrides(
        &first,
        &operator,
        &fresh.tenant.id.to_string(),
        json!({ "widget_sessions": 4 }),
    )
    .await;
    assert_eq!(moved.status(), 200);
    eventually(
        Duration::from_secs(5),
        "the second instance's refresh",
        || async {
            second
                .state
                .limiter
                .overrides()
                .tenant_of_widget_key(&fresh.public_key)
        },
    )
    .await;
    assert_eq!(
        sessions_until_refused(&second, &fresh.public_key, 10).await,
        4
    );

    // An empty set restores the defaults.
    let cleared = set_overrides(&first, &operator, &tenant, json!({})).await;
    assert_eq!(body(cleared).await["effective"]["widget_sessions"], 2);

    for (overrides, field) in [
        (json!({ "auth": 100 }), "overrides.auth"),
        (json!({ "chats": 100 }), "overrides.chats"),
        (json!({ "chat": 0 }), "overrides.chat"),
        (json!({ "chat": 60_000_001 }), "overrides.chat"),
    ] {
        let refused = set_overrides(&first, &operator, &tenant, overrides).await;
        let error = assert_error(refused, 422, "invalid").await;
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field),
            "{error}"
        );
    }
    let nobody = set_overrides(
        &first,
        &operator,
        &uuid::Uuid::new_v4().to_string(),
        json!({ "chat": 100 }),
    )
    .await;
    assert_eq!(nobody.status(), 404);
    let tenant_user = set_overrides(
        &first,
        &raised.tenant.token,
        &tenant,
        json!({ "chat": 100 }),
    )
    .await;
    assert_eq!(tenant_user.status(), 401, "a tenant cannot raise itself");
}

#[tokio::test]
async fn the_dashboard_api_counts_per_tenant_and_tokens_and_operators_have_their_own_tiers() {
    let app = spawn_app_with(|settings| {
        limits_on(settings);
        settings.rate_limits.standard = 3;
        settings.rate_limits.api_tokens = 2;
        settings.rate_limits.admin = 4;
    })
    .await;
    let tenant = app.create_tenant("Standard Co").await;
    let other = app.create_tenant("Other Standard Co").await;
    // One request of the three created the token below.
    let (_, token) = create_token(&app, &tenant.token, &["leads:read"]).await;
    for remaining in ["1", "0"] {
        let response = app.get("/api/v1/agents", &tenant.token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let refused = app.get("/api/v1/leads", &tenant.token).await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(app.get("/api/v1/agents", &other.token).await.status(), 200);

    // The tenant's token is throttled on its own, with headers on success too.
    let automated = app.get("/api/v1/leads", &token).await;
    assert_eq!(automated.status(), 200);
    assert_eq!(
        header(&automated, "x-ratelimit-limit").as_deref(),
        Some("2")
    );
    assert_eq!(app.get("/api/v1/leads", &token).await.status(), 200);
    assert_eq!(app.get("/api/v1/leads", &token).await.status(), 429);

    // The operator realm: its login and its API share one tier per client IP.
    let operator = app.operator_token().await;
    let listed = app.get("/api/v1/admin/tenants", &operator).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(header(&listed, "x-ratelimit-limit").as_deref(), Some("4"));
    assert_eq!(
        app.get("/api/v1/admin/tenants", &operator).await.status(),
        200
    );
    assert_eq!(
        app.get("/api/v1/admin/tenants", &operator).await.status(),
        200
    );
    assert_eq!(
        app.get("/api/v1/admin/tenants", &operator).await.status(),
        429
    );
}
