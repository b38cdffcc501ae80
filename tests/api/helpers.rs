//! `spawn_app`: the real application on a random port, against a fresh
//! PostgreSQL database and a unique Redis key prefix, so tests run in parallel
//! without seeing each other.

use std::collections::HashMap;

use agentry::configuration::Settings;
use agentry::db::{bootstrap, Store};
use agentry::seed::SeededDemo;
use agentry::startup::Application;
use agentry_actors::TenantId;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::oneshot;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    /// `http://host:port` of the metrics listener (`/metrics` is not on `address`).
    pub metrics_address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub store: Store,
    pub seeded_demo: Option<SeededDemo>,
    pub state: agentry::http::AppState,
    pub database: String,
    shutdown: Option<oneshot::Sender<()>>,
    drop_database: bool,
}

/// Serves `router` on a free loopback port for the rest of the test; its address.
pub async fn serve_locally(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

/// Settings for the test profile, honouring DATABASE_URL and REDIS_URL from the environment.
pub fn test_settings() -> Settings {
    let mut env: HashMap<String, String> = std::env::vars()
        .filter(|(name, _)| name == "DATABASE_URL" || name == "REDIS_URL")
        .collect();
    env.insert("AGENTRY_ENV".into(), "test".into());
    Settings::load_from(env).expect("test settings load")
}

/// Where a test database's call recordings are kept (removed with the database).
pub fn recordings_dir(database: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("agentry-recordings-{database}"))
}

fn with_database(settings: &mut Settings, database: &str) {
    let mut url = url::Url::parse(settings.database.url.expose()).expect("database url");
    url.set_path(&format!("/{database}"));
    settings.database.url = agentry_actors::Secret::new(url.to_string());
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = format!("agentry_test_{}", Uuid::new_v4().simple());
    spawn_app_on(&database, configure, true).await
}

/// Starts the app on a named database; `drop_database` removes it when the TestApp drops.
pub async fn spawn_app_on(
    database: &str,
    configure: impl FnOnce(&mut Settings),
    drop_database: bool,
) -> TestApp {
    static LOG: std::sync::Once = std::sync::Once::new();
    LOG.call_once(|| {
        if let Ok(filter) = std::env::var("AGENTRY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
    let mut settings = test_settings();
    with_database(&mut settings, database);
    settings.redis.prefix = format!("agentry-test-{}", Uuid::new_v4().simple());
    // Instances sharing a database share its recordings, as they would a bucket.
    settings.recordings.path = recordings_dir(database).to_string_lossy().into_owned();
    configure(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let address = format!("http://{}", app.local_addr().expect("bound address"));
    let metrics_address = format!("http://{}", app.metrics_addr().expect("metrics address"));
    let store = Store::new(app.state().store.pool().clone());
    let state = app.state();
    let (shutdown, stop) = oneshot::channel::<()>();
    let mut app = app;
    let seeded_demo = app.seeded_demo.take();
    tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = stop.await;
            })
            .await;
    });
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        settings,
        store,
        seeded_demo,
        state,
        database: database.to_owned(),
        shutdown: Some(shutdown),
        drop_database,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if !self.drop_database {
            return;
        }
        let _ = std::fs::remove_dir_all(recordings_dir(&self.database));
        let settings = self.settings.database.clone();
        let database = self.database.clone();
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(mut conn) = bootstrap::maintenance_connection(&settings).await {
                    let _ = sqlx::query(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        bootstrap::quote_ident(&database)
                    ))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A tenant created through the CLI's code path, with a signed-in owner.
pub struct TestTenant {
    pub id: TenantId,
    pub email: String,
    pub password: String,
    pub token: String,
}

impl TestApp {
    /// The PostgreSQL database this instance runs on, for a second instance to share.
    pub fn database_name(&self) -> &str {
        &self.database
    }

    /// Asks the instance to shut down, as SIGTERM does (the database stays).
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The metrics listener's exposition text.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.metrics_address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "metrics scrape");
        response.text().await.unwrap()
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request(Method::POST, path, token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path, Some(token))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/v1/auth/login",
            None,
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    pub async fn create_tenant(&self, name: &str) -> TestTenant {
        let email = format!("owner-{}@example.com", Uuid::new_v4().simple());
        let password = "correct horse battery staple".to_owned();
        let created = agentry::accounts::create_tenant(
            &self.store,
            name,
            &email,
            agentry_actors::Secret::new(password.clone()),
        )
        .await
        .expect("tenant created");
        let response = self.login(&email, &password).await;
        assert_eq!(response.status(), 200);
        let token = body(response).await["token"].as_str().unwrap().to_owned();
        TestTenant {
            id: created.tenant_id,
            email,
            password,
            token,
        }
    }

    /// Adds a member (the read-only role) to `tenant`; their dashboard token.
    pub async fn create_member(&self, tenant: TenantId) -> String {
        let email = format!("member-{}@example.com", Uuid::new_v4().simple());
        let password = "member password 1";
        let hash = agentry::accounts::hash_password(agentry_actors::Secret::new(password.into()))
            .await
            .unwrap();
        let mut tx = self.store.tenant(tenant).await.unwrap();
        let parsed = agentry::domain::Email::parse(&email).unwrap();
        agentry::db::tenants::add_user(&mut tx, &parsed, &hash, agentry::db::tenants::Role::Member)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        body(self.login(&email, password).await).await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn operator_token(&self) -> String {
        let email = format!("op-{}@example.com", Uuid::new_v4().simple());
        let password = "operator password 123";
        agentry::accounts::create_operator(
            &self.store,
            &email,
            agentry_actors::Secret::new(password.into()),
        )
        .await
        .expect("operator created");
        let response = self
            .post_json(
                "/api/v1/admin/auth/login",
                None,
                &json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(response.status(), 200);
        body(response).await["token"].as_str().unwrap().to_owned()
    }

    pub async fn create_agent(&self, token: &str, name: &str) -> Value {
        let response = self
            .post_json(
                "/api/v1/agents",
                Some(token),
                &json!({ "name": name, "system_prompt": "Be helpful.", "profile": { "brand": name } }),
            )
            .await;
        assert_eq!(response.status(), 201);
        body(response).await
    }

    pub async fn create_widget(&self, token: &str, agent_id: &str) -> Value {
        let response = self
            .post_json(
                &format!("/api/v1/agents/{agent_id}/widgets"),
                Some(token),
                &json!({ "allowed_origins": ["https://shop.example.com"] }),
            )
            .await;
        assert_eq!(response.status(), 201);
        body(response).await
    }

    /// A connection as the database owner (migrations' role).
    pub async fn owner_connection(&self) -> PgConnection {
        bootstrap::owner_options(&self.settings.database)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A connection as the application role, as every request uses.
    pub async fn app_role_connection(&self) -> PgConnection {
        let options = bootstrap::app_options(&self.settings.database).unwrap();
        PgConnection::connect_with(&options).await.unwrap()
    }
}

/// The JSON body of a response.
/// Creates an API token with `scopes` as the tenant's owner; returns (id, token).
pub async fn create_token(app: &TestApp, owner: &str, scopes: &[&str]) -> (String, String) {
    let response = app
        .post_json(
            "/api/v1/api-tokens",
            Some(owner),
            &json!({ "name": "n8n", "scopes": scopes }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let json = body(response).await;
    (
        json["id"].as_str().unwrap().to_owned(),
        json["token"].as_str().unwrap().to_owned(),
    )
}

pub async fn body(response: Response) -> Value {
    let text = response.text().await.expect("body read");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"))
}

/// Asserts a JSON error body with the given status and code.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "content type"
    );
    let json = body(response).await;
    assert_eq!(json["error"]["code"], code, "error body: {json}");
    assert!(
        json["error"]["message"].is_string(),
        "error message: {json}"
    );
    json
}

/// The origin `create_widget` allows.
pub const WIDGET_ORIGIN: &str = "https://shop.example.com";

/// Starts a visitor's widget session from `origin`; returns its token.
pub async fn widget_session(app: &TestApp, public_key: &str, origin: &str) -> String {
    let response = app
        .client
        .post(app.url("/api/widget/session"))
        .header("origin", origin)
        .json(&json!({ "public_key": public_key }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 201, "widget session from {origin}");
    let json = body(response).await;
    json["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {json}"))
        .to_owned()
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Parses a complete `text/event-stream` body; comments (keep-alives) are skipped.
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let text = text.replace("\r\n", "\n");
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if event.is_none() && data.is_empty() {
            continue;
        }
        events.push(SseEvent {
            event: event.unwrap_or_else(|| "message".to_owned()),
            data: data.join("\n"),
        });
    }
    events
}

/// Uploads a plain-text knowledge-base document to an agent; returns its id.
pub async fn upload_document(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    title: &str,
    content: &str,
) -> String {
    upload_document_as(app, token, agent_id, title, content, "text").await
}

/// Uploads a knowledge-base document of `content_type`; returns its id.
pub async fn upload_document_as(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    title: &str,
    content: &str,
    content_type: &str,
) -> String {
    let response = app
        .post_json(
            &format!("/api/v1/agents/{agent_id}/documents"),
            Some(token),
            &json!({ "title": title, "content": content, "content_type": content_type }),
        )
        .await;
    assert_eq!(response.status(), 201, "document upload");
    let json = body(response).await;
    assert_eq!(json["status"], "pending", "{json}");
    json["id"].as_str().unwrap().to_owned()
}

/// Polls the document list until the document is ready; panics if it fails
/// or is still not ready after 30 seconds.
pub async fn wait_until_document_ready(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    document_id: &str,
) -> Value {
    wait_for_document_status(app, token, agent_id, document_id, "ready").await
}

/// Polls the document list until the document has `status` (panicking early if
/// it settles on the other final status, or after 30 seconds).
pub async fn wait_for_document_status(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    document_id: &str,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listed = body(
            app.get(&format!("/api/v1/agents/{agent_id}/documents"), token)
                .await,
        )
        .await;
        let document = listed["documents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == document_id)
            .unwrap_or_else(|| panic!("document {document_id} is not listed: {listed}"))
            .clone();
        match document["status"].as_str() {
            Some(current) if current == status => return document,
            Some("pending") => {}
            _ => panic!("document did not become {status}: {document}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "document still pending after 30 s: {document}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Sets the transaction-local tenant, as the store does for every unit of work.
pub async fn set_tenant(conn: &mut sqlx::PgConnection, tenant: impl std::fmt::Display) {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(conn)
        .await
        .unwrap();
}
