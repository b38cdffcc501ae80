//! Leads: found by one key at a time, and the dashboard API over them.

use agentry::db::leads::{self, Contact, LeadChange};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, body, spawn_app, TestApp, TestTenant};

async fn post_lead(app: &TestApp, tenant: &TestTenant, lead: Value) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/leads", Some(&tenant.token))
        .json(&lead)
        .send()
        .await
        .unwrap()
}

async fn get_json(app: &TestApp, tenant: &TestTenant, path: &str) -> (u16, Value) {
    let response = app
        .request(Method::GET, path, Some(&tenant.token))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), body(response).await)
}

#[tokio::test]
async fn a_shared_household_phone_never_merges_two_people() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Household Co").await;
    let mut tx = app.store.tenant(tenant.id).await.unwrap();
    let phone = Some("+14155552671");
    let ana = Contact {
        name: Some("Ana"),
        email: Some("ana@example.com"),
        phone,
    };
    let ben = Contact {
        name: Some("Ben"),
        email: Some("ben@example.com"),
        phone,
    };
    let (ana_lead, change) = leads::find_or_create(&mut tx, &ana, None).await.unwrap();
    assert_eq!(change, LeadChange::Created);
    let (ben_lead, change) = leads::find_or_create(&mut tx, &ben, None).await.unwrap();
    assert_eq!(
        change,
        LeadChange::Created,
        "same phone, another email: another person"
    );
    assert_ne!(ana_lead.id, ben_lead.id);
    let (again, change) = leads::find_or_create(&mut tx, &ana, None).await.unwrap();
    assert_eq!(change, LeadChange::Unchanged);
    assert_eq!(again.id, ana_lead.id, "found again by email");

    // A visitor who gives only the shared phone could be either: a lead of their own.
    let phone_only = Contact {
        phone,
        ..Contact::default()
    };
    let (caller, change) = leads::find_or_create(&mut tx, &phone_only, None)
        .await
        .unwrap();
    assert_eq!(change, LeadChange::Created);
    assert!(![ana_lead.id, ben_lead.id].contains(&caller.id));
    let (same_caller, change) = leads::find_or_create(&mut tx, &phone_only, None)
        .await
        .unwrap();
    assert_eq!(change, LeadChange::Unchanged);
    assert_eq!(same_caller.id, caller.id, "and found again by that phone");
    tx.commit().await.unwrap();

    let (status, list) = get_json(&app, &tenant, "/api/v1/leads").await;
    assert_eq!(status, 200);
    assert_eq!(list["leads"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_same_new_details_left_at_once_make_one_lead() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Rush Co").await;
    let attempts = (0..8).map(|_| {
        let store = app.store.clone();
        async move {
            let mut tx = store.tenant(tenant.id).await.unwrap();
            let contact = Contact {
                email: Some("rush@example.com"),
                ..Contact::default()
            };
            let (lead, change) = leads::find_or_create(&mut tx, &contact, None)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            (lead.id, change)
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let ids: std::collections::HashSet<_> = results.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    let created = results
        .iter()
        .filter(|(_, change)| *change == LeadChange::Created)
        .count();
    assert_eq!(created, 1);
}

#[tokio::test]
async fn leads_are_created_read_annotated_and_paged_through_the_api() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Lead Co").await;
    let created = post_lead(
        &app,
        &tenant,
        json!({"name": "Ana Lopez", "email": "Ana@Example.com", "phone": "+1 (415) 555-2671"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    let lead = body(created).await;
    assert_eq!(lead["email"], "ana@example.com");
    assert_eq!(lead["phone"], "+14155552671");
    assert_eq!(lead["notes"], "");
    let path = format!("/api/v1/leads/{}", lead["id"].as_str().unwrap());

    let updated = app
        .request(Method::PATCH, &path, Some(&tenant.token))
        .json(&json!({"notes": "Wants a quote for a crown.\nCall after 5."}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    let (status, read) = get_json(&app, &tenant, &path).await;
    assert_eq!(status, 200);
    assert_eq!(read["notes"], "Wants a quote for a crown.\nCall after 5.");

    assert_error(
        post_lead(&app, &tenant, json!({"email": "ana@example.com"})).await,
        409,
        "conflict",
    )
    .await;
    for bad in [
        json!({"name": "No contact"}),
        json!({"phone": "555-2671"}),
        json!({"email": "not an email"}),
        json!({"email": "a@b.example", "notes": "x".repeat(10_001)}),
    ] {
        assert_error(post_lead(&app, &tenant, bad.clone()).await, 422, "invalid").await;
    }
    assert_error(
        post_lead(
            &app,
            &tenant,
            json!({"email": "a@b.example", "owner": "me"}),
        )
        .await,
        422,
        "invalid",
    )
    .await;

    for n in 0..4 {
        let response =
            post_lead(&app, &tenant, json!({"email": format!("p{n}@example.com")})).await;
        assert_eq!(response.status(), 201);
    }
    // Five leads, newest first, two a page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/leads?limit=2&cursor={cursor}"),
            None => "/api/v1/leads?limit=2".to_owned(),
        };
        let (status, page) = get_json(&app, &tenant, &path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for lead in page["leads"].as_array().unwrap() {
            seen.push(lead["email"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        [
            "p3@example.com",
            "p2@example.com",
            "p1@example.com",
            "p0@example.com",
            "ana@example.com"
        ]
    );
    let (status, none) = get_json(
        &app,
        &tenant,
        "/api/v1/leads?created_after=2999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(none["leads"], json!([]));
    for bad in [
        "limit=0",
        "limit=1000",
        "cursor=nope",
        "created_after=yesterday",
        "sort=name",
    ] {
        let (status, error) = get_json(&app, &tenant, &format!("/api/v1/leads?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {error}");
        assert!(error["error"]["message"].is_string(), "{bad}");
    }

    // Another tenant sees none of them, and gets 404 for one by id.
    let other = app.create_tenant("Other Co").await;
    let (status, list) = get_json(&app, &other, "/api/v1/leads").await;
    assert_eq!((status, list["leads"].clone()), (200, json!([])));
    let (status, _) = get_json(&app, &other, &path).await;
    assert_eq!(status, 404);
}
