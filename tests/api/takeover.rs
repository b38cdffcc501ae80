//! Live takeover across instances: the visitor's widget on instance A, the
//! team member's dashboard on instance B, one PostgreSQL and one Redis.
//! The escalation reaches B's dashboard stream, the member takes over and
//! replies, the visitor hears it live on A and answers, the agent stays
//! silent, hand back returns the agent, and the transcript is stored once,
//! in order.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::chat_support::{reply, say, site, visitor, visitor_token, Site, ORIGIN};
use crate::helpers::{assert_error, body, create_token, spawn_app, spawn_app_on, TestApp};

/// A server-sent event as a client reads it, with its `id`.
#[derive(Debug)]
struct Received {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads an event stream as it arrives.
struct EventStream(mpsc::UnboundedReceiver<Received>);

impl EventStream {
    fn follow(response: Response) -> Self {
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut bytes = response.bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = bytes.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    if let Some(event) = parse_block(&block) {
                        if sender.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Self(receiver)
    }

    /// The next event named `name`, skipping others; panics after 10 s.
    async fn next(&mut self, name: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, self.0.recv())
                .await
                .unwrap_or_else(|_| panic!("no {name} event within 10 s"))
                .expect("the stream ended");
            if event.event == name {
                return event;
            }
        }
    }

    /// Nothing named `name` arrives within `wait`.
    async fn quiet(&mut self, name: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Ok(Some(event)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.0.recv(),
        )
        .await
        {
            assert_ne!(event.event, name, "unexpected {event:?}");
        }
    }
}

fn parse_block(block: &str) -> Option<Received> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    let event = event?;
    Some(Received {
        event,
        id,
        data: serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null),
    })
}

async fn dashboard_events(app: &TestApp, token: &str, last: Option<&str>) -> Response {
    let mut request = app
        .request(Method::GET, "/api/v1/events", Some(token))
        .header("accept", "text/event-stream");
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

async fn widget_events(app: &TestApp, token: &str, last: Option<&str>) -> Response {
    let mut request = visitor(
        app,
        Method::GET,
        "/api/widget/events",
        Some(token),
        Some(ORIGIN),
    )
    .header("accept", "text/event-stream");
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    request.send().await.unwrap()
}

async fn act(app: &TestApp, token: &str, conversation: &str, action: &str) -> Response {
    app.post_json(
        &format!("/api/v1/conversations/{conversation}/{action}"),
        Some(token),
        &json!({}),
    )
    .await
}

async fn reply_as_team(app: &TestApp, token: &str, conversation: &str, text: &str) -> Response {
    app.post_json(
        &format!("/api/v1/conversations/{conversation}/messages"),
        Some(token),
        &json!({ "text": text }),
    )
    .await
}

/// Two instances on one database and one Redis, and a site on them.
async fn two_instances(name: &str) -> (TestApp, TestApp, Site) {
    let first = spawn_app().await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        first.database_name(),
        move |settings| settings.redis.prefix = prefix,
        false,
    )
    .await;
    let site = site(&first, name).await;
    (first, second, site)
}

/// The one conversation of the site's tenant.
async fn only_conversation(app: &TestApp, token: &str) -> String {
    let listed = body(app.get("/api/v1/conversations", token).await).await;
    let conversations = listed["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 1, "{listed}");
    conversations[0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_team_member_on_another_instance_takes_over_replies_live_and_hands_back() {
    let (a, b, site) = two_instances("Takeover Co").await;
    let owner = &site.tenant.token;
    let member = b.create_member(site.tenant.id).await;
    let guest = visitor_token(&a, &site.public_key).await;

    // The dashboard listens on B, the widget on A.
    let mut dashboard = EventStream::follow(dashboard_events(&b, &member, None).await);
    let mut widget = EventStream::follow(widget_events(&a, &guest, None).await);
    assert_eq!(widget.next("state").await.data, json!({ "state": "agent" }));

    reply(&a, &guest, "What time do you open?").await;
    let conversation = only_conversation(&b, owner).await;
    // An agent-answered conversation is nobody's live business.
    dashboard.quiet("message", Duration::from_millis(300)).await;

    // The escalation reaches B's dashboard without a reload.
    let answer = reply(&a, &guest, "Can I talk to a real person?").await;
    assert!(answer.contains("person on the team"), "{answer}");
    let escalated = dashboard.next("conversation").await;
    assert_eq!(escalated.data["conversation"]["id"], conversation.as_str());
    assert_eq!(escalated.data["conversation"]["state"], "waiting");
    let first_id = escalated.id.clone().expect("dashboard events have ids");
    let agent_reply = dashboard.next("message").await;
    assert_eq!(agent_reply.data["conversation_id"], conversation.as_str());
    assert_eq!(agent_reply.data["message"]["content"], answer.as_str());
    assert_eq!(agent_reply.data["message"]["human"], false);
    let waiting = body(b.get("/api/v1/conversations?state=waiting", &member).await).await;
    assert_eq!(
        waiting["conversations"][0]["id"],
        conversation.as_str(),
        "{waiting}"
    );

    // A member (not only a manager) takes it over on B; nobody else can.
    let taken = act(&b, &member, &conversation, "takeover").await;
    assert_eq!(taken.status(), 200);
    let taken = body(taken).await;
    assert_eq!(taken["conversation"]["state"], "human");
    assert!(taken["conversation"]["taken_over_by"].is_string());
    assert_eq!(
        widget.next("state").await.data,
        json!({ "state": "human" }),
        "the visitor hears of it live"
    );
    assert_eq!(
        dashboard.next("conversation").await.data["conversation"]["state"],
        "human"
    );
    assert_error(
        act(&a, owner, &conversation, "takeover").await,
        409,
        "conflict",
    )
    .await;
    let again = act(&b, &member, &conversation, "takeover").await;
    assert_eq!(
        again.status(),
        200,
        "taking one's own over again changes nothing"
    );

    // The agent stays silent: the visitor's message is held for the person.
    let held = say(&a, &guest, "Are you a real person?").await;
    assert_eq!(held.status(), 202);
    assert_eq!(body(held).await, json!({ "reply": null, "held": true }));
    let heard = dashboard.next("message").await;
    assert_eq!(heard.data["message"]["role"], "visitor");
    assert_eq!(heard.data["message"]["content"], "Are you a real person?");

    // The member's reply on B reaches the widget on A live, sanitized, marked human.
    let sent_at = Instant::now();
    let stored = reply_as_team(
        &b,
        &member,
        &conversation,
        "Yes! <b>I'm</b> Dana <script>alert(1)</script>from the team.",
    )
    .await;
    assert_eq!(stored.status(), 201);
    let stored = body(stored).await["message"].clone();
    assert_eq!(stored["content"], "Yes! I'm Dana from the team.");
    assert_eq!(stored["human"], true);
    let live = loop {
        let event = widget.next("message").await;
        if event.data["human"] == true {
            break event;
        }
    };
    let round_trip = sent_at.elapsed();
    eprintln!("takeover reply round trip, instance B to the widget on A: {round_trip:?}");
    assert_eq!(live.data["content"], "Yes! I'm Dana from the team.");
    assert_eq!(live.data["id"], stored["id"]);
    assert_eq!(live.id.as_deref(), Some(stored["seq"].to_string().as_str()));
    for hidden in ["conversation_id", "tenant_id", "agent_id", "sent_by"] {
        assert!(
            live.data.get(hidden).is_none(),
            "{hidden} reached the visitor"
        );
    }
    assert_error(
        reply_as_team(&a, owner, &conversation, "I am not the one who took it").await,
        409,
        "conflict",
    )
    .await;

    // The team member's dashboards hear the reply too, in order.
    let echoed = dashboard.next("message").await;
    assert_eq!(echoed.data["message"]["id"], stored["id"]);
    assert_eq!(echoed.data["message"]["human"], true);

    let held = say(&a, &guest, "Thanks Dana").await;
    assert_eq!(held.status(), 202);
    assert_eq!(
        dashboard.next("message").await.data["message"]["content"],
        "Thanks Dana"
    );

    // Handed back, the agent answers again.
    let returned = act(&b, &member, &conversation, "handback").await;
    assert_eq!(returned.status(), 200);
    assert_eq!(body(returned).await["conversation"]["state"], "agent");
    assert_eq!(widget.next("state").await.data, json!({ "state": "agent" }));
    let answered = reply(&a, &guest, "What time do you open?").await;
    assert!(!answered.is_empty());

    // The transcript: each message once, in order, the person's marked human.
    let detail = body(
        b.get(&format!("/api/v1/conversations/{conversation}"), owner)
            .await,
    )
    .await;
    let messages = detail["messages"].as_array().unwrap();
    let shape: Vec<(&str, bool)> = messages
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["human"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        shape,
        [
            ("visitor", false),
            ("assistant", false),
            ("visitor", false),
            ("assistant", false),
            ("visitor", false),
            ("assistant", true),
            ("visitor", false),
            ("visitor", false),
            ("assistant", false),
        ],
        "{detail}"
    );
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    let mut ids: Vec<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), messages.len());
    // The widget's own transcript shows the person's reply as such.
    let transcript = body(
        visitor(
            &a,
            Method::GET,
            "/api/widget/messages",
            Some(&guest),
            Some(ORIGIN),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(transcript["messages"][5]["human"], true, "{transcript}");

    // A widget that reconnects resumes after its last message: the
    // person's reply once, then what followed, from either instance.
    let before_reply = (stored["seq"].as_i64().unwrap() - 1).to_string();
    let mut resumed = EventStream::follow(widget_events(&b, &guest, Some(&before_reply)).await);
    assert_eq!(
        resumed.next("state").await.data,
        json!({ "state": "agent" })
    );
    let replayed = resumed.next("message").await;
    assert_eq!(replayed.data["id"], stored["id"]);
    assert_eq!(resumed.next("message").await.data["content"], "Thanks Dana");

    // A dashboard that reconnects gets what it missed after its last event.
    let mut caught_up = EventStream::follow(dashboard_events(&a, &member, Some(&first_id)).await);
    let missed = caught_up.next("message").await;
    assert_eq!(missed.data["message"]["content"], answer.as_str());
    assert_eq!(
        caught_up.next("conversation").await.data["conversation"]["state"],
        "human"
    );
}

#[tokio::test]
async fn takeover_refuses_what_it_must_with_clear_errors() {
    let app = spawn_app().await;
    let site = site(&app, "Takeover Rules Co").await;
    let owner = &site.tenant.token;
    let guest = visitor_token(&app, &site.public_key).await;
    reply(&app, &guest, "Hello there").await;
    let conversation = only_conversation(&app, owner).await;

    // Only signed-in team members: no operator, no API token.
    let operator = app.operator_token().await;
    let refused = act(&app, &operator, &conversation, "takeover").await;
    assert!(
        matches!(refused.status().as_u16(), 401 | 403),
        "{}",
        refused.status()
    );
    let (_, api_token) = create_token(&app, owner, &["conversations:read"]).await;
    assert_error(
        act(&app, &api_token, &conversation, "takeover").await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        dashboard_events(&app, &api_token, None).await,
        403,
        "forbidden",
    )
    .await;

    // Unknown conversations, another tenant's included, are not found.
    let other = app.create_tenant("Someone Else Co").await;
    assert_error(
        act(&app, &other.token, &conversation, "takeover").await,
        404,
        "not_found",
    )
    .await;
    let unknown = uuid::Uuid::now_v7();
    assert_error(
        act(&app, owner, &unknown.to_string(), "takeover").await,
        404,
        "not_found",
    )
    .await;

    // Replying or handing back needs a takeover first.
    assert_error(
        reply_as_team(&app, owner, &conversation, "Hi").await,
        409,
        "conflict",
    )
    .await;
    assert_error(
        act(&app, owner, &conversation, "handback").await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(
        act(&app, owner, &conversation, "takeover").await.status(),
        200
    );
    for (text, why) in [
        ("   ", "empty"),
        ("<script>alert(1)</script>", "markup only"),
    ] {
        let response = reply_as_team(&app, owner, &conversation, text).await;
        assert_eq!(response.status(), 422, "{why}");
    }
    let too_long = "a".repeat(app.settings.widget.max_message_chars + 1);
    assert_eq!(
        reply_as_team(&app, owner, &conversation, &too_long)
            .await
            .status(),
        422
    );
    let wrong_shape = app
        .post_json(
            &format!("/api/v1/conversations/{conversation}/messages"),
            Some(owner),
            &json!({ "text": "hi", "human": false }),
        )
        .await;
    assert_eq!(wrong_shape.status(), 422);

    // A member cannot hand back the owner's takeover; a manager may hand back a member's.
    let member = app.create_member(site.tenant.id).await;
    assert_error(
        act(&app, &member, &conversation, "handback").await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(
        act(&app, owner, &conversation, "handback").await.status(),
        200
    );
    assert_eq!(
        act(&app, &member, &conversation, "takeover").await.status(),
        200
    );
    assert_eq!(
        act(&app, owner, &conversation, "handback").await.status(),
        200
    );

    // An ended conversation cannot be taken over.
    let ended = visitor(
        &app,
        Method::POST,
        "/api/widget/session/end",
        Some(&guest),
        Some(ORIGIN),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ended.status(), 204);
    let mut owner_db = app.owner_connection().await;
    sqlx::query("UPDATE conversations SET ended_at = now() WHERE id = $1::uuid")
        .bind(&conversation)
        .execute(&mut owner_db)
        .await
        .unwrap();
    assert_error(
        act(&app, owner, &conversation, "takeover").await,
        409,
        "conflict",
    )
    .await;

    // Filters and resume points are checked.
    assert_error(
        app.get("/api/v1/conversations?state=sleeping", owner).await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        dashboard_events(&app, owner, Some("not-an-id")).await,
        400,
        "bad_request",
    )
    .await;
    let fresh = visitor_token(&app, &site.public_key).await;
    assert_error(
        widget_events(&app, &fresh, Some("x")).await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        widget_events(&app, &fresh, Some("-5")).await,
        400,
        "bad_request",
    )
    .await;
    // And a widget's stream needs an origin the widget allows.
    let foreign = visitor(
        &app,
        Method::GET,
        "/api/widget/events",
        Some(&fresh),
        Some("https://evil.example"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(foreign.status(), 403);
}

#[tokio::test]
async fn every_instance_hears_every_live_event_in_order_and_resumes_after_an_id() {
    let app = spawn_app().await;
    let second = agentry::live::LiveHub::new(&app.state.bus).unwrap();
    let second = std::sync::Arc::new(second);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut heard = second.subscribe();
    let mut heard_by_first = app.state.live.subscribe();
    let reader = tokio::spawn(second.clone().run(stopped));
    // The reader starts after the stream's newest entry: let it find it first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tenant = agentry_actors::TenantId::new();
    let conversation = agentry_actors::ConversationId::new();
    let message = |seq: i64| agentry::live::LiveEvent::Message {
        message: agentry::db::chat::Message {
            id: uuid::Uuid::now_v7(),
            seq,
            role: agentry_actors::ports::MessageRole::Visitor,
            content: format!("line {seq}"),
            created_at: chrono::Utc::now(),
            human: false,
        },
    };
    // Published through the first instance's hub, heard by the second's reader.
    let mut ids = Vec::new();
    for seq in 0..3 {
        ids.push(
            app.state
                .live
                .publish(tenant, conversation, message(seq))
                .await
                .unwrap(),
        );
    }
    for (seq, id) in ids.iter().enumerate() {
        let entry = tokio::time::timeout(Duration::from_secs(10), heard.events.recv())
            .await
            .expect("heard within 10 s")
            .unwrap();
        assert_eq!(&entry.id, id);
        assert_eq!(entry.tenant, tenant);
        assert_eq!(entry.event, message_with_seq(&entry.event, seq as i64));
    }
    let first_heard = tokio::time::timeout(Duration::from_secs(10), heard_by_first.events.recv())
        .await
        .expect("the publishing instance hears it too")
        .unwrap();
    assert_eq!(first_heard.id, ids[0]);
    let resumed = second.since(&ids[0], tenant).await.unwrap();
    assert_eq!(
        resumed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        ids[1..]
    );
    assert!(second
        .since(&ids[0], agentry_actors::TenantId::new())
        .await
        .unwrap()
        .is_empty());
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
}

/// `event` if it is the message at `seq` (its other fields as they came).
fn message_with_seq(event: &agentry::live::LiveEvent, seq: i64) -> agentry::live::LiveEvent {
    match event {
        agentry::live::LiveEvent::Message { message } if message.seq == seq => event.clone(),
        other => panic!("expected the message at {seq}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_visitor_cannot_open_event_streams_without_bound() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.rate_limits.enabled = true;
        settings.rate_limits.widget_messages = 2;
    })
    .await;
    let site = site(&app, "Stream Limits Co").await;
    let guest = visitor_token(&app, &site.public_key).await;
    // Each stream counts on widget_messages, like a message: two, then a 429.
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = widget_events(&app, &guest, None).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-ratelimit-remaining"));
        open.push(EventStream::follow(response));
    }
    let refused = widget_events(&app, &guest, None).await;
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        ORIGIN,
        "the widget can read the refusal"
    );
    assert_error(refused, 429, "rate_limited").await;
}
