//! Seeding through the HTTP API, as an operator and then a tenant admin
//! would: a tenant, an agent, a widget for the load test's origin and the
//! documents, then waiting until every document is ingested.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{snippet, BaseUrl, Connection};
use crate::corpus::Corpus;

/// The Origin every visitor request carries, allowed by the seeded widget.
pub const ORIGIN: &str = "http://loadtest.local";

/// The tiers counted within a tenant, which an operator can raise for one.
const RAISED_TIERS: [&str; 6] = [
    "chat",
    "upload",
    "standard",
    "widget_sessions",
    "widget_messages",
    "api_tokens",
];
const RAISED_PER_MINUTE: u32 = 10_000_000;

pub struct Seeded {
    pub public_key: String,
    pub tenant_id: String,
    /// The tenant admin's dashboard token.
    pub admin_token: String,
    pub operator_token: String,
    pub documents: usize,
    /// Sum of the documents' `chunk_count` once ingested.
    pub chunks: u64,
}

pub struct SeedOptions<'a> {
    pub operator_email: &'a str,
    pub operator_password: &'a str,
    pub run_id: &'a str,
    pub ingest_timeout: Duration,
}

/// Checks the status and returns the JSON body, or an error naming the step.
fn expect(
    step: &str,
    wanted: StatusCode,
    (status, body): (StatusCode, Bytes),
) -> anyhow::Result<Value> {
    if status != wanted {
        bail!(
            "{step}: expected {wanted}, got {status}: {}",
            snippet(&body)
        );
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("{step}: the response is not JSON: {}", snippet(&body)))
}

fn string_field(step: &str, value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{step}: the response has no {field:?}: {value}"))
}

pub async fn seed(
    base: &BaseUrl,
    corpus: &Corpus,
    options: &SeedOptions<'_>,
) -> anyhow::Result<Seeded> {
    let mut http = Connection::new(base.clone());

    let step = "operator login (POST /api/v1/admin/auth/login)";
    let login = http
        .call(
            Method::POST,
            "/api/v1/admin/auth/login",
            None,
            None,
            Some(
                &json!({ "email": options.operator_email, "password": options.operator_password }),
            ),
        )
        .await?;
    if login.0 == StatusCode::UNAUTHORIZED {
        bail!(
            "{step}: {} is not an operator of {base} with that password (--operator-email/--operator-password)",
            options.operator_email
        );
    }
    let operator = string_field(step, &expect(step, StatusCode::OK, login)?, "token")?;

    let tenant = create_tenant(
        &mut http,
        &operator,
        &format!("loadtest-{}", options.run_id),
    )
    .await?;

    // Every visitor comes from this one client IP, so the tenant's tiers are
    // raised far beyond the run's rate (the defaults stay as they are): with
    // limits on, each request is still decided in Redis, but none is refused.
    let step = "raising the tenant's rate limits (PUT /api/v1/admin/tenants/{id}/rate-limits)";
    let raised: serde_json::Map<String, Value> = RAISED_TIERS
        .iter()
        .map(|tier| ((*tier).to_owned(), json!(RAISED_PER_MINUTE)))
        .collect();
    let limits = http
        .call(
            Method::PUT,
            &format!("/api/v1/admin/tenants/{}/rate-limits", tenant.id),
            Some(&operator),
            None,
            Some(&json!({ "overrides": raised })),
        )
        .await?;
    expect(step, StatusCode::OK, limits)?;

    let admin = tenant.login(&mut http).await?;
    let (agent, public_key) = agent_with_widget(
        &mut http,
        &admin,
        "Help centre",
        "You are the help-centre assistant. Answer from the knowledge base, briefly and precisely.",
    )
    .await?;

    eprintln!(
        "loadtest: adding {} documents to the agent",
        corpus.documents.len()
    );
    let documents_path = format!("/api/v1/agents/{agent}/documents");
    for (index, document) in corpus.documents.iter().enumerate() {
        let step = format!("adding document {} (POST {documents_path})", index + 1);
        let response = http
            .call(
                Method::POST,
                &documents_path,
                Some(&admin),
                None,
                Some(&json!({
                    "title": document.title,
                    "content": document.content,
                    "content_type": "markdown",
                })),
            )
            .await?;
        expect(&step, StatusCode::CREATED, response)?;
    }

    let chunks = wait_ingested(
        &mut http,
        &documents_path,
        &admin,
        corpus.documents.len(),
        options.ingest_timeout,
    )
    .await?;
    Ok(Seeded {
        public_key,
        tenant_id: tenant.id,
        admin_token: admin,
        operator_token: operator,
        documents: corpus.documents.len(),
        chunks,
    })
}

/// A second tenant with the default rate limits and one agent with a
/// widget for [`ORIGIN`]: what the rate-limit traffic probes. Returns the
/// widget's public key.
pub async fn limited_tenant(
    base: &BaseUrl,
    operator_token: &str,
    run_id: &str,
) -> anyhow::Result<String> {
    let mut http = Connection::new(base.clone());
    let tenant = create_tenant(
        &mut http,
        operator_token,
        &format!("loadtest-limited-{run_id}"),
    )
    .await?;
    let admin = tenant.login(&mut http).await?;
    let (_, public_key) =
        agent_with_widget(&mut http, &admin, "Limited", "Answer briefly.").await?;
    Ok(public_key)
}

/// A tenant an operator created, and its admin's login.
struct NewTenant {
    id: String,
    admin_email: String,
    admin_password: String,
}

impl NewTenant {
    /// The admin's dashboard token.
    async fn login(&self, http: &mut Connection) -> anyhow::Result<String> {
        let step = "tenant login (POST /api/v1/auth/login)";
        let login = http
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                None,
                Some(&json!({ "email": self.admin_email, "password": self.admin_password })),
            )
            .await?;
        string_field(step, &expect(step, StatusCode::OK, login)?, "token")
    }
}

/// A tenant named after `label` (which also makes its admin's login).
async fn create_tenant(
    http: &mut Connection,
    operator_token: &str,
    label: &str,
) -> anyhow::Result<NewTenant> {
    let admin_email = format!("{label}@loadtest.agentry.test");
    let admin_password = format!("{label}-password");
    let step = "creating a tenant (POST /api/v1/admin/tenants)";
    let created = http
        .call(
            Method::POST,
            "/api/v1/admin/tenants",
            Some(operator_token),
            None,
            Some(&json!({
                "name": format!("Load test {label}"),
                "admin_email": admin_email,
                "admin_password": admin_password,
            })),
        )
        .await?;
    let id = string_field(
        step,
        &expect(step, StatusCode::CREATED, created)?,
        "tenant_id",
    )?;
    Ok(NewTenant {
        id,
        admin_email,
        admin_password,
    })
}

/// An agent, and a widget for [`ORIGIN`] on it: their id and public key.
async fn agent_with_widget(
    http: &mut Connection,
    admin_token: &str,
    name: &str,
    system_prompt: &str,
) -> anyhow::Result<(String, String)> {
    let step = "creating the agent (POST /api/v1/agents)";
    let agent = http
        .call(
            Method::POST,
            "/api/v1/agents",
            Some(admin_token),
            None,
            Some(&json!({ "name": name, "system_prompt": system_prompt })),
        )
        .await?;
    let agent = string_field(step, &expect(step, StatusCode::CREATED, agent)?, "id")?;
    let step = "creating the widget (POST /api/v1/agents/{id}/widgets)";
    let widget = http
        .call(
            Method::POST,
            &format!("/api/v1/agents/{agent}/widgets"),
            Some(admin_token),
            None,
            Some(&json!({ "allowed_origins": [ORIGIN] })),
        )
        .await?;
    let public_key = string_field(
        step,
        &expect(step, StatusCode::CREATED, widget)?,
        "public_key",
    )?;
    Ok((agent, public_key))
}

/// A webhook endpoint for every event type at `url`; returns its id and
/// its signing secret (shown once, in this response).
pub async fn webhook_endpoint(
    base: &BaseUrl,
    admin_token: &str,
    url: &str,
) -> anyhow::Result<(String, String)> {
    let mut http = Connection::new(base.clone());
    let step = "creating the webhook endpoint (POST /api/v1/webhook-endpoints)";
    let created = http
        .call(
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(admin_token),
            None,
            Some(&json!({
                "url": url,
                "event_types": ["lead.created", "lead.updated", "booking.requested", "quote.requested", "support.escalated"],
                "description": "loadtest receiver",
            })),
        )
        .await?;
    let endpoint = expect(step, StatusCode::CREATED, created)?;
    Ok((
        string_field(step, &endpoint, "id")?,
        string_field(step, &endpoint, "secret")?,
    ))
}

/// Polls the document list until every document is `ready`; fails on
/// `failed` or after `timeout`. Returns the sum of their chunk counts.
async fn wait_ingested(
    http: &mut Connection,
    path: &str,
    token: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let step = format!("listing documents (GET {path})");
    loop {
        let response = http
            .call(Method::GET, path, Some(token), None, None)
            .await?;
        let list = expect(&step, StatusCode::OK, response)?;
        let documents = list["documents"]
            .as_array()
            .ok_or_else(|| anyhow!("{step}: no \"documents\" array: {list}"))?;
        let progress = ingest_progress(documents)?;
        if progress.ready == expected && documents.len() == expected {
            eprintln!(
                "loadtest: {expected} documents ingested, {} chunks, in {:.1} s",
                progress.chunks,
                started.elapsed().as_secs_f64()
            );
            return Ok(progress.chunks);
        }
        if started.elapsed() > timeout {
            bail!(
                "documents not ingested within {timeout:?}: {} of {expected} ready (--ingest-timeout)",
                progress.ready
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Progress {
    ready: usize,
    chunks: u64,
}

fn ingest_progress(documents: &[Value]) -> anyhow::Result<Progress> {
    let mut progress = Progress {
        ready: 0,
        chunks: 0,
    };
    for document in documents {
        match document["status"].as_str() {
            Some("ready") => {
                progress.ready += 1;
                progress.chunks += document["chunk_count"].as_u64().unwrap_or(0);
            }
            Some("failed") => bail!(
                "document {:?} failed to ingest: {}",
                document["title"].as_str().unwrap_or("?"),
                document["failure_reason"]
                    .as_str()
                    .unwrap_or("no reason given")
            ),
            _ => {}
        }
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_progress_counts_ready_chunks_and_fails_on_failed() {
        let documents = vec![
            json!({"title": "a", "status": "ready", "chunk_count": 12}),
            json!({"title": "b", "status": "pending", "chunk_count": 0}),
            json!({"title": "c", "status": "ready", "chunk_count": 3}),
        ];
        assert_eq!(
            ingest_progress(&documents).unwrap(),
            Progress {
                ready: 2,
                chunks: 15
            }
        );
        let failed = vec![json!({"title": "d", "status": "failed", "failure_reason": "too long"})];
        let error = ingest_progress(&failed).unwrap_err().to_string();
        assert!(
            error.contains("\"d\"") && error.contains("too long"),
            "{error}"
        );
    }

    #[test]
    fn unexpected_statuses_name_the_step() {
        let error = expect(
            "creating the agent",
            StatusCode::CREATED,
            (StatusCode::FORBIDDEN, Bytes::from_static(b"{\"error\":{}}")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("creating the agent: expected 201"),
            "{error}"
        );
    }
}
