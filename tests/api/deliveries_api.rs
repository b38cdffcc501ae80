//! `/api/v1/webhook-deliveries`: the record of attempts, filtered and paged,
//! and redelivery; a tenant sees and redelivers only its own.

use std::collections::HashSet;
use std::time::Duration;

use agentry::webhook_delivery::webhook_id;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::dispatch::{commit_events, endpoint, eventually, rows, Receiver};
use crate::helpers::{assert_error, body, spawn_app_with, TestApp};

async fn list(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/webhook-deliveries{query}"), token)
        .await;
    assert_eq!(response.status(), 200, "{query}");
    body(response).await
}

fn ids(page: &Value) -> Vec<String> {
    page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn deliveries_are_listed_by_endpoint_state_type_and_time_in_pages_and_redelivered() {
    // One retry a second after the first failure, then failed.
    let app = spawn_app_with(|settings| settings.webhooks.retry_delays_secs = vec![1]).await;
    let tenant = app.create_tenant("Record Co").await;
    let ok = Receiver::answering(200).await;
    let ok_endpoint = endpoint(&app, &tenant, &ok.url("127.0.0.1")).await;
    let broken = Receiver::answering(500).await;
    let broken_endpoint = endpoint(&app, &tenant, &broken.url("127.0.0.1")).await;
    let events = commit_events(&app, tenant.id, 3).await;
    eventually(
        Duration::from_secs(15),
        "every attempt on record",
        || async {
            let done = rows(&app, ok_endpoint).await.len() == 3
                && rows(&app, broken_endpoint).await.len() == 6;
            done.then_some(())
        },
    )
    .await;

    let token = &tenant.token;
    let mine = list(&app, token, &format!("?endpoint_id={ok_endpoint}")).await;
    let deliveries = mine["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    for delivery in deliveries {
        assert_eq!(delivery["state"], "success");
        assert_eq!(delivery["response_status"], 200);
        let event: Uuid = delivery["event_id"].as_str().unwrap().parse().unwrap();
        assert!(events.contains(&event));
        assert_eq!(delivery["webhook_id"], webhook_id(event, ok_endpoint));
    }
    assert!(mine["next_cursor"].is_null());

    let failed = list(&app, token, "?state=failed").await;
    let failed = failed["deliveries"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    assert!(failed
        .iter()
        .all(|d| d["endpoint_id"] == broken_endpoint.to_string() && d["attempt"] == 2));
    let retrying = list(&app, token, "?state=retrying&event_type=lead.created").await;
    assert!(retrying["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["next_attempt_at"].is_string()));
    assert_eq!(ids(&retrying).len(), 3);
    assert!(ids(&list(&app, token, "?event_type=lead.updated").await).is_empty());
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let earlier = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let query = |name: &str, at: &str| format!("?{name}={}", urlencode(at));
    assert!(ids(&list(&app, token, &query("created_after", &later)).await).is_empty());
    assert_eq!(
        ids(&list(&app, token, &query("created_after", &earlier)).await).len(),
        9
    );

    // Pages of two, newest first, cover all nine once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=2&cursor={cursor}"),
            None => "?limit=2".to_owned(),
        };
        let page = list(&app, token, &query).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2);
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 9);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    // Bad filters are the caller's error, said plainly.
    for bad in [
        "?state=pending",
        "?event_type=lead.deleted",
        "?limit=0",
        "?limit=201",
        "?endpoint_id=not-a-uuid",
        "?created_after=yesterday",
        "?colour=blue",
    ] {
        let response = app
            .get(&format!("/api/v1/webhook-deliveries{bad}"), token)
            .await;
        assert_error(response, 400, "bad_request").await;
    }
    let inverted = format!(
        "?created_after={}&created_before={}",
        urlencode(&later),
        urlencode(&earlier)
    );
    let response = app
        .get(&format!("/api/v1/webhook-deliveries{inverted}"), token)
        .await;
    assert_error(response, 400, "bad_request").await;

    // Redelivery: a new attempt, numbered after the last, same webhook-id.
    let delivered = &deliveries[0];
    let event: Uuid = delivered["event_id"].as_str().unwrap().parse().unwrap();
    let path = format!(
        "/api/v1/webhook-deliveries/{}/redeliver",
        delivered["id"].as_str().unwrap()
    );
    let other = app.create_tenant("Other Co").await;
    let response = app
        .request(Method::POST, &path, Some(&other.token))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app
        .request(Method::POST, &path, Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let scheduled = body(response).await;
    assert_eq!(scheduled["attempt"], 2);
    assert_eq!(scheduled["webhook_id"], webhook_id(event, ok_endpoint));
    eventually(Duration::from_secs(10), "the redelivery", || async {
        let again = ok
            .delivered()
            .iter()
            .filter(|seen| seen.webhook_id == webhook_id(event, ok_endpoint))
            .count();
        (again == 2).then_some(())
    })
    .await;
    let record = eventually(
        Duration::from_secs(5),
        "the redelivery on record",
        || async {
            let record: Vec<_> = rows(&app, ok_endpoint)
                .await
                .into_iter()
                .filter(|row| row.event_id == event)
                .collect();
            (record.len() == 2).then_some(record)
        },
    )
    .await;
    assert_eq!(
        record
            .iter()
            .map(|row| (row.attempt, row.outcome.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "success"), (2, "success")]
    );
    let missing = format!("/api/v1/webhook-deliveries/{}/redeliver", Uuid::now_v7());
    let response = app
        .request(Method::POST, &missing, Some(token))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
    // The other tenant's list is empty: the record is per tenant.
    assert!(ids(&list(&app, &other.token, "").await).is_empty());
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn members_read_the_record_but_only_managers_redeliver_and_never_to_a_disabled_endpoint() {
    let app = crate::helpers::spawn_app().await;
    let tenant = app.create_tenant("Roles Record Co").await;
    let receiver = Receiver::answering(200).await;
    let endpoint_id = endpoint(&app, &tenant, &receiver.url("127.0.0.1")).await;
    commit_events(&app, tenant.id, 1).await;
    let delivered = eventually(Duration::from_secs(10), "the delivery", || async {
        rows(&app, endpoint_id).await.into_iter().next()
    })
    .await;
    assert_eq!(delivered.outcome, "success");
    let listed = list(&app, &tenant.token, "").await;
    let id = listed["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/webhook-deliveries/{id}/redeliver");

    let member = app.create_member(tenant.id).await;
    assert_eq!(ids(&list(&app, &member, "").await), vec![id.clone()]);
    let response = app
        .request(Method::POST, &path, Some(&member))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "forbidden").await;

    let disabled = app
        .patch_json(
            &format!("/api/v1/webhook-endpoints/{endpoint_id}"),
            &tenant.token,
            &serde_json::json!({"enabled": false}),
        )
        .await;
    assert_eq!(disabled.status(), 200);
    let response = app
        .request(Method::POST, &path, Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "conflict").await;
    let response = app
        .request(
            Method::POST,
            "/api/v1/webhook-deliveries/not-a-uuid/redeliver",
            Some(&tenant.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16() / 100,
        4,
        "a malformed id is the caller's error"
    );
    assert_eq!(receiver.delivered().len(), 1, "nothing was sent again");
}
