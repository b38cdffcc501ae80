//! The development demo: on the first start against an empty database, a
//! tenant with an admin, an agent and a widget, described by `config/demo.toml`.

use agentry_actors::Secret;
use serde::Deserialize;

use crate::accounts;
use crate::bus::RedisBus;
use crate::configuration::Settings;
use crate::crypto::Keyring;
use crate::db::webhook_endpoints::{self, NewEndpoint, SecretSlot};
use crate::db::{agents, bootstrap, knowledge, widgets, Store};
use crate::domain::{new_widget_public_key, AgentProfile, AllowedOrigin};
use crate::http::routes::webhook_endpoints::{new_secret, EVENT_TYPES};
use crate::kb_ingest::{self, IngestJob};

const DEMO_TOML: &str = include_str!("../config/demo.toml");

#[derive(Deserialize)]
struct DemoSeed {
    tenant: DemoTenant,
    admin: DemoLogin,
    operator: DemoLogin,
    agent: DemoAgent,
    widget: DemoWidget,
    #[serde(default)]
    documents: Vec<DemoDocument>,
}

#[derive(Deserialize)]
struct DemoDocument {
    title: String,
    content_type: String,
    content: String,
}

#[derive(Deserialize)]
struct DemoTenant {
    name: String,
}

#[derive(Deserialize)]
struct DemoLogin {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct DemoAgent {
    name: String,
    system_prompt: String,
    profile: AgentProfile,
}

#[derive(Deserialize)]
struct DemoWidget {
    allowed_origins: Vec<String>,
}

/// What the server prints after seeding, so a newcomer can sign in.
pub struct SeededDemo {
    pub tenant_name: String,
    pub admin_email: String,
    pub admin_password: String,
    pub operator_email: String,
    pub operator_password: String,
    pub widget_public_key: String,
    /// The endpoint pointed at the development echo receiver, if one runs.
    pub webhook_echo: Option<DemoEcho>,
}

/// The demo tenant's endpoint at the echo receiver, and its secret (shown once).
pub struct DemoEcho {
    pub url: String,
    pub secret: String,
}

/// Seeds the demo if the database has no tenant yet; `None` if it had one.
/// `echo_url` is where the development echo receiver listens, if it does:
/// the demo tenant gets an endpoint there for every event type.
pub async fn seed_if_empty(
    settings: &Settings,
    store: &Store,
    bus: &RedisBus,
    keyring: &Keyring,
    echo_url: Option<&str>,
) -> anyhow::Result<Option<SeededDemo>> {
    if !bootstrap::database_is_empty(&settings.database).await? {
        return Ok(None);
    }
    let demo: DemoSeed = toml_from_str(DEMO_TOML)?;
    let created = accounts::create_tenant(
        store,
        &demo.tenant.name,
        &demo.admin.email,
        Secret::new(demo.admin.password.clone()),
    )
    .await?;
    accounts::create_operator(
        store,
        &demo.operator.email,
        Secret::new(demo.operator.password.clone()),
    )
    .await?;
    // The server's own origin too, so its /demo page can use the widget wherever it runs.
    let own_origin = url::Url::parse(&settings.http.public_url)
        .map(|url| url.origin().ascii_serialization())
        .ok();
    let mut origins = Vec::new();
    for origin in demo.widget.allowed_origins.iter().chain(own_origin.iter()) {
        let origin = AllowedOrigin::parse(origin).map_err(anyhow::Error::msg)?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    let mut tx = store.tenant(created.tenant_id).await?;
    let agent = agents::create(
        &mut tx,
        agents::NewAgent {
            name: &demo.agent.name,
            system_prompt: &demo.agent.system_prompt,
            profile: &demo.agent.profile,
        },
    )
    .await?;
    let public_key = new_widget_public_key();
    let agent_id = agentry_actors::AgentId::from_uuid(agent.id);
    widgets::create(&mut tx, agent_id, &public_key, &origins).await?;
    let mut documents = Vec::new();
    for document in &demo.documents {
        let created = knowledge::create_document(
            &mut tx,
            agent_id,
            &document.title,
            &document.content_type,
            &document.content,
        )
        .await?;
        documents.push(created.id);
    }
    let webhook_echo = match echo_url {
        Some(url) => {
            let id = uuid::Uuid::now_v7();
            let secret = new_secret();
            let sealed = keyring.seal(
                &SecretSlot::Current.owner(created.tenant_id, id),
                secret.as_bytes(),
            );
            let event_types: Vec<String> = EVENT_TYPES.iter().map(|t| t.to_string()).collect();
            webhook_endpoints::create(
                &mut tx,
                NewEndpoint {
                    id,
                    url,
                    event_types: &event_types,
                    enabled: true,
                    description: "Development echo receiver (prints each delivery)",
                    secret_sealed: &sealed,
                },
            )
            .await?;
            Some(DemoEcho {
                url: url.to_owned(),
                secret,
            })
        }
        None => None,
    };
    tx.commit().await?;
    for document in documents {
        let job = IngestJob {
            tenant: created.tenant_id,
            agent: agent_id,
            document,
        };
        // If Redis is not up yet, the ingest stage's sweep picks the documents up later.
        if let Err(error) = kb_ingest::enqueue(bus, &job).await {
            tracing::warn!(%error, "demo document not enqueued; the sweep will retry");
        }
    }
    Ok(Some(SeededDemo {
        tenant_name: created.name,
        admin_email: created.admin_email,
        admin_password: demo.admin.password,
        operator_email: demo.operator.email,
        operator_password: demo.operator.password,
        widget_public_key: public_key,
        webhook_echo,
    }))
}

fn toml_from_str(text: &str) -> anyhow::Result<DemoSeed> {
    use config::{Config, File, FileFormat};
    Ok(Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()?
        .try_deserialize()?)
}
