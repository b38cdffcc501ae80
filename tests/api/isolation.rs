//! Tenant isolation: through every route, and underneath in PostgreSQL itself.

use agentry::db::TENANT_TABLES;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{assert_error, body, set_tenant, spawn_app, TestApp};

struct Owned {
    agent_id: String,
    widget_id: String,
}

async fn tenant_with_data(app: &TestApp, token: &str, name: &str) -> Owned {
    let agent = app.create_agent(token, name).await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let widget = app.create_widget(token, &agent_id).await;
    Owned {
        agent_id,
        widget_id: widget["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn a_second_tenant_gets_404_on_every_route_of_the_first_tenants_resources() {
    let app = spawn_app().await;
    let first = app.create_tenant("First Co").await;
    let second = app.create_tenant("Second Co").await;
    let owned = tenant_with_data(&app, &first.token, "First agent").await;
    let agent = format!("/api/v1/agents/{}", owned.agent_id);
    let widgets = format!("{agent}/widgets");
    let widget = format!("{widgets}/{}", owned.widget_id);
    let origins = json!({ "allowed_origins": ["https://evil.example.com"] });

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, agent.clone(), None),
        (
            Method::PATCH,
            agent.clone(),
            Some(json!({ "name": "Hijacked" })),
        ),
        (Method::DELETE, agent.clone(), None),
        (Method::GET, widgets.clone(), None),
        (Method::POST, widgets.clone(), Some(origins.clone())),
        (Method::GET, widget.clone(), None),
        (Method::PATCH, widget.clone(), Some(origins.clone())),
        (Method::DELETE, widget.clone(), None),
    ];
    for (method, path, payload) in attempts {
        let mut request = app.request(method.clone(), &path, Some(&second.token));
        if let Some(payload) = payload {
            request = request.json(&payload);
        }
        let response = request.send().await.unwrap();
        assert_error(response, 404, "not_found").await;
        eprintln!("{method} {path}: 404");
    }

    // Nothing changed for the first tenant.
    let still = body(app.get(&agent, &first.token).await).await;
    assert_eq!(still["name"], "First agent");
    let widget_now = body(app.get(&widget, &first.token).await).await;
    assert_eq!(
        widget_now["allowed_origins"],
        json!(["https://shop.example.com"])
    );
    let listed = body(app.get(&widgets, &first.token).await).await;
    assert_eq!(listed["widgets"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lists_show_only_the_callers_own_resources() {
    let app = spawn_app().await;
    let first = app.create_tenant("First Co").await;
    let second = app.create_tenant("Second Co").await;
    tenant_with_data(&app, &first.token, "First agent").await;
    let mine = tenant_with_data(&app, &second.token, "Second agent").await;
    let listed = body(app.get("/api/v1/agents", &second.token).await).await;
    let ids: Vec<&str> = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.agent_id.as_str()]);
}

async fn seed_every_tenant_table(conn: &mut PgConnection, tenant: Uuid, agent: Uuid) {
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, tenant).await;
    let conversation = Uuid::now_v7();
    sqlx::query("INSERT INTO conversations (id, tenant_id, agent_id, channel) VALUES ($1, $2, $3, 'widget')")
        .bind(conversation)
        .bind(tenant)
        .bind(agent)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content) VALUES ($1, $2, $3, 0, 'visitor', 'hi')",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(conversation)
    .execute(&mut *tx)
    .await
    .unwrap();
    crate::audit::insert_one_row_per_audit_table(&mut tx, tenant, agent, conversation).await;
    let document = Uuid::now_v7();
    sqlx::query("INSERT INTO kb_documents (id, tenant_id, agent_id, title, content_type, content) VALUES ($1, $2, $3, 'Doc', 'text', 'Body')")
        .bind(document).bind(tenant).bind(agent)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO kb_chunks (id, tenant_id, agent_id, document_id, ordinal, heading, body, embedding) VALUES ($1, $2, $3, $4, 0, 'Doc', 'Body', '{0.6,0.8}')")
        .bind(Uuid::now_v7()).bind(tenant).bind(agent).bind(document)
        .execute(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO kb_namespace_versions (tenant_id, agent_id, version) VALUES ($1, $2, 1)",
    )
    .bind(tenant)
    .bind(agent)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO tenant_llm_configs (tenant_id, provider, model, connection_sealed) VALUES ($1, 'offline', 'offline-grounded-v1', '\\x00')")
        .bind(tenant)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO leads (id, tenant_id, email) VALUES ($1, $2, 'lead@example.com')")
        .bind(Uuid::now_v7())
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO outbox_events (id, tenant_id, event_type, payload) VALUES ($1, $2, 'lead.created', '{}')")
        .bind(Uuid::now_v7())
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_sealed) VALUES ($1, $2, 'https://example.com/hook', '{lead.created}', '\\x00')")
        .bind(Uuid::now_v7())
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO bookings (id, tenant_id, conversation_id, requested_time) VALUES ($1, $2, $3, 'Friday')")
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(conversation)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO quote_requests (id, tenant_id, conversation_id, details) VALUES ($1, $2, $3, 'a roof')")
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(conversation)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO api_tokens (id, tenant_id, name, scopes, token_hash, last_four, created_by, expires_at)
         SELECT $1, $2, 'seed', '{leads:read}', sha256($1::text::bytea), 'abcd', id, now() + interval '1 day'
         FROM tenant_users WHERE tenant_id = $2 LIMIT 1",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .unwrap();
    // The SMS and voice channels' tables; a number unique to this tenant.
    let number = format!("+1415{:07}", tenant.as_u128() % 10_000_000);
    sqlx::query(
        "INSERT INTO phone_numbers (id, tenant_id, number, agent_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(&number)
    .bind(agent)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO tenant_twilio_configs (tenant_id, account_sid, auth_token_sealed) VALUES ($1, 'AC0123456789abcdef0123456789abcdef', '\\x00')")
        .bind(tenant)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO sms_suppressions (tenant_id, sender, keyword) VALUES ($1, '+16505550100', 'STOP')")
        .bind(tenant)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO sms_outbound (id, tenant_id, conversation_id, from_number, to_number, body) VALUES ($1, $2, $3, $4, '+16505550100', 'Hi')")
        .bind(Uuid::now_v7()).bind(tenant).bind(conversation).bind(&number)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO sms_delivery_statuses (id, tenant_id, message_sid, status) VALUES ($1, $2, 'SM1', 'delivered')")
        .bind(Uuid::now_v7()).bind(tenant)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO call_recordings (id, tenant_id, conversation_id, call_sid, recording_sid, object_key, content_type, size_bytes, source) VALUES ($1, $2, $3, 'CA0123456789abcdef0123456789abcdef', 'RE0123456789abcdef0123456789abcdef', 'seed', 'audio/wav', 0, 'twilio')")
        .bind(Uuid::now_v7()).bind(tenant).bind(conversation)
        .execute(&mut *tx).await.unwrap();
    sqlx::query("INSERT INTO subject_keys (id, tenant_id, conversation_id, key_sealed) VALUES ($1, $2, $3, '\\x00')")
        .bind(Uuid::now_v7()).bind(tenant).bind(conversation)
        .execute(&mut *tx).await.unwrap();
    let file = Uuid::now_v7();
    sqlx::query("INSERT INTO files (id, tenant_id, name, size_bytes, content_type, object_key, data_key, nonce_prefix, scan_status) VALUES ($1, $2, 'seed.txt', 0, 'text/plain', 'seed', '\\x00', '\\x00000000000000', 'unscanned')")
        .bind(file).bind(tenant)
        .execute(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO file_shares (id, tenant_id, file_id, created_by) VALUES ($1, $2, $3, $1)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(file)
    .execute(&mut *tx)
    .await
    .unwrap();
    // Billing totals come from the rollup of the usage events above, never a direct write.
    sqlx::query("SELECT * FROM agentry_job_rollup_usage('-infinity')")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO tenant_retention (tenant_id, conversations_days) VALUES ($1, 30)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_app_role_with_no_tenant_set_sees_no_rows() {
    let app = spawn_app().await;
    let first = app.create_tenant("First Co").await;
    let second = app.create_tenant("Second Co").await;
    let first_data = tenant_with_data(&app, &first.token, "A").await;
    let second_data = tenant_with_data(&app, &second.token, "B").await;
    let mut conn = app.app_role_connection().await;
    seed_every_tenant_table(
        &mut conn,
        first.id.as_uuid(),
        first_data.agent_id.parse().unwrap(),
    )
    .await;
    seed_every_tenant_table(
        &mut conn,
        second.id.as_uuid(),
        second_data.agent_id.parse().unwrap(),
    )
    .await;
    // Rate-limit overrides are an operator's to write, not a tenant's.
    let operator = app.operator_token().await;
    for tenant in [first.id, second.id] {
        let set = app
            .client
            .put(app.url(&format!("/api/v1/admin/tenants/{tenant}/rate-limits")))
            .bearer_auth(&operator)
            .json(&json!({ "overrides": { "chat": 100 } }))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 200);
    }
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, first.id).await;
    let raised_itself =
        sqlx::query("UPDATE tenant_rate_limits SET per_minute = 60000000 WHERE tenant_id = $1")
            .bind(first.id.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap();
    assert_eq!(
        raised_itself.rows_affected(),
        0,
        "a tenant cannot raise its own limits"
    );
    tx.rollback().await.unwrap();

    // The owner sees both tenants' rows in every table...
    let mut owner = app.owner_connection().await;
    for table in TENANT_TABLES {
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut owner)
            .await
            .unwrap();
        assert!(
            total >= 2,
            "{table} should hold rows of both tenants, has {total}"
        );
    }
    // ...the application role with no tenant set sees none of them...
    for table in TENANT_TABLES {
        let visible: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            visible, 0,
            "{table} leaked {visible} rows with no tenant set"
        );
    }
    // ...and with one tenant set, only that tenant's.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, first.id).await;
    for table in TENANT_TABLES {
        let column = if table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let foreign: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE {column} <> $1"
        ))
        .bind(first.id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let own: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(foreign, 0, "{table} shows another tenant's rows");
        assert!(own >= 1, "{table} hides the tenant's own rows");
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn the_app_role_cannot_bypass_row_level_security() {
    let app = spawn_app().await;
    let mut conn = app.app_role_connection().await;
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!superuser && !bypass);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        owned, 0,
        "the app role must own nothing (owners bypass RLS)"
    );
    let without_rls: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relname = ANY($1) AND relkind = 'r' AND NOT relrowsecurity",
    )
    .bind(TENANT_TABLES.to_vec())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        without_rls.is_empty(),
        "tables without RLS: {without_rls:?}"
    );
    // Every table holding tenant rows is in the list these checks walk.
    let mut with_tenant_column: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'tenant_id'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    with_tenant_column.push("tenants".into());
    with_tenant_column.sort();
    let mut listed: Vec<String> = TENANT_TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(with_tenant_column, listed, "TENANT_TABLES is out of date");
    let denied = sqlx::query("SET ROLE postgres").execute(&mut conn).await;
    assert!(denied.is_err());
}

#[tokio::test]
async fn rows_cannot_be_written_into_another_tenant_or_point_across_tenants() {
    let app = spawn_app().await;
    let first = app.create_tenant("First Co").await;
    let second = app.create_tenant("Second Co").await;
    let first_data = tenant_with_data(&app, &first.token, "A").await;
    let mut conn = app.app_role_connection().await;
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, second.id).await;
    // Writing a row labelled with the first tenant while acting as the second: refused by the policy.
    let labelled =
        sqlx::query("INSERT INTO agents (id, tenant_id, name) VALUES ($1, $2, 'sneaky')")
            .bind(Uuid::now_v7())
            .bind(first.id.as_uuid())
            .execute(&mut *tx)
            .await;
    assert!(
        labelled.is_err(),
        "RLS WITH CHECK must refuse another tenant's tenant_id"
    );
    tx.rollback().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, second.id).await;
    // A widget of the second tenant pointing at the first tenant's agent: refused by the composite key.
    let crossing = sqlx::query(
        "INSERT INTO widgets (id, tenant_id, agent_id, public_key) VALUES ($1, $2, $3, 'pk_crossing')",
    )
    .bind(Uuid::now_v7())
    .bind(second.id.as_uuid())
    .bind(first_data.agent_id.parse::<Uuid>().unwrap())
    .execute(&mut *tx)
    .await;
    let error = crossing.expect_err("cross-tenant reference must fail");
    assert!(error.to_string().contains("foreign key"), "{error}");
}
