//! SMS and voice over Twilio: signed webhooks (checked against the official
//! `twilio` Python library's own signing, which `bash .ci/run` installs;
//! without AGENTRY_PYTHON that test says so and passes), STOP/START/HELP,
//! text conversations through the real pipeline, late replies through the
//! REST API, and a phone call whose transcript is stored scrubbed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry::configuration::Settings;
use agentry::twilio::signature;
use axum::response::IntoResponse;
use reqwest::Response;
use serde_json::{json, Value};

use crate::chat_support::{site, upload_ready, use_stand_in, Site};
use crate::dispatch::eventually;
use crate::helpers::{assert_error, body, spawn_app_with, TestApp};

pub(crate) const PUBLIC: &str = "https://agentry.example.com";
pub(crate) const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

pub(crate) fn twilio_settings(settings: &mut Settings) {
    settings.twilio.public_base_url = PUBLIC.into();
}

/// A tenant with an agent, Twilio credentials and one number.
pub(crate) struct Line {
    pub(crate) site: Site,
    pub(crate) number: String,
    pub(crate) auth_token: String,
}

pub(crate) async fn line(app: &TestApp, name: &str, number: &str) -> Line {
    let site = site(app, name).await;
    let auth_token = format!("token{}", uuid::Uuid::new_v4().simple());
    let configured = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/twilio",
            Some(&site.tenant.token),
        )
        .json(&json!({
            "account_sid": ACCOUNT_SID,
            "auth_token": auth_token,
            "help_text": format!("{name}: reply with a question. Reply STOP to opt out."),
            "escalation_number": "+14155550199",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), 200);
    let added = app
        .post_json(
            "/api/v1/phone-numbers",
            Some(&site.tenant.token),
            &json!({ "number": number, "agent_id": site.agent_id }),
        )
        .await;
    assert_eq!(added.status(), 201);
    Line {
        site,
        number: number.to_owned(),
        auth_token,
    }
}

pub(crate) async fn post_form(
    app: &TestApp,
    path: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> Response {
    let mut request = app.client.post(app.url(path)).form(params);
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    request.send().await.unwrap()
}

pub(crate) fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Posts `params` to `path`, signed as Twilio signs it for the public URL.
pub(crate) async fn signed(
    app: &TestApp,
    line: &Line,
    path: &str,
    params: &[(&str, &str)],
) -> (u16, String) {
    let url = format!("{PUBLIC}{path}");
    let signature = signature::compute(&line.auth_token, &url, &owned(params));
    let response = post_form(app, path, params, Some(&signature)).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn text(app: &TestApp, line: &Line, from: &str, body: &str) -> (u16, String) {
    signed(
        app,
        line,
        "/api/twilio/sms",
        &[
            ("From", from),
            ("To", &line.number),
            ("Body", body),
            ("MessageSid", "SM1"),
        ],
    )
    .await
}

/// The text of every `<Message>` in a TwiML answer.
fn messages(twiml: &str) -> Vec<String> {
    twiml
        .split("<Message>")
        .skip(1)
        .filter_map(|part| part.split("</Message>").next())
        .map(unescape)
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// (kind, occurrences) of the PII audit rows of a conversation.
pub(crate) async fn audit_rows(app: &TestApp, conversation: &str) -> Vec<(String, i32)> {
    let mut owner = app.owner_connection().await;
    sqlx::query_as(
        "SELECT pii_kind, occurrences FROM voice_pii_audits
         WHERE conversation_id = $1::uuid ORDER BY pii_kind",
    )
    .bind(conversation)
    .fetch_all(&mut owner)
    .await
    .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut owner = app.owner_connection().await;
    sqlx::query_scalar(sql).fetch_one(&mut owner).await.unwrap()
}

#[tokio::test]
async fn requests_signed_by_the_official_twilio_library_are_accepted_and_others_are_403() {
    let Ok(python) = std::env::var("AGENTRY_PYTHON") else {
        eprintln!("Twilio signature test not run: set AGENTRY_PYTHON to a Python with twilio (bash .ci/run does)");
        return;
    };
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Signed Co", "+14155550100").await;
    let other = line(&app, "Other Co", "+14155550101").await;
    let params = [
        ("AccountSid", ACCOUNT_SID),
        ("Body", "Hello there"),
        ("From", "+16505550123"),
        ("MessageSid", "SM0123"),
        ("To", shop.number.as_str()),
    ];
    let public_url = format!("{PUBLIC}/api/twilio/sms");
    let socket_url = app.url("/api/twilio/sms");
    let cases = [
        (shop.auth_token.as_str(), public_url.as_str()),
        (other.auth_token.as_str(), public_url.as_str()),
        (shop.auth_token.as_str(), socket_url.as_str()),
        ("wrong-token-0123456789", public_url.as_str()),
    ];
    let input: String = cases
        .iter()
        .map(|(token, url)| {
            format!(
                "{}\n",
                json!({ "token": token, "url": url, "params": params })
            )
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/twilio_sign.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success());
    let signatures: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let answer: Value = serde_json::from_str(line).unwrap();
            assert_eq!(answer["valid"], true);
            answer["signature"].as_str().unwrap().to_owned()
        })
        .collect();
    // Our own signing agrees with the library's.
    assert_eq!(
        signatures[0],
        signature::compute(&shop.auth_token, &public_url, &owned(&params))
    );

    let accepted = post_form(&app, "/api/twilio/sms", &params, Some(&signatures[0])).await;
    assert_eq!(accepted.status(), 200);
    assert!(accepted.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    let twiml = accepted.text().await.unwrap();
    assert_eq!(messages(&twiml).len(), 1, "{twiml}");
    let stored = "SELECT count(*) FROM agent_messages";
    assert_eq!(count(&app, stored).await, 2);

    // Another tenant's token, the socket's URL, a wrong token, none: 403, nothing done.
    for refused in [
        Some(signatures[1].as_str()),
        Some(signatures[2].as_str()),
        Some(signatures[3].as_str()),
        None,
    ] {
        let response = post_form(&app, "/api/twilio/sms", &params, refused).await;
        assert_error(response, 403, "forbidden").await;
    }
    let mut tampered = params;
    tampered[1] = ("Body", "Hello there!");
    let response = post_form(&app, "/api/twilio/sms", &tampered, Some(&signatures[0])).await;
    assert_error(response, 403, "forbidden").await;
    assert_eq!(count(&app, stored).await, 2, "refused requests did no work");
}

#[tokio::test]
async fn stop_start_and_help_with_every_synonym_and_a_stopped_sender_hears_nothing() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Keyword Co", "+14155550110").await;
    let sender = "+16505550111";
    let turns = "SELECT count(*) FROM agent_messages";

    for (word, expected) in [
        ("STOP", "unsubscribed"),
        ("  stop  ", "unsubscribed"),
        ("Stop", "unsubscribed"),
        ("STOPALL", "unsubscribed"),
        ("unsubscribe", "unsubscribed"),
        ("CANCEL", "unsubscribed"),
        ("end", "unsubscribed"),
        ("QUIT", "unsubscribed"),
        ("revoke", "unsubscribed"),
        ("OptOut", "unsubscribed"),
        ("START", "resubscribed"),
        ("yes", "resubscribed"),
        ("\tUNSTOP\n", "resubscribed"),
        ("HELP", "Keyword Co: reply with a question"),
        ("info", "Keyword Co: reply with a question"),
    ] {
        let (status, twiml) = text(&app, &shop, sender, word).await;
        assert_eq!(status, 200);
        let said = messages(&twiml);
        assert_eq!(said.len(), 1, "{word:?}: {twiml}");
        assert!(said[0].contains(expected), "{word:?}: {said:?}");
    }
    assert_eq!(
        count(&app, turns).await,
        0,
        "keywords never reach the agent"
    );

    let (_, twiml) = text(&app, &shop, sender, "STOP").await;
    assert!(messages(&twiml)[0].contains("unsubscribed"));
    let suppressed = body(
        app.get("/api/v1/sms-suppressions", &shop.site.tenant.token)
            .await,
    )
    .await;
    assert_eq!(suppressed["suppressions"][0]["sender"], sender);
    assert_eq!(suppressed["suppressions"][0]["keyword"], "STOP");
    let (status, twiml) = text(&app, &shop, sender, "What are your hours?").await;
    assert_eq!(status, 200);
    assert!(messages(&twiml).is_empty(), "{twiml}");
    assert_eq!(count(&app, turns).await, 0, "a stopped sender gets no turn");
    // HELP and STOP still answer a suppressed sender.
    let (_, twiml) = text(&app, &shop, sender, "HELP").await;
    assert_eq!(messages(&twiml).len(), 1);

    let (_, twiml) = text(&app, &shop, sender, "START").await;
    assert!(messages(&twiml)[0].contains("resubscribed"));
    let (_, twiml) = text(&app, &shop, sender, "stop please").await;
    let said = messages(&twiml);
    assert_eq!(said.len(), 1);
    assert!(!said[0].contains("unsubscribed"), "not a keyword: {said:?}");
    assert_eq!(count(&app, turns).await, 2, "replies resumed");

    // The dashboard can lift a suppression too.
    text(&app, &shop, sender, "QUIT").await;
    let lifted = app
        .delete(
            &format!("/api/v1/sms-suppressions/{sender}"),
            &shop.site.tenant.token,
        )
        .await;
    assert_eq!(lifted.status(), 204);
    let (_, twiml) = text(&app, &shop, sender, "Hello?").await;
    assert_eq!(messages(&twiml).len(), 1);
}

#[tokio::test]
async fn a_text_conversation_runs_through_the_pipeline_with_one_conversation_per_number_and_sender()
{
    let app = spawn_app_with(|settings| {
        twilio_settings(settings);
        settings.twilio.max_sms_segments = 1;
    })
    .await;
    let shop = line(&app, "Texting Co", "+14155550120").await;
    upload_ready(
        &app,
        &shop.site.tenant.token,
        &shop.site.agent_id,
        "Hours",
        "# Opening hours\n\nWe are open Monday to Friday from 8 am to 6 pm, and Saturday from 9 am to noon. \
         We are closed on Sundays and public holidays. Emergency repairs are available around the clock \
         through our on-call line, at an extra charge for visits outside opening hours.",
    )
    .await;
    let (status, first) = text(
        &app,
        &shop,
        "+16505550121",
        "When are you open on Saturday?",
    )
    .await;
    assert_eq!(status, 200);
    let reply = &messages(&first)[0];
    assert!(reply.contains("noon") || reply.contains("9"), "{reply}");
    assert!(reply.chars().count() <= 160, "one segment: {reply}");
    text(&app, &shop, "+16505550121", "And on Sunday?").await;
    text(&app, &shop, "+16505550122", "Hello").await;

    let listed = body(
        app.get("/api/v1/conversations", &shop.site.tenant.token)
            .await,
    )
    .await;
    let conversations = listed["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2, "{listed}");
    assert!(conversations.iter().all(|c| c["channel"] == "sms"));
    let oldest = conversations[1]["id"].as_str().unwrap();
    let detail = body(
        app.get(
            &format!("/api/v1/conversations/{oldest}"),
            &shop.site.tenant.token,
        )
        .await,
    )
    .await;
    let said: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(said.len(), 4, "{said:?}");
    assert_eq!(said[0], "When are you open on Saturday?");
    assert_eq!(said[2], "And on Sunday?");
}

/// An OpenAI-compatible stand-in that answers after `delay`.
async fn slow_openai(delay: Duration, reply: &'static str) -> String {
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            tokio::time::sleep(delay).await;
            let event = json!({ "choices": [{ "index": 0, "delta": { "content": reply } }] });
            let stream = format!("data: {event}\n\ndata: [DONE]\n\n");
            ([("content-type", "text/event-stream")], stream).into_response()
        }),
    );
    let address = crate::helpers::serve_locally(router).await;
    format!("http://{address}/v1")
}

/// A stand-in for Twilio's Messages API; keeps (authorization, form) of each send.
async fn messages_api() -> (String, Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let router = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, form: axum::extract::Form<Vec<(String, String)>>| {
                let kept = kept.clone();
                async move {
                    let authorization = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    kept.lock().unwrap().push((authorization, form.0));
                    (
                        axum::http::StatusCode::CREATED,
                        axum::Json(json!({ "sid": "SM0000000000000000000000000000late", "status": "queued" })),
                    )
                }
            },
        ),
    );
    let address = crate::helpers::serve_locally(router).await;
    (format!("http://{address}"), seen)
}

#[tokio::test]
async fn a_reply_later_than_the_webhook_deadline_goes_out_through_the_rest_api() {
    let (api, sent) = messages_api().await;
    let app = spawn_app_with(|settings| {
        twilio_settings(settings);
        settings.twilio.webhook_timeout_secs = 1;
        settings.twilio.api_base_url = api.clone();
        settings.twilio.outbound_poll_ms = 50;
    })
    .await;
    let shop = line(&app, "Slow Co", "+14155550130").await;
    use_stand_in(
        &app,
        &shop.site,
        &slow_openai(
            Duration::from_millis(1_800),
            "Thanks for waiting. We open at eight.",
        )
        .await,
    )
    .await;
    let started = std::time::Instant::now();
    let (status, twiml) = text(&app, &shop, "+16505550131", "When do you open?").await;
    assert_eq!(status, 200);
    assert!(messages(&twiml).is_empty(), "{twiml}");
    assert!(started.elapsed() < Duration::from_millis(1_700));

    let (authorization, form) = eventually(Duration::from_secs(10), "the late reply", || async {
        sent.lock().unwrap().first().cloned()
    })
    .await;
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap()
    };
    assert_eq!(field("To"), "+16505550131");
    assert_eq!(field("From"), shop.number);
    assert_eq!(field("Body"), "Thanks for waiting. We open at eight.");
    assert_eq!(
        field("StatusCallback"),
        format!("{PUBLIC}/api/twilio/sms/status")
    );
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{ACCOUNT_SID}:{}", shop.auth_token));
    assert_eq!(authorization, format!("Basic {expected}"));
    eventually(Duration::from_secs(5), "the queued reply marked sent", || async {
        (count(&app, "SELECT count(*) FROM sms_outbound WHERE state = 'sent' AND message_sid IS NOT NULL").await == 1)
            .then_some(())
    })
    .await;

    // Twilio reports the delivery; the status callback names our number as From.
    let (status, _) = signed(
        &app,
        &shop,
        "/api/twilio/sms/status",
        &[
            ("MessageSid", "SM0000000000000000000000000000late"),
            ("MessageStatus", "delivered"),
            ("From", shop.number.as_str()),
            ("To", "+16505550131"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM sms_delivery_statuses WHERE status = 'delivered'"
        )
        .await,
        1
    );
}

pub(crate) async fn call(app: &TestApp, line: &Line, path: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("From", "+16505550141"),
        ("To", line.number.as_str()),
        ("AccountSid", ACCOUNT_SID),
    ];
    params.extend_from_slice(extra);
    let (status, twiml) = signed(app, line, path, &params).await;
    assert_eq!(status, 200, "{twiml}");
    twiml
}

#[tokio::test]
async fn a_phone_call_answers_from_the_knowledge_base_scrubs_its_transcript_and_dials_a_person() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Calling Co", "+14155550140").await;
    upload_ready(
        &app,
        &shop.site.tenant.token,
        &shop.site.agent_id,
        "Hours",
        "# Opening hours\n\nWe are open Monday to Friday from 8 am to 6 pm. Visit our site at https://calling.example.com for **directions**.",
    )
    .await;
    upload_ready(
        &app,
        &shop.site.tenant.token,
        &shop.site.agent_id,
        "Parking",
        "# Parking\n\nFree customer parking is behind the building, with 12 spaces and one charging point.",
    )
    .await;

    let greeting = call(
        &app,
        &shop,
        "/api/twilio/voice",
        &[("CallStatus", "ringing")],
    )
    .await;
    assert!(greeting.contains("<Gather input=\"speech\""), "{greeting}");
    assert!(
        greeting.contains(&format!("action=\"{PUBLIC}/api/twilio/voice/gather\"")),
        "{greeting}"
    );
    assert!(greeting.contains("How can I help"), "{greeting}");

    let hours = call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[
            ("SpeechResult", "When are you open?"),
            ("Confidence", "0.9"),
        ],
    )
    .await;
    assert!(hours.contains("<Gather"), "the call goes on: {hours}");
    let spoken = hours.split("<Say>").nth(1).unwrap();
    assert!(spoken.contains('8'), "{hours}");
    assert!(
        !spoken.contains("http") && !spoken.contains("**"),
        "{hours}"
    );
    let parking = call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[("SpeechResult", "Is there customer parking?")],
    )
    .await;
    let spoken = parking.split("<Say>").nth(1).unwrap();
    assert!(spoken.contains("behind the building"), "{parking}");

    call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[("SpeechResult", "My number is 415 555 0123, my name is Sam")],
    )
    .await;
    let transfer = call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[("SpeechResult", "Can I talk to a real person please")],
    )
    .await;
    assert!(transfer.contains("<Dial>+14155550199</Dial>"), "{transfer}");

    let ended = call(
        &app,
        &shop,
        "/api/twilio/voice/status",
        &[("CallStatus", "completed")],
    )
    .await;
    assert!(!ended.contains("<Say>"));

    let listed = body(
        app.get("/api/v1/conversations", &shop.site.tenant.token)
            .await,
    )
    .await;
    let conversation = &listed["conversations"][0];
    assert_eq!(conversation["channel"], "voice");
    assert_eq!(conversation["status"], "waiting_for_human");
    let id = conversation["id"].as_str().unwrap();
    let detail = body(
        app.get(
            &format!("/api/v1/conversations/{id}"),
            &shop.site.tenant.token,
        )
        .await,
    )
    .await;
    let transcript: Vec<String> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect();
    eprintln!("stored transcript:\n{}", transcript.join("\n"));
    assert_eq!(transcript.len(), 8, "{transcript:?}");
    assert_eq!(
        transcript[4],
        "visitor: My number is [PHONE], my name is Sam"
    );
    assert!(
        transcript
            .iter()
            .all(|line| !line.contains("555 0123") && !line.contains("5550123")),
        "{transcript:?}"
    );
    let audits = audit_rows(&app, id).await;
    eprintln!("audit rows: {audits:?}");
    let mut owner = app.owner_connection().await;
    assert_eq!(
        audits,
        [("phone".to_owned(), 1)],
        "one audit row, counts only"
    );
    let ended_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT ended_at FROM conversations WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert!(ended_at.is_some(), "the hang-up ended the conversation");

    // Silence ends the call politely.
    let silent = call(
        &app,
        &shop,
        "/api/twilio/voice/gather",
        &[("SpeechResult", "")],
    )
    .await;
    assert!(silent.contains("<Hangup"), "{silent}");
}

#[tokio::test]
async fn numbers_and_credentials_are_the_tenants_own_and_the_token_never_comes_back() {
    let app = spawn_app_with(twilio_settings).await;
    let shop = line(&app, "Numbers Co", "+14155550150").await;
    let other = site(&app, "Other Numbers Co").await;
    let token = &shop.site.tenant.token;

    let shown = body(app.get("/api/v1/twilio", token).await).await;
    assert_eq!(shown["account_sid"], ACCOUNT_SID);
    assert_eq!(shown["has_auth_token"], true);
    assert!(!shown.to_string().contains(&shop.auth_token));
    let mut owner = app.owner_connection().await;
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT auth_token_sealed FROM tenant_twilio_configs")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(&shop.auth_token));
    assert_error(
        app.get("/api/v1/twilio", &other.tenant.token).await,
        404,
        "not_found",
    )
    .await;
    for bad in [
        json!({ "account_sid": "AC123", "auth_token": "0123456789abcdef" }),
        json!({ "account_sid": ACCOUNT_SID, "auth_token": "short" }),
        json!({ "account_sid": ACCOUNT_SID, "auth_token": "0123456789abcdef", "escalation_number": "555" }),
    ] {
        let refused = app
            .request(reqwest::Method::PUT, "/api/v1/twilio", Some(token))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_error(refused, 422, "invalid").await;
    }

    // One number belongs to one tenant in the whole system.
    let taken = app
        .post_json(
            "/api/v1/phone-numbers",
            Some(&other.tenant.token),
            &json!({ "number": shop.number, "agent_id": other.agent_id }),
        )
        .await;
    assert_error(taken, 409, "conflict").await;
    let foreign_agent = app
        .post_json(
            "/api/v1/phone-numbers",
            Some(&other.tenant.token),
            &json!({ "number": "+14155550151", "agent_id": shop.site.agent_id }),
        )
        .await;
    assert_error(foreign_agent, 422, "invalid").await;
    let not_e164 = app
        .post_json(
            "/api/v1/phone-numbers",
            Some(token),
            &json!({ "number": "415-555-0152", "agent_id": shop.site.agent_id }),
        )
        .await;
    assert_error(not_e164, 422, "invalid").await;
    let listed = body(app.get("/api/v1/phone-numbers", token).await).await;
    let id = listed["phone_numbers"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        app.get(&format!("/api/v1/phone-numbers/{id}"), &other.tenant.token)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.delete(&format!("/api/v1/phone-numbers/{id}"), token)
            .await
            .status(),
        204
    );
    // A number no tenant has is nobody's to answer.
    let (status, _) = text(&app, &shop, "+16505550153", "Hello").await;
    assert_eq!(status, 404);
}
