//! Privacy: a person's export and erasure. Audit rows keep their count and
//! stay append-only, while their personal fields are shredded with the
//! person's keys; nothing readable about the person remains anywhere.

use std::sync::Arc;
use std::time::Duration;

use agentry::db::AUDIT_TABLES;
use agentry_actors::TenantId;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::chat_support::{reply, site, visitor_token, Site};
use crate::dispatch::{eventually, rows, Receiver};
use agentry::recordings::{NewAudio, Saved, Source};

use crate::helpers::{
    assert_error, body, create_token, recordings_dir, spawn_app, spawn_app_with, TestApp,
};

const NAME: &str = "Zofia Quillfeather";
const EMAIL: &str = "zofia.quill@privacy.example";
const PHONE: &str = "+14155552671";
const OTHER_EMAIL: &str = "bruno.otter@control.example";
const OUR_NUMBER: &str = "+14155550000";

/// The tenant's action runs through the API (newest first), personal fields
/// opened where their key exists.
pub async fn opened_runs(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get("/api/v1/action-runs?limit=200", token).await;
    assert_eq!(response.status(), 200);
    body(response).await["action_runs"]
        .as_array()
        .unwrap()
        .clone()
}

async fn export(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/privacy/export?{query}"), token)
        .await;
    assert_eq!(response.status(), 200);
    body(response).await
}

async fn erase(app: &TestApp, token: &str, key: Value) -> reqwest::Response {
    app.post_json("/api/v1/privacy/erase", Some(token), &key)
        .await
}

/// A webhook endpoint for the events the chats below emit.
async fn hook(app: &TestApp, site: &Site, receiver: &Receiver) -> Uuid {
    let created = app
        .post_json(
            "/api/v1/webhook-endpoints",
            Some(&site.tenant.token),
            &json!({ "url": receiver.url("127.0.0.1"),
                     "event_types": ["lead.created", "booking.requested"] }),
        )
        .await;
    assert_eq!(created.status(), 201);
    body(created).await["id"].as_str().unwrap().parse().unwrap()
}

/// Zofia books in one message with her details, asks for a quote, and
/// comes back in a second conversation.
async fn zofia_chats(app: &TestApp, site: &Site) {
    let token = visitor_token(app, &site.public_key).await;
    let answer = reply(
        app,
        &token,
        &format!("Can I book an appointment for Friday at 10am? My name is {NAME}, email {EMAIL}, phone {PHONE}"),
    )
    .await;
    assert!(answer.contains("appointment request"), "{answer}");
    reply(
        app,
        &token,
        "How much would a quote cost for a full repaint?",
    )
    .await;
    let again = visitor_token(app, &site.public_key).await;
    reply(app, &again, &format!("Hello again, it's me: {EMAIL}")).await;
}

async fn lead_id(conn: &mut PgConnection, tenant: TenantId, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM leads WHERE tenant_id = $1 AND email = $2")
        .bind(tenant.as_uuid())
        .bind(email)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// An SMS conversation from Zofia's phone, with a reply sent and her STOP.
async fn zofia_texts(conn: &mut PgConnection, site: &Site) {
    let tenant = site.tenant.id.as_uuid();
    let conversation = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, agent_id, channel, channel_key)
         VALUES ($1, $2, $3::uuid, 'sms', $4)",
    )
    .bind(conversation)
    .bind(tenant)
    .bind(&site.agent_id)
    .bind(format!("{OUR_NUMBER}:{PHONE}"))
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
         VALUES ($1, $2, $3, 0, 'visitor', 'Quillfeather here, are you open?')",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(conversation)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sms_outbound (id, tenant_id, conversation_id, from_number, to_number, body, state, message_sid)
         VALUES ($1, $2, $3, $4, $5, 'Yes, Zofia Quillfeather, until 6pm.', 'sent', 'SMzofia')",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(conversation)
    .bind(OUR_NUMBER)
    .bind(PHONE)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sms_delivery_statuses (id, tenant_id, message_sid, status)
         VALUES ($1, $2, 'SMzofia', 'delivered')",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sms_suppressions (tenant_id, sender, keyword) VALUES ($1, $2, 'STOP')",
    )
    .bind(tenant)
    .bind(PHONE)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// A call from Zofia that captured her lead, recorded and transcribed: the
/// recording's id and the path of its stored audio.
async fn zofia_calls(
    app: &TestApp,
    conn: &mut PgConnection,
    site: &Site,
    lead: Uuid,
) -> (Uuid, std::path::PathBuf) {
    const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, agent_id, channel, channel_key, lead_id)
         VALUES ($1, $2, $3::uuid, 'voice', $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(site.tenant.id.as_uuid())
    .bind(&site.agent_id)
    .bind(CALL_SID)
    .bind(lead)
    .execute(&mut *conn)
    .await
    .unwrap();
    let audio = agentry::recordings::wav::mulaw_wav(&[0x7f; 800], 8000);
    let saved = app
        .state
        .recordings
        .save(
            &app.store,
            site.tenant.id,
            &NewAudio {
                call_sid: CALL_SID,
                recording_sid: "RE0123456789abcdef0123456789abcdef",
                content_type: "audio/wav",
                bytes: &audio,
                duration_secs: Some(1),
                source: Source::Twilio,
            },
        )
        .await
        .unwrap();
    let Saved::Stored(id) = saved else {
        panic!("{saved:?}")
    };
    let key: String = sqlx::query_scalar(
        "UPDATE call_recordings SET transcript = 'Zofia Quillfeather speaking, call me back'
         WHERE id = $1 RETURNING object_key",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let path = recordings_dir(app.database_name()).join(key);
    assert!(path.exists(), "{path:?}");
    (id, path)
}

/// Where `needle` can still be read: `table.column` for every text, jsonb or
/// bytea column of every table holding it, outside `except_tenant`'s rows.
async fn readable_traces(
    conn: &mut PgConnection,
    needle: &str,
    except_tenant: TenantId,
) -> Vec<String> {
    let columns: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text,
                EXISTS (SELECT 1 FROM information_schema.columns t
                        WHERE t.table_schema = 'public' AND t.table_name = c.table_name
                          AND t.column_name = 'tenant_id')
         FROM information_schema.columns c
         JOIN information_schema.tables tb
           ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
         WHERE c.table_schema = 'public' AND tb.table_type = 'BASE TABLE'
           AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'bytea', 'ARRAY')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(columns.len() > 40, "{columns:?}");
    let mut found = Vec::new();
    for (table, column, data_type, has_tenant) in columns {
        let matches = if data_type == "bytea" {
            format!("position(convert_to($1, 'UTF8') IN \"{column}\") > 0")
        } else {
            format!("\"{column}\"::text ILIKE '%' || $1 || '%'")
        };
        let outside = match (has_tenant, table.as_str()) {
            (true, _) => "tenant_id IS DISTINCT FROM $2",
            (false, "tenants") => "id IS DISTINCT FROM $2",
            _ => "$2::uuid IS NOT NULL",
        };
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{table}\" WHERE {matches} AND {outside}"
        ))
        .bind(needle)
        .bind(except_tenant.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if count > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

async fn audit_counts(conn: &mut PgConnection, tenant: TenantId) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in AUDIT_TABLES {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        ))
        .bind(tenant.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        counts.push((table.to_owned(), count));
    }
    counts
}

fn runs_of(runs: &[Value], conversations: &[Value]) -> Vec<Value> {
    runs.iter()
        .filter(|run| conversations.contains(&run["conversation_id"]))
        .cloned()
        .collect()
}

/// The status a share link answers with, fetched as its recipient would (no token).
async fn link_status(app: &TestApp, link: &str) -> u16 {
    app.request(reqwest::Method::GET, link, None)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_lead_is_exported_by_any_one_key_then_erased_leaving_nothing_readable() {
    let app = spawn_app().await;
    let site = site(&app, "Privacy Co").await;
    let other_tenant = site_with_same_email(&app).await;
    let receiver = Receiver::answering(200).await;
    let endpoint = hook(&app, &site, &receiver).await;
    zofia_chats(&app, &site).await;
    // The control: another lead of the same tenant, who books too.
    let bruno = visitor_token(&app, &site.public_key).await;
    reply(
        &app,
        &bruno,
        &format!("I'd like to book a visit on Monday. My name is Bruno Otterwell, {OTHER_EMAIL}"),
    )
    .await;
    let mut owner = app.owner_connection().await;
    zofia_texts(&mut owner, &site).await;
    let zofia = lead_id(&mut owner, site.tenant.id, EMAIL).await;
    let recording = zofia_calls(&app, &mut owner, &site, zofia).await;
    let bruno_lead = lead_id(&mut owner, site.tenant.id, OTHER_EMAIL).await;
    // A price list shared with her: the link is hers, the file the tenant's.
    let price_list = crate::files::uploaded(
        &app,
        &site.tenant.token,
        "price-list.txt",
        b"Cleaning from $80.".to_vec(),
    )
    .await;
    let shared = app
        .post_json(
            &format!("/api/v1/files/{}/share", price_list["id"].as_str().unwrap()),
            Some(&site.tenant.token),
            &json!({ "expires_in": "7d", "lead_id": zofia }),
        )
        .await;
    assert_eq!(shared.status(), 201);
    let link = body(shared).await["url"].as_str().unwrap().to_owned();
    assert_eq!(link_status(&app, &link).await, 200);
    // Zofia's lead.created and booking.requested, and Bruno's two.
    eventually(Duration::from_secs(15), "the four webhooks", || async {
        (rows(&app, endpoint).await.len() >= 4).then_some(())
    })
    .await;

    // In the audit row, only the arguments' names are readable.
    let stored: Vec<Value> = sqlx::query_scalar(
        "SELECT input FROM agent_action_runs WHERE tenant_id = $1 AND tool = 'capture_lead'",
    )
    .bind(site.tenant.id.as_uuid())
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert!(stored.contains(&json!({ "name": "sealed", "email": "sealed", "phone": "sealed" })));

    let token = &site.tenant.token;
    let by_id = export(&app, token, &format!("lead_id={zofia}")).await;
    let by_email = export(&app, token, "email=Zofia.Quill@Privacy.example").await;
    let by_phone = export(&app, token, "phone=(415)%20555-2671").await;
    println!(
        "export bundle: {}",
        serde_json::to_string_pretty(&by_id).unwrap()
    );
    for (kind, exported) in [
        ("lead_id", &by_id),
        ("email", &by_email),
        ("phone", &by_phone),
    ] {
        assert_eq!(exported["key_kind"], kind);
        assert_eq!(exported["empty"], false);
        let bundle = &exported["bundle"];
        assert_eq!(bundle["lead"]["id"], json!(zofia), "{kind}");
        assert_eq!(bundle["lead"]["name"], NAME, "{kind}");
        assert_eq!(bundle["lead"]["phone"], PHONE, "{kind}");
        // Two chats, her call, and the SMS conversation of her (unshared) phone.
        let conversations = bundle["conversations"].as_array().unwrap();
        assert_eq!(conversations.len(), 4, "{kind}: {conversations:?}");
        assert_eq!(bundle["recordings"][0]["id"], json!(recording.0), "{kind}");
        assert!(bundle["recordings"][0]["transcript"]
            .as_str()
            .unwrap()
            .contains("Quillfeather"));
        assert!(bundle["recordings"][0].get("object_key").is_none());
        assert!(conversations.iter().any(|c| c["channel"] == "sms"
            && c["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("Quillfeather")));
        assert_eq!(bundle["bookings"].as_array().unwrap().len(), 1, "{kind}");
        assert_eq!(
            bundle["quote_requests"].as_array().unwrap().len(),
            1,
            "{kind}"
        );
        let runs = bundle["action_runs"].as_array().unwrap();
        let tools: Vec<&str> = runs.iter().map(|r| r["tool"].as_str().unwrap()).collect();
        assert_eq!(
            tools,
            [
                "capture_lead",
                "book_appointment",
                "request_quote",
                "capture_lead"
            ],
            "{kind}"
        );
        assert_eq!(runs[0]["input"]["email"], EMAIL, "opened: {kind}");
        assert_eq!(runs[0]["personal_data"], "readable");
        assert!(runs[1]["input"]["requested_time"]
            .as_str()
            .unwrap()
            .contains("Friday"));
        let events = bundle["webhook_events"].as_array().unwrap();
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["lead.created", "booking.requested", "quote.requested"],
            "{kind}"
        );
        assert_eq!(events[0]["payload"]["lead"]["email"], EMAIL);
        assert_eq!(events[0]["deliveries"][0]["outcome"], "success");
        assert_eq!(
            bundle["sms_messages"].as_array().unwrap().len(),
            1,
            "{kind}"
        );
        assert_eq!(
            bundle["sms_messages"][0]["delivery_statuses"][0]["status"],
            "delivered"
        );
        assert_eq!(bundle["sms_suppressions"][0]["keyword"], "STOP");
        assert_eq!(bundle["files_shared"][0]["file_name"], "price-list.txt");
        assert_eq!(bundle["files_shared"].as_array().unwrap().len(), 1);
        // Nothing of the other lead, nor of the other tenant's lead with the same email.
        let text = bundle.to_string();
        assert!(
            !text.contains("Otterwell") && !text.contains(&bruno_lead.to_string()),
            "{kind}"
        );
        assert!(!text.contains(&other_tenant.1.to_string()), "{kind}");
    }

    let audit_before = audit_counts(&mut owner, site.tenant.id).await;
    let conversations: Vec<Value> = by_id["bundle"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    let erased = erase(&app, token, json!({ "lead_id": zofia })).await;
    assert_eq!(erased.status(), 200);
    let erased = body(erased).await;
    assert_eq!(erased["key_kind"], "lead_id");
    assert_eq!(erased["erased"]["leads"], 1);
    assert_eq!(erased["erased"]["conversations"], 4);
    assert_eq!(erased["erased"]["recordings"], 1);
    assert_eq!(erased["recording_objects_removed"], 1);
    assert!(!recording.1.exists(), "the recording's audio is gone");
    assert_eq!(erased["erased"]["bookings"], 1);
    assert_eq!(erased["erased"]["quote_requests"], 1);
    assert_eq!(erased["erased"]["sms_messages"], 1);
    assert_eq!(erased["erased"]["sms_suppressions"], 1);
    assert_eq!(erased["erased"]["file_shares"], 1);
    // Her link is gone; the tenant's file stays.
    assert_eq!(link_status(&app, &link).await, 403);
    let file_path = format!("/api/v1/files/{}", price_list["id"].as_str().unwrap());
    assert_eq!(app.get(&file_path, token).await.status(), 200);
    assert_eq!(erased["shredded"]["action_runs"], 4);
    assert_eq!(erased["shredded"]["subject_keys_destroyed"], 2);
    assert_eq!(erased["shredded"]["webhook_event_payloads"], 3);
    assert!(erased["explanation"]
        .as_str()
        .unwrap()
        .contains("append-only"));

    // Nothing readable about her remains, in any table (the other tenant's
    // lead with the same email is theirs, and untouched).
    for needle in [EMAIL, PHONE, "Quillfeather", "Zofia"] {
        let traces = readable_traces(&mut owner, needle, other_tenant.0).await;
        assert!(
            traces.is_empty(),
            "{needle} is still readable in {traces:?}"
        );
    }
    assert!(
        !readable_traces(&mut owner, EMAIL, TenantId::from_uuid(Uuid::nil()))
            .await
            .is_empty()
    );
    // The audit tables kept every row (one more: the erasure's own) and
    // still refuse changes.
    let mut audit_after = audit_before.clone();
    for (table, count) in &mut audit_after {
        if table == "privacy_erasures" {
            *count += 1;
        }
    }
    assert_eq!(audit_counts(&mut owner, site.tenant.id).await, audit_after);
    for statement in [
        "UPDATE agent_action_runs SET input = '{}'",
        "DELETE FROM agent_action_runs",
        "UPDATE privacy_erasures SET key_kind = 'email'",
        "DELETE FROM privacy_erasures",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut owner)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let (kind, counts, by): (String, Value, Uuid) = sqlx::query_as(
        "SELECT key_kind, counts, requested_by FROM privacy_erasures WHERE tenant_id = $1",
    )
    .bind(site.tenant.id.as_uuid())
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), &counts["erased"]["leads"]),
        ("lead_id", &json!(1))
    );
    assert!(!counts.to_string().contains(&zofia.to_string()));
    let owner_user: Uuid = sqlx::query_scalar("SELECT id FROM tenant_users WHERE email = $1")
        .bind(&site.tenant.email)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(by, owner_user);

    // Her runs show as erased through the API; Bruno's are still readable.
    let runs = opened_runs(&app, token).await;
    let hers = runs_of(&runs, &conversations);
    assert_eq!(hers.len(), 4);
    for run in &hers {
        assert_eq!(run["input"], Value::Null, "{run}");
        assert_eq!(run["personal_data"], "erased", "{run}");
    }
    let his: Vec<&Value> = runs
        .iter()
        .filter(|run| run["tool"] == "capture_lead" && run["personal_data"] == "readable")
        .collect();
    assert_eq!(his.len(), 1);
    assert_eq!(his[0]["input"]["email"], OTHER_EMAIL);
    let untouched = export(&app, token, &format!("email={OTHER_EMAIL}")).await;
    assert_eq!(untouched["bundle"]["lead"]["id"], json!(bruno_lead));
    assert_eq!(untouched["bundle"]["bookings"].as_array().unwrap().len(), 1);
    assert_eq!(
        untouched["bundle"]["webhook_events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let theirs = export(&app, &other_tenant.2, &format!("email={EMAIL}")).await;
    assert_eq!(theirs["bundle"]["lead"]["id"], json!(other_tenant.1));

    // Her export is now empty, by every key; so is a lead never met.
    for query in [
        format!("lead_id={zofia}"),
        format!("email={EMAIL}"),
        format!("phone={PHONE}"),
        format!("lead_id={}", Uuid::now_v7()),
    ] {
        let exported = export(&app, token, &query).await;
        assert_eq!(exported["empty"], true, "{query}: {exported}");
        assert_eq!(exported["bundle"]["lead"], Value::Null);
        assert_eq!(exported["bundle"]["conversations"], json!([]));
        assert_eq!(exported["bundle"]["action_runs"], json!([]));
    }
}

/// Another tenant whose lead has Zofia's email: (tenant, lead, owner token).
async fn site_with_same_email(app: &TestApp) -> (TenantId, Uuid, String) {
    let other = site(app, "Elsewhere Co").await;
    let token = visitor_token(app, &other.public_key).await;
    reply(app, &token, &format!("My name is Zofia, {EMAIL}")).await;
    let mut owner = app.owner_connection().await;
    let lead = lead_id(&mut owner, other.tenant.id, EMAIL).await;
    (other.tenant.id, lead, other.tenant.token)
}

#[tokio::test]
async fn privacy_requests_need_exactly_one_key_and_an_owner_or_admin() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Rules Co").await;
    for query in [
        "",
        "email=a@b.co&phone=%2B14155552671",
        "lead_id=not-a-uuid",
        "email=nope",
        "phone=12",
        "name=Ana",
    ] {
        let response = app
            .get(&format!("/api/v1/privacy/export?{query}"), &tenant.token)
            .await;
        assert_error(response, 400, "bad_request").await;
    }
    for key in [
        json!({}),
        json!({ "lead_id": Uuid::now_v7(), "email": "a@b.co" }),
        json!({ "phone": "call me" }),
    ] {
        let response = erase(&app, &tenant.token, key.clone()).await;
        assert_eq!(response.status(), 400, "{key}");
    }

    let member = app.create_member(tenant.id).await;
    let refused = app
        .get("/api/v1/privacy/export?email=a@b.co", &member)
        .await;
    assert_error(refused, 403, "forbidden").await;
    let refused = erase(&app, &member, json!({ "email": "a@b.co" })).await;
    assert_error(refused, 403, "forbidden").await;
    // Automation cannot reach them either, whatever its scopes.
    let (_, api_token) = create_token(&app, &tenant.token, &["leads:read", "leads:write"]).await;
    let refused = app
        .get("/api/v1/privacy/export?email=a@b.co", &api_token)
        .await;
    assert_eq!(refused.status(), 403);

    // Erasing nobody erases nothing, and is recorded all the same.
    let response = erase(
        &app,
        &tenant.token,
        json!({ "email": "nobody@privacy.example" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let erased = body(response).await;
    assert_eq!(erased["erased"]["leads"], 0);
    assert_eq!(erased["key_kind"], "email");
}

#[tokio::test]
async fn a_phone_two_leads_share_is_refused_with_their_ids() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Household Co").await;
    let mut ids = Vec::new();
    for email in ["one@home.example", "two@home.example"] {
        let created = app
            .post_json(
                "/api/v1/leads",
                Some(&tenant.token),
                &json!({ "email": email, "phone": PHONE }),
            )
            .await;
        assert_eq!(created.status(), 201);
        ids.push(body(created).await["id"].as_str().unwrap().to_owned());
    }
    let response = app
        .get(
            &format!("/api/v1/privacy/export?phone={PHONE}"),
            &tenant.token,
        )
        .await;
    let error = assert_error(response, 409, "conflict").await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(ids.iter().all(|id| message.contains(id)), "{message}");
    let response = erase(&app, &tenant.token, json!({ "phone": PHONE })).await;
    assert_eq!(response.status(), 409);
    // By lead id, each is theirs alone: the shared phone's data is neither's.
    let one = export(&app, &tenant.token, &format!("lead_id={}", ids[0])).await;
    assert_eq!(one["bundle"]["lead"]["email"], "one@home.example");
    let response = erase(&app, &tenant.token, json!({ "lead_id": ids[0] })).await;
    assert_eq!(body(response).await["erased"]["leads"], 1);
    let two = export(&app, &tenant.token, &format!("phone={PHONE}")).await;
    assert_eq!(two["bundle"]["lead"]["email"], "two@home.example");
}

#[tokio::test]
async fn an_erased_persons_event_is_never_sent_again() {
    let app = spawn_app_with(|settings| settings.webhooks.retry_delays_secs = vec![2, 2, 2]).await;
    let site = site(&app, "Retry Co").await;
    // The first attempt fails; a retry is due two seconds later.
    let receiver = Receiver::start(Arc::new(|_, nth| [500, 200][nth.min(1)]), Duration::ZERO).await;
    let endpoint = hook(&app, &site, &receiver).await;
    let token = visitor_token(&app, &site.public_key).await;
    reply(&app, &token, &format!("My name is {NAME}, {EMAIL}")).await;
    let first = eventually(Duration::from_secs(10), "the first attempt", || async {
        rows(&app, endpoint).await.into_iter().next()
    })
    .await;
    assert_eq!(first.outcome, "retrying");
    let response = erase(&app, &site.tenant.token, json!({ "email": EMAIL })).await;
    assert_eq!(response.status(), 200);

    let second = eventually(Duration::from_secs(15), "the second attempt", || async {
        rows(&app, endpoint).await.into_iter().nth(1)
    })
    .await;
    assert_eq!(second.outcome, "failed");
    assert!(
        second.error.as_deref().unwrap_or("").contains("erased"),
        "{:?}",
        second.error
    );
    assert_eq!(
        receiver.seen().len(),
        1,
        "only the attempt before the erasure"
    );
    let mut owner = app.owner_connection().await;
    assert!(
        readable_traces(&mut owner, EMAIL, TenantId::from_uuid(Uuid::nil()))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn exports_and_erasures_are_limited_by_their_own_tier_per_tenant() {
    let app = spawn_app_with(|settings| {
        settings.rate_limits.enabled = true;
        settings.rate_limits.privacy = 2;
    })
    .await;
    let tenant = app.create_tenant("Limited Co").await;
    let other = app.create_tenant("Unlimited Co").await;
    for _ in 0..2 {
        let response = app
            .get("/api/v1/privacy/export?email=a@b.co", &tenant.token)
            .await;
        assert_eq!(response.status(), 200);
    }
    let refused = erase(&app, &tenant.token, json!({ "email": "a@b.co" })).await;
    assert_error(refused, 429, "rate_limited").await;
    // The rest of the dashboard API, and another tenant, are not held up.
    assert_eq!(app.get("/api/v1/leads", &tenant.token).await.status(), 200);
    let response = app
        .get("/api/v1/privacy/export?email=a@b.co", &other.token)
        .await;
    assert_eq!(response.status(), 200);
}
