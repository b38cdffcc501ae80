//! API tokens: shown once and stored as a hash, scoped, expiring, revoked on
//! every instance at once, and invisible to other tenants.

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{
    assert_error, body, create_token, set_tenant, spawn_app, spawn_app_on, TestApp,
};

async fn status_of(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> u16 {
    let mut request = app.request(method, path, Some(token));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_token_is_shown_once_and_only_its_hash_is_stored() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Hash Co").await;
    let response = app
        .post_json(
            "/api/v1/api-tokens",
            Some(&tenant.token),
            &json!({ "name": "zapier", "scopes": ["leads:read", "leads:write"], "lifetime_days": 30 }),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let created = body(response).await;
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("agt_") && token.len() == 47, "{token}");
    assert_eq!(created["scopes"], json!(["leads:read", "leads:write"]));
    let ttl = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        .signed_duration_since(chrono::Utc::now())
        .num_days();
    assert!((29..=30).contains(&ttl), "{ttl}");

    // The database holds the SHA-256 and nothing from which the token could be read.
    let mut owner = app.owner_connection().await;
    let (hash, row): (Vec<u8>, String) =
        sqlx::query_as("SELECT token_hash, row_to_json(t)::text FROM api_tokens t")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(hash, Sha256::digest(token.as_bytes()).to_vec());
    assert!(!row.contains(&token[4..20]), "{row}");

    // Lists show it masked, never the token or its hash.
    let listed = body(app.get("/api/v1/api-tokens", &tenant.token).await).await;
    let item = &listed["api_tokens"][0];
    assert_eq!(item["name"], "zapier");
    assert_eq!(item["status"], "active");
    assert_eq!(
        item["token_masked"],
        format!("agt_…{}", &token[token.len() - 4..])
    );
    assert!(
        item.get("token").is_none() && item.get("token_hash").is_none(),
        "{item}"
    );
    assert!(!listed.to_string().contains(&token[4..20]));
    assert!(item["last_used_at"].is_null());

    // A use is recorded (at most once a minute).
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", &token, None).await,
        200
    );
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", &token, None).await,
        200
    );
    let listed = body(app.get("/api/v1/api-tokens", &tenant.token).await).await;
    assert!(
        listed["api_tokens"][0]["last_used_at"].is_string(),
        "{listed}"
    );
}

#[tokio::test]
async fn scopes_are_enforced_and_name_what_is_missing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Scope Co").await;
    let agent = app.create_agent(&tenant.token, "Scoped").await;
    let agent_id = agent["id"].as_str().unwrap();
    let (_, reader) = create_token(&app, &tenant.token, &["leads:read"]).await;
    let (_, writer) = create_token(
        &app,
        &tenant.token,
        &[
            "leads:write",
            "leads:read",
            "knowledge:write",
            "webhooks:read",
            "conversations:read",
        ],
    )
    .await;

    let lead = json!({ "email": "ana@example.com" });
    let refused = assert_error(
        app.post_json("/api/v1/leads", Some(&reader), &lead).await,
        403,
        "insufficient_scope",
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("leads:write"),
        "{refused}"
    );
    let created = app.post_json("/api/v1/leads", Some(&writer), &lead).await;
    assert_eq!(created.status(), 201);
    let lead_id = body(created).await["id"].as_str().unwrap().to_owned();

    // The read token reads leads, and nothing else.
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", &reader, None).await,
        200
    );
    assert_eq!(
        status_of(
            &app,
            Method::GET,
            &format!("/api/v1/leads/{lead_id}"),
            &reader,
            None
        )
        .await,
        200
    );
    let patch = Some(json!({ "notes": "called back" }));
    assert_eq!(
        status_of(
            &app,
            Method::PATCH,
            &format!("/api/v1/leads/{lead_id}"),
            &reader,
            patch.clone()
        )
        .await,
        403
    );
    assert_eq!(
        status_of(
            &app,
            Method::PATCH,
            &format!("/api/v1/leads/{lead_id}"),
            &writer,
            patch
        )
        .await,
        200
    );
    for (path, scope) in [
        ("/api/v1/conversations", "conversations:read"),
        ("/api/v1/webhook-deliveries", "webhooks:read"),
    ] {
        let refused = assert_error(app.get(path, &reader).await, 403, "insufficient_scope").await;
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains(scope),
            "{refused}"
        );
        assert_eq!(
            status_of(&app, Method::GET, path, &writer, None).await,
            200,
            "{path}"
        );
    }
    let document = json!({ "title": "Hours", "content": "Open 9 to 5." });
    let path = format!("/api/v1/agents/{agent_id}/documents");
    let refused = assert_error(
        app.post_json(&path, Some(&reader), &document).await,
        403,
        "insufficient_scope",
    )
    .await;
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("knowledge:write"));
    assert_eq!(
        app.post_json(&path, Some(&writer), &document)
            .await
            .status(),
        201
    );

    // Routes not opened to automation refuse every token, whatever its scopes.
    for (method, path) in [
        (Method::GET, "/api/v1/agents".to_owned()),
        (Method::GET, path.clone()),
        (Method::GET, "/api/v1/api-tokens".to_owned()),
        (Method::GET, "/api/v1/auth/me".to_owned()),
    ] {
        assert_error(
            app.request(method, &path, Some(&writer))
                .send()
                .await
                .unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    // A token cannot mint another.
    assert_error(
        app.post_json(
            "/api/v1/api-tokens",
            Some(&writer),
            &json!({ "name": "x", "scopes": ["leads:read"] }),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn bad_token_requests_get_422() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Invalid Co").await;
    for bad in [
        json!({ "name": "x", "scopes": ["leads:admin"] }),
        json!({ "name": "x", "scopes": [] }),
        json!({ "name": "", "scopes": ["leads:read"] }),
        json!({ "name": "x".repeat(101), "scopes": ["leads:read"] }),
        json!({ "name": "x", "scopes": ["leads:read"], "lifetime_days": 0 }),
        json!({ "name": "x", "scopes": ["leads:read"], "lifetime_days": 366 }),
        json!({ "name": "x", "scopes": ["leads:read"], "lifetime_days": -1 }),
        json!({ "name": "x", "scopes": "leads:read" }),
        json!({ "name": "x", "scopes": ["leads:read"], "owner": true }),
    ] {
        let response = app
            .post_json("/api/v1/api-tokens", Some(&tenant.token), &bad)
            .await;
        assert_error(response, 422, "invalid").await;
    }
    let unknown = assert_error(
        app.post_json(
            "/api/v1/api-tokens",
            Some(&tenant.token),
            &json!({ "name": "x", "scopes": ["leads:admin"] }),
        )
        .await,
        422,
        "invalid",
    )
    .await;
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("leads:admin"),
        "{unknown}"
    );
}

#[tokio::test]
async fn the_default_lifetime_comes_from_config_and_expired_tokens_are_refused() {
    let app = crate::helpers::spawn_app_with(|settings| settings.tokens.lifetime_days = 7).await;
    let tenant = app.create_tenant("Expiry Co").await;
    let response = app
        .post_json(
            "/api/v1/api-tokens",
            Some(&tenant.token),
            &json!({ "name": "x", "scopes": ["leads:read"] }),
        )
        .await;
    let created = body(response).await;
    let ttl = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        .signed_duration_since(chrono::Utc::now())
        .num_hours();
    assert!((7 * 24 - 1..=7 * 24).contains(&ttl), "{ttl}");
    let token = created["token"].as_str().unwrap();
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", token, None).await,
        200
    );

    let mut owner = app.owner_connection().await;
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second'")
        .execute(&mut owner)
        .await
        .unwrap();
    assert_error(app.get("/api/v1/leads", token).await, 401, "unauthorized").await;
    let listed = body(app.get("/api/v1/api-tokens", &tenant.token).await).await;
    assert_eq!(listed["api_tokens"][0]["status"], "expired");
}

#[tokio::test]
async fn a_revocation_is_seen_at_once_by_another_instance() {
    let first = spawn_app().await;
    let second = spawn_app_on(first.database_name(), |_| {}, false).await;
    let tenant = first.create_tenant("Revoke Co").await;
    let (id, token) = create_token(&first, &tenant.token, &["leads:read"]).await;
    assert_eq!(
        status_of(&second, Method::GET, "/api/v1/leads", &token, None).await,
        200
    );

    let response = first
        .delete(&format!("/api/v1/api-tokens/{id}"), &tenant.token)
        .await;
    assert_eq!(response.status(), 204);
    assert_error(
        second.get("/api/v1/leads", &token).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        first.get("/api/v1/leads", &token).await,
        401,
        "unauthorized",
    )
    .await;
    let listed = body(second.get("/api/v1/api-tokens", &tenant.token).await).await;
    assert_eq!(listed["api_tokens"][0]["status"], "revoked");
    assert!(listed["api_tokens"][0]["revoked_at"].is_string());
}

#[tokio::test]
async fn another_tenants_token_is_not_found() {
    let app = spawn_app().await;
    let mine = app.create_tenant("Mine Co").await;
    let theirs = app.create_tenant("Theirs Co").await;
    let (id, token) = create_token(&app, &theirs.token, &["leads:read", "leads:write"]).await;
    assert_error(
        app.delete(&format!("/api/v1/api-tokens/{id}"), &mine.token)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(
            &format!("/api/v1/api-tokens/{}", Uuid::now_v7()),
            &mine.token,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.delete("/api/v1/api-tokens/not-a-uuid", &mine.token)
            .await,
        404,
        "not_found",
    )
    .await;
    let listed = body(app.get("/api/v1/api-tokens", &mine.token).await).await;
    assert_eq!(listed["api_tokens"], json!([]));
    // Their token still works, on their data only.
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", &token, None).await,
        200
    );
    let lead = body(
        app.post_json(
            "/api/v1/leads",
            Some(&mine.token),
            &json!({ "email": "mine@example.com" }),
        )
        .await,
    )
    .await;
    let path = format!("/api/v1/leads/{}", lead["id"].as_str().unwrap());
    assert_error(app.get(&path, &token).await, 404, "not_found").await;
}

#[tokio::test]
async fn a_conversation_is_read_with_its_transcript() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Transcript Co").await;
    let other = app.create_tenant("Other Co").await;
    let agent = app.create_agent(&tenant.token, "Talker").await;
    let agent_id: Uuid = agent["id"].as_str().unwrap().parse().unwrap();
    let conversation = Uuid::now_v7();
    let mut conn = app.app_role_connection().await;
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    set_tenant(&mut tx, tenant.id).await;
    sqlx::query("INSERT INTO conversations (id, tenant_id, agent_id, channel) VALUES ($1, $2, $3, 'widget')")
        .bind(conversation)
        .bind(tenant.id.as_uuid())
        .bind(agent_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    for (seq, role, content) in [
        (0_i64, "visitor", "Are you open Sunday?"),
        (1, "assistant", "Yes, 10 to 4."),
    ] {
        sqlx::query("INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(Uuid::now_v7())
            .bind(tenant.id.as_uuid())
            .bind(conversation)
            .bind(seq)
            .bind(role)
            .bind(content)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let (_, token) = create_token(&app, &tenant.token, &["conversations:read"]).await;
    let path = format!("/api/v1/conversations/{conversation}");
    for caller in [&token, &tenant.token] {
        let response = app.get(&path, caller).await;
        assert_eq!(response.status(), 200);
        let json = body(response).await;
        assert_eq!(json["id"], conversation.to_string());
        assert_eq!(json["agent_id"], agent_id.to_string());
        let roles: Vec<&str> = json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["visitor", "assistant"]);
        assert_eq!(json["messages"][1]["content"], "Yes, 10 to 4.");
    }
    assert_error(app.get(&path, &other.token).await, 404, "not_found").await;
    let (_, leads_only) = create_token(&app, &tenant.token, &["leads:read"]).await;
    assert_error(app.get(&path, &leads_only).await, 403, "insufficient_scope").await;
}

#[tokio::test]
async fn last_use_is_written_at_most_once_a_minute() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Touch Co").await;
    let (_, token) = create_token(&app, &tenant.token, &["leads:read"]).await;
    let mut owner = app.owner_connection().await;
    assert_eq!(last_used(&mut owner).await, None);
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", &token, None).await,
        200
    );
    let first = last_used(&mut owner).await.expect("first use recorded");
    for _ in 0..3 {
        assert_eq!(
            status_of(&app, Method::GET, "/api/v1/leads", &token, None).await,
            200
        );
    }
    assert_eq!(
        last_used(&mut owner).await,
        Some(first),
        "no write within the minute"
    );
    sqlx::query("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes'")
        .execute(&mut owner)
        .await
        .unwrap();
    assert_eq!(
        status_of(&app, Method::GET, "/api/v1/leads", &token, None).await,
        200
    );
    let later = last_used(&mut owner).await.unwrap();
    assert!(later >= first, "{later} < {first}");
}

#[tokio::test]
async fn members_list_tokens_but_only_managers_create_and_revoke_them() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Member Co").await;
    let (id, _) = create_token(&app, &tenant.token, &["leads:read"]).await;
    let member = app.create_member(tenant.id).await;
    let listed = body(app.get("/api/v1/api-tokens", &member).await).await;
    assert_eq!(listed["api_tokens"].as_array().unwrap().len(), 1);
    assert_error(
        app.post_json(
            "/api/v1/api-tokens",
            Some(&member),
            &json!({ "name": "x", "scopes": ["leads:read"] }),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        app.delete(&format!("/api/v1/api-tokens/{id}"), &member)
            .await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn conversations_are_filtered_by_start_time() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Window Co").await;
    let agent = app.create_agent(&tenant.token, "Timed").await;
    let agent_id: Uuid = agent["id"].as_str().unwrap().parse().unwrap();
    let mut owner = app.owner_connection().await;
    for age in ["3 days", "1 hour"] {
        sqlx::query(&format!(
            "INSERT INTO conversations (id, tenant_id, agent_id, channel, started_at)
             VALUES ($1, $2, $3, 'widget', now() - interval '{age}')"
        ))
        .bind(Uuid::now_v7())
        .bind(tenant.id.as_uuid())
        .bind(agent_id)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    let (_, token) = create_token(&app, &tenant.token, &["conversations:read"]).await;
    let since = (chrono::Utc::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = body(
        app.get(
            &format!("/api/v1/conversations?started_after={since}"),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!(
        recent["conversations"].as_array().unwrap().len(),
        1,
        "{recent}"
    );
    let old = body(
        app.get(
            &format!("/api/v1/conversations?started_before={since}"),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!(old["conversations"].as_array().unwrap().len(), 1, "{old}");
    let response = app
        .get(
            &format!("/api/v1/conversations?started_after={since}&started_before={since}"),
            &token,
        )
        .await;
    assert_error(response, 400, "bad_request").await;
}

async fn last_used(conn: &mut sqlx::PgConnection) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT last_used_at FROM api_tokens")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_api_token_has_its_own_burst_throttle() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.rate_limits.enabled = true;
        settings.rate_limits.api_tokens = 2;
        settings.rate_limits.auth = 100;
    })
    .await;
    let tenant = app.create_tenant("Throttled Co").await;
    let (_, first) = create_token(&app, &tenant.token, &["leads:read"]).await;
    let (_, second) = create_token(&app, &tenant.token, &["leads:read"]).await;
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(app.get("/api/v1/leads", &first).await.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 429]);
    let other = app.get("/api/v1/leads", &second).await;
    assert_eq!(other.status(), 200, "another token, its own budget");
    let dashboard = app.get("/api/v1/leads", &tenant.token).await;
    assert_eq!(
        dashboard.status(),
        200,
        "dashboard logins are not this tier"
    );
}
