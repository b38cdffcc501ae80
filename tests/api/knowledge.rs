//! The knowledge base: upload, asynchronous ingestion, retrieval in the answer,
//! deletion everywhere (caches included), and namespaces that never leak.

use serde_json::json;

use crate::chat_support::{reply, site, upload_ready, visitor_token};
use crate::helpers::wait_for_document_status as wait_for_status;
use crate::helpers::{assert_error, body, spawn_app, spawn_app_on, spawn_app_with};

const HOURS: &str = "# Opening hours\n\nThe lighthouse museum opens at 7am on weekdays.\n\n# Tickets\n\nTickets cost twelve dollars.";

#[tokio::test]
async fn an_uploaded_document_is_ingested_and_answers_come_from_it() {
    let app = spawn_app().await;
    let setup = site(&app, "Museum Co").await;
    let id = upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Visiting",
        HOURS,
    )
    .await;
    let listed = body(
        app.get(
            &format!("/api/v1/agents/{}/documents", setup.agent_id),
            &setup.tenant.token,
        )
        .await,
    )
    .await;
    let document = &listed["documents"][0];
    assert_eq!(document["id"], id.as_str());
    assert_eq!(document["status"], "ready");
    assert!(document["chunk_count"].as_i64().unwrap() >= 1);
    assert!(
        document.get("content").is_none(),
        "listing does not echo content"
    );

    let token = visitor_token(&app, &setup.public_key).await;
    let answer = reply(&app, &token, "When does the lighthouse museum open?").await;
    assert!(answer.contains("7am"), "{answer}");
}

#[tokio::test]
async fn a_document_with_no_text_fails_with_a_reason() {
    let app = spawn_app().await;
    let setup = site(&app, "Empty Co").await;
    let response = app
        .post_json(
            &format!("/api/v1/agents/{}/documents", setup.agent_id),
            Some(&setup.tenant.token),
            &json!({ "title": "Scripts only", "content": "<script>var x = 1;</script>", "content_type": "html" }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let id = body(response).await["id"].as_str().unwrap().to_owned();
    let failed = wait_for_status(&app, &setup.tenant.token, &setup.agent_id, &id, "failed").await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("no text"),
        "{failed}"
    );
}

#[tokio::test]
async fn bad_documents_are_refused_and_other_tenants_agents_are_not_found() {
    let app = spawn_app_with(|settings| settings.knowledge.max_document_chars = 100).await;
    let setup = site(&app, "Strict Co").await;
    let other = site(&app, "Other Co").await;
    let path = format!("/api/v1/agents/{}/documents", setup.agent_id);
    let post = |payload: serde_json::Value| {
        let request = app
            .request(reqwest::Method::POST, &path, Some(&setup.tenant.token))
            .json(&payload);
        async move { request.send().await.unwrap() }
    };
    assert_error(
        post(json!({ "title": "", "content": "x" })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        post(json!({ "title": "T", "content": "   " })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        post(json!({ "title": "T", "content": "x", "content_type": "pdf" })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        post(json!({ "title": "T", "content": "x".repeat(101) })).await,
        422,
        "invalid",
    )
    .await;
    assert_error(
        app.post_json(
            &path,
            Some(&other.tenant.token),
            &json!({ "title": "T", "content": "x" }),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let document = upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Ok",
        "A short fact.",
    )
    .await;
    assert_error(
        app.delete(&format!("{path}/{document}"), &other.tenant.token)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get(
            &format!("/api/v1/agents/{}/documents", setup.agent_id),
            &other.tenant.token,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_document_removes_it_everywhere_including_another_instances_cache() {
    let first = spawn_app().await;
    let prefix = first.settings.redis.prefix.clone();
    let second = spawn_app_on(
        &first.database,
        |settings| settings.redis.prefix = prefix,
        false,
    )
    .await;
    let setup = site(&first, "Forgetful Co").await;
    let id = upload_ready(
        &first,
        &setup.tenant.token,
        &setup.agent_id,
        "Visiting",
        HOURS,
    )
    .await;

    // The second instance answers from it, so its retriever has the chunks in memory.
    let token = visitor_token(&second, &setup.public_key).await;
    assert!(
        reply(&second, &token, "When does the lighthouse museum open?")
            .await
            .contains("7am")
    );

    let response = first
        .delete(
            &format!("/api/v1/agents/{}/documents/{id}", setup.agent_id),
            &setup.tenant.token,
        )
        .await;
    assert_eq!(response.status(), 204);
    let answer = reply(&second, &token, "When does the lighthouse museum open?").await;
    assert!(
        !answer.contains("7am"),
        "a deleted document still answers: {answer}"
    );
    let mut owner = first.owner_connection().await;
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM kb_chunks")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(chunks, 0);
}

#[tokio::test]
async fn another_namespaces_knowledge_never_comes_back() {
    let app = spawn_app().await;
    let first = site(&app, "First Co").await;
    let second = site(&app, "Second Co").await;
    upload_ready(
        &app,
        &first.tenant.token,
        &first.agent_id,
        "Secret",
        "The zebra-seven vault code is QUOKKA-4411. Zebra-seven opens at noon.",
    )
    .await;
    // The second tenant has knowledge too, so its retriever is not empty.
    upload_ready(
        &app,
        &second.tenant.token,
        &second.agent_id,
        "Hours",
        "We open at nine.",
    )
    .await;
    // A second agent of the first tenant is its own namespace as well.
    let sibling = app.create_agent(&first.tenant.token, "Sibling").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sibling_widget = app.create_widget(&first.tenant.token, &sibling).await;

    for public_key in [
        second.public_key.as_str(),
        sibling_widget["public_key"].as_str().unwrap(),
    ] {
        let token = visitor_token(&app, public_key).await;
        let answer = reply(&app, &token, "What is the zebra-seven vault code?").await;
        assert!(
            !answer.contains("QUOKKA"),
            "knowledge leaked across namespaces: {answer}"
        );
    }
    let token = visitor_token(&app, &first.public_key).await;
    assert!(reply(&app, &token, "What is the zebra-seven vault code?")
        .await
        .contains("QUOKKA-4411"));
}

#[tokio::test]
async fn a_document_whose_ingest_job_was_lost_is_ingested_anyway() {
    let app = spawn_app_with(|settings| settings.knowledge.recover_after_secs = 1).await;
    let setup = site(&app, "Lossy Co").await;
    // Written straight to the database: no job was ever published for it (as if
    // Redis had lost it, or the instance died between commit and publish).
    let mut owner = app.owner_connection().await;
    let document = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO kb_documents (id, tenant_id, agent_id, title, content_type, content)
         VALUES ($1, $2, $3::uuid, 'Orphan', 'text', 'The orphanage bell rings at dawn.')",
    )
    .bind(document)
    .bind(setup.tenant.id.as_uuid())
    .bind(&setup.agent_id)
    .execute(&mut owner)
    .await
    .unwrap();
    wait_for_status(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        &document.to_string(),
        "ready",
    )
    .await;
}

#[tokio::test]
async fn unusual_words_in_documents_and_questions_are_searched_verbatim() {
    let app = spawn_app().await;
    let setup = site(&app, "Odd Co").await;
    upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Links",
        "O'Neil's bakery lists its menu at example.com/menu-2026 every morning.",
    )
    .await;
    let token = visitor_token(&app, &setup.public_key).await;
    for question in [
        "Where is the example.com/menu-2026 page?",
        "Tell me about O'Neil's",
        "a\\b & | ! <-> :*",
    ] {
        let (status, body) = crate::chat_support::turn(&app, &token, question).await;
        assert_eq!(status, 200, "{question}: {body}");
    }
    let answer = reply(&app, &token, "Where is the example.com/menu-2026 page?").await;
    assert!(answer.contains("example.com/menu-2026"), "{answer}");
}

/// The namespace as the retriever loads it from PostgreSQL, into a snapshot.
async fn load(
    store: &agentry::db::knowledge::PgKnowledgeStore,
    namespace: agentry_actors::ports::Namespace,
    base: &agentry_actors::knowledge::snapshot::NamespaceSnapshot,
) -> (
    agentry_actors::ports::NamespaceChanges,
    agentry_actors::knowledge::snapshot::NamespaceSnapshot,
) {
    use agentry_actors::ports::KnowledgeStore;
    let changes = store.changes(namespace, &base.documents()).await.unwrap();
    let snapshot = base.apply(&changes.removed, &changes.added);
    (changes, snapshot)
}

#[tokio::test]
async fn a_namespace_loads_once_then_only_what_changed_and_ranks_by_the_rare_words() {
    use agentry_actors::knowledge::snapshot::NamespaceSnapshot;
    use agentry_actors::ports::Namespace;
    let app = spawn_app().await;
    let setup = site(&app, "Search Co").await;
    let menu = upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Menu",
        "O'Neil's bakery posts its menu at example.com/menu-2026.",
    )
    .await;
    upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Hours",
        "The bakery opens at six. The bakery closes at noon.",
    )
    .await;
    let store = agentry::db::knowledge::PgKnowledgeStore::new(app.store.clone());
    let namespace = Namespace {
        tenant: setup.tenant.id,
        agent: setup.agent_id.parse().unwrap(),
    };
    let (first, snapshot) = load(&store, namespace, &NamespaceSnapshot::default()).await;
    assert!(first.removed.is_empty());
    assert_eq!(first.added.len(), 2, "a first load reads every document");
    assert!(first.version > 0);
    let top = |snapshot: &NamespaceSnapshot, question: &str| {
        snapshot
            .search(None, question, 20, 10)
            .into_iter()
            .map(|chunk| chunk.text)
            .collect::<Vec<_>>()
    };
    for question in ["a\\b & | ! <-> :* ()", "'", "", "the and of", "O'Neil's"] {
        // Any question is taken, whatever it holds.
        top(&snapshot, question);
    }
    // "bakery" is in every chunk; "closes" only in one: it decides the ranking.
    assert!(top(&snapshot, "when does the bakery close")[0].contains("closes at noon"));
    assert!(top(&snapshot, "example.com/menu-2026")[0].contains("example.com/menu-2026"));

    let (unchanged, same) = load(&store, namespace, &snapshot).await;
    assert_eq!((unchanged.removed.len(), unchanged.added.len()), (0, 0));
    assert_eq!(unchanged.version, first.version);
    assert_eq!(same.len(), snapshot.len());

    // One document deleted, one added: the next load carries just those.
    let response = app
        .delete(
            &format!("/api/v1/agents/{}/documents/{menu}", setup.agent_id),
            &setup.tenant.token,
        )
        .await;
    assert_eq!(response.status(), 204);
    upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Tickets",
        "Tickets are sold at the lighthouse door.",
    )
    .await;
    let (changed, snapshot) = load(&store, namespace, &snapshot).await;
    assert_eq!(changed.removed, vec![menu.parse::<uuid::Uuid>().unwrap()]);
    assert_eq!(changed.added.len(), 1);
    assert_eq!(changed.added[0].title, "Tickets");
    assert!(changed.version > first.version);
    assert!(top(&snapshot, "lighthouse tickets")[0].contains("lighthouse door"));
    assert!(top(&snapshot, "example.com/menu-2026")
        .iter()
        .all(|text| !text.contains("menu-2026")));
}

/// A local OpenAI-compatible embeddings server (vectors from the offline
/// embedder, so retrieval still means something); counts the texts it embedded.
async fn fake_embeddings() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let embedded = Arc::new(AtomicUsize::new(0));
    let counter = embedded.clone();
    let router = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(move |axum::Json(request): axum::Json<serde_json::Value>| {
            let counter = counter.clone();
            async move {
                let embedder = agentry_actors::knowledge::OfflineEmbedder::default();
                let inputs = request["input"].as_array().cloned().unwrap_or_default();
                counter.fetch_add(inputs.len(), Ordering::SeqCst);
                let data: Vec<serde_json::Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(index, text)| {
                        json!({ "object": "embedding", "index": index,
                                "embedding": embedder.embed_one(text.as_str().unwrap_or("")) })
                    })
                    .collect();
                // Usage as OpenAI reports it: 11 tokens an input, whatever its length.
                let tokens = 11 * inputs.len();
                axum::Json(
                    json!({ "object": "list", "data": data, "model": request["model"],
                                   "usage": { "prompt_tokens": tokens, "total_tokens": tokens } }),
                )
            }
        }),
    );
    let address = crate::helpers::serve_locally(router).await;
    (format!("http://{address}/v1"), embedded)
}

#[tokio::test]
async fn an_openai_compatible_embeddings_service_embeds_documents_and_questions() {
    let (base_url, embedded) = fake_embeddings().await;
    let app = spawn_app_with(|settings| {
        settings.embedding.provider = "vllm".into();
        settings.embedding.model = "house-embed".into();
        settings.embedding.base_url = base_url;
    })
    .await;
    let setup = site(&app, "Embed Co").await;
    upload_ready(
        &app,
        &setup.tenant.token,
        &setup.agent_id,
        "Visiting",
        HOURS,
    )
    .await;
    let after_ingest = embedded.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_ingest >= 1, "ingestion embedded through the service");

    let token = visitor_token(&app, &setup.public_key).await;
    assert!(reply(&app, &token, "When does the lighthouse museum open?")
        .await
        .contains("7am"));
    assert_eq!(
        embedded.load(std::sync::atomic::Ordering::SeqCst),
        after_ingest + 1,
        "the question too"
    );

    let mut owner = app.owner_connection().await;
    let document_embedder: String = sqlx::query_scalar("SELECT embedder FROM kb_documents")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(document_embedder, "vllm:house-embed");
    let usage: (String, i32) = sqlx::query_as(
        "SELECT provider, prompt_tokens FROM agent_usage_events WHERE kind = 'embedding'",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        usage,
        ("vllm:house-embed".to_owned(), 11),
        "the question's embedding, counted as the provider reported it"
    );
}
