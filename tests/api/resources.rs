//! Agents and widgets through the dashboard API.

use serde_json::json;

use crate::helpers::{assert_error, body, spawn_app};

#[tokio::test]
async fn agents_can_be_created_read_updated_and_deleted() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Agents Co").await;
    let created = app
        .post_json(
            "/api/v1/agents",
            Some(&tenant.token),
            &json!({
                "name": "  Front desk  ",
                "system_prompt": "Answer briefly.",
                "profile": { "brand": "Agents Co", "facts": ["Open 9-5"], "escalation_topics": ["refunds"] }
            }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let agent = body(created).await;
    assert_eq!(agent["name"], "Front desk");
    assert_eq!(agent["profile"]["facts"], json!(["Open 9-5"]));
    assert_eq!(agent["profile"]["competitors"], json!([]));
    let path = format!("/api/v1/agents/{}", agent["id"].as_str().unwrap());

    let updated = body(
        app.patch_json(
            &path,
            &tenant.token,
            &json!({ "system_prompt": "Answer warmly." }),
        )
        .await,
    )
    .await;
    assert_eq!(updated["system_prompt"], "Answer warmly.");
    assert_eq!(updated["name"], "Front desk", "untouched fields stay");

    let listed = body(app.get("/api/v1/agents", &tenant.token).await).await;
    assert_eq!(listed["agents"].as_array().unwrap().len(), 1);
    assert_eq!(
        body(app.get(&path, &tenant.token).await).await["system_prompt"],
        "Answer warmly."
    );

    assert_eq!(app.delete(&path, &tenant.token).await.status(), 204);
    assert_error(app.get(&path, &tenant.token).await, 404, "not_found").await;
    assert_error(app.delete(&path, &tenant.token).await, 404, "not_found").await;
}

#[tokio::test]
async fn widgets_get_a_public_key_and_normalized_origins() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Widgets Co").await;
    let agent = app.create_agent(&tenant.token, "Chat").await;
    let widgets_path = format!("/api/v1/agents/{}/widgets", agent["id"].as_str().unwrap());
    let response = app
        .post_json(
            &widgets_path,
            Some(&tenant.token),
            &json!({ "allowed_origins": ["HTTPS://Shop.Example.com", "https://shop.example.com:443", "http://127.0.0.1:8080"] }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let widget = body(response).await;
    let key = widget["public_key"].as_str().unwrap();
    assert!(key.starts_with("pk_") && key.len() == 35, "{key}");
    assert_eq!(
        widget["allowed_origins"],
        json!(["https://shop.example.com", "http://127.0.0.1:8080"])
    );

    let widget_path = format!("{widgets_path}/{}", widget["id"].as_str().unwrap());
    let updated = body(
        app.patch_json(
            &widget_path,
            &tenant.token,
            &json!({ "allowed_origins": ["https://new.example.org"] }),
        )
        .await,
    )
    .await;
    assert_eq!(
        updated["allowed_origins"],
        json!(["https://new.example.org"])
    );
    assert_eq!(
        updated["public_key"], key,
        "the key survives origin changes"
    );

    let listed = body(app.get(&widgets_path, &tenant.token).await).await;
    assert_eq!(listed["widgets"].as_array().unwrap().len(), 1);

    for bad in [
        json!(["*"]),
        json!(["https://shop.example.com/path"]),
        json!(["shop.example.com"]),
        json!("https://x.com"),
    ] {
        assert_error(
            app.post_json(
                &widgets_path,
                Some(&tenant.token),
                &json!({ "allowed_origins": bad }),
            )
            .await,
            422,
            "invalid",
        )
        .await;
    }

    assert_eq!(app.delete(&widget_path, &tenant.token).await.status(), 204);
    assert_error(app.get(&widget_path, &tenant.token).await, 404, "not_found").await;
}

#[tokio::test]
async fn deleting_an_agent_removes_its_widgets() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("Cascade Co").await;
    let agent = app.create_agent(&tenant.token, "Temp").await;
    let agent_id = agent["id"].as_str().unwrap();
    let widget = app.create_widget(&tenant.token, agent_id).await;
    assert_eq!(
        app.delete(&format!("/api/v1/agents/{agent_id}"), &tenant.token)
            .await
            .status(),
        204
    );
    let mut owner = app.owner_connection().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets WHERE id = $1::uuid")
        .bind(widget["id"].as_str().unwrap())
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
