//! The OpenAI-compatible embeddings client (OpenAI, Azure OpenAI, Ollama,
//! vLLM): texts go out in batches, vectors come back in input order and
//! L2-normalized, so cosine similarity is a dot product downstream.

use std::sync::atomic::{AtomicUsize, Ordering};

use agentry_actors::llm::{Embedded, Embedder, LlmError};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::transport::{Failure, Operation, RetryPolicy, Transport};
use super::{LlmConfigError, OpenAiEndpoint, ProviderConfig};

/// Inputs per request: well under every provider's limit (OpenAI allows 2048).
pub const EMBEDDING_BATCH: usize = 64;
/// A batch of 64 vectors of 3072 floats as JSON is a few MiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Embeds texts through an OpenAI-compatible `/embeddings` endpoint.
pub struct OpenAiEmbedder {
    transport: Transport,
    endpoint: OpenAiEndpoint,
    model: String,
    name: String,
    /// 0 until configured or learnt from the first response.
    dimensions: AtomicUsize,
    batch: usize,
}

impl OpenAiEmbedder {
    /// For a validated configuration of kind openai, azure, ollama or vllm.
    pub fn from_config(
        config: &ProviderConfig,
        http: reqwest::Client,
    ) -> Result<Self, LlmConfigError> {
        let endpoint = OpenAiEndpoint::for_operation(config, "embeddings")?;
        let model = match config.model.trim() {
            "" => config.azure_deployment.clone().unwrap_or_default(),
            model => model.to_owned(),
        };
        Ok(Self {
            transport: Transport::new(
                http,
                RetryPolicy::from_config(config),
                config.kind.as_str(),
                endpoint.auth.secret().cloned(),
            ),
            name: format!("{}:{model}", config.kind),
            endpoint,
            model,
            dimensions: AtomicUsize::new(config.dimensions.unwrap_or(0)),
            batch: EMBEDDING_BATCH,
        })
    }

    #[cfg(test)]
    fn for_test(mut self, policy: RetryPolicy, batch: usize) -> Self {
        self.transport.policy = policy;
        self.batch = batch;
        self
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Embedded, LlmError> {
        let body = json!({ "model": self.model, "input": texts });
        let raw = self
            .transport
            .run(Operation::Embed, || self.attempt(&body))
            .await?;
        // Providers that do not report usage (some OpenAI-compatible servers) get an estimate.
        let tokens = raw
            .usage
            .map_or_else(|| estimated_tokens(texts), |usage| usage.prompt_tokens);
        let mut data = raw.data;
        if data.len() != texts.len() {
            return Err(LlmError::Protocol(format!(
                "{} embeddings for {} inputs",
                data.len(),
                texts.len()
            )));
        }
        data.sort_by_key(|item| item.index);
        if data.iter().enumerate().any(|(i, item)| item.index != i) {
            return Err(LlmError::Protocol("embedding indexes are not 0..n".into()));
        }
        let vectors = data
            .into_iter()
            .map(|item| {
                self.check_dimensions(item.embedding.len())?;
                Ok(normalized(item.embedding))
            })
            .collect::<Result<_, LlmError>>()?;
        Ok(Embedded { vectors, tokens })
    }

    async fn attempt(&self, body: &serde_json::Value) -> Result<EmbeddingResponse, Failure> {
        let request = self
            .endpoint
            .auth
            .apply(self.transport.client().post(&self.endpoint.url))
            .json(body);
        let mut response = self.transport.send(request).await?;
        let bytes = self
            .transport
            .read_body(&mut response, MAX_RESPONSE_BYTES)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Final(LlmError::Protocol(format!(
                "unreadable embeddings response: {e}"
            )))
        })
    }

    /// The first vector fixes the size when the configuration did not.
    fn check_dimensions(&self, got: usize) -> Result<(), LlmError> {
        if got == 0 {
            return Err(LlmError::Protocol("an embedding is empty".into()));
        }
        match self
            .dimensions
            .compare_exchange(0, got, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(expected) if expected == got => Ok(()),
            Err(expected) => Err(LlmError::Protocol(format!(
                "embedding has {got} dimensions, expected {expected}"
            ))),
        }
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    /// 0 until known (not configured and nothing embedded yet).
    fn dimensions(&self) -> usize {
        self.dimensions.load(Ordering::Acquire)
    }

    async fn embed(&self, texts: &[String]) -> Result<Embedded, LlmError> {
        let mut embedded = Embedded {
            vectors: Vec::with_capacity(texts.len()),
            tokens: 0,
        };
        for batch in texts.chunks(self.batch.max(1)) {
            let part = self.embed_batch(batch).await?;
            embedded.vectors.extend(part.vectors);
            embedded.tokens = embedded.tokens.saturating_add(part.tokens);
        }
        Ok(embedded)
    }
}

#[derive(Debug, Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
    usage: Option<EmbeddingUsageReport>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingUsageReport {
    prompt_tokens: u32,
}

/// About four characters a token, the usual rule for English text.
fn estimated_tokens(texts: &[String]) -> u32 {
    let chars: usize = texts
        .iter()
        .map(|text| text.chars().count().div_ceil(4))
        .sum();
    u32::try_from(chars).unwrap_or(u32::MAX)
}

#[derive(Debug, Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

/// Unit length; a zero vector stays zero rather than becoming NaN.
fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in &mut vector {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    vector
}

#[cfg(test)]
mod tests {
    use agentry_actors::Secret;
    use serde_json::Value;

    use super::*;
    use crate::llm::test_support::{test_policy, MockServer, Reply};
    use crate::llm::ProviderKind;

    const KEY: &str = "sk-embed-SECRET-987654321";

    /// Answers with [input length, 0, 0, ...] vectors in reverse order, as the
    /// spec allows any order.
    fn reply_for(body: &Value, dimensions: usize) -> Reply {
        let inputs = body["input"].as_array().cloned().unwrap_or_default();
        let mut data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let mut vector = vec![0.0f32; dimensions];
                vector[0] = text.as_str().unwrap_or("").len() as f32;
                vector[1] = 1.0;
                json!({"object": "embedding", "index": index, "embedding": vector})
            })
            .collect();
        data.reverse();
        Reply::json(
            200,
            &json!({"object": "list", "data": data, "model": body["model"]}),
        )
    }

    fn build(config: ProviderConfig, batch: usize) -> OpenAiEmbedder {
        OpenAiEmbedder::from_config(&config, reqwest::Client::new())
            .unwrap()
            .for_test(test_policy(), batch)
    }

    #[tokio::test]
    async fn batches_keep_input_order_and_vectors_are_unit_length() {
        let server = MockServer::start_with_body(|_, body| reply_for(body, 4)).await;
        let mut config = ProviderConfig::new(ProviderKind::OpenAi, "text-embedding-3-small");
        config.base_url = Some(server.base.clone());
        config.api_key = Some(Secret::new(KEY.into()));
        let embedder = build(config, 2);
        assert_eq!(embedder.dimensions(), 0);
        let texts: Vec<String> = ["a", "bbb", "cc", "dddd", "eeeee"]
            .map(String::from)
            .to_vec();

        let vectors = embedder.embed(&texts).await.unwrap().vectors;

        assert_eq!(vectors.len(), 5);
        assert_eq!(embedder.dimensions(), 4);
        for (text, vector) in texts.iter().zip(&vectors) {
            let length = text.len() as f32;
            let norm = (length * length + 1.0).sqrt();
            assert!(
                (vector[0] - length / norm).abs() < 1e-6,
                "{text}: {vector:?}"
            );
            let unit: f32 = vector.iter().map(|x| x * x).sum();
            assert!((unit - 1.0).abs() < 1e-5);
        }
        let requests = server.requests();
        assert_eq!(requests.len(), 3, "5 inputs in batches of 2");
        assert_eq!(requests[0].path, "/v1/embeddings");
        assert_eq!(
            requests[0].header("authorization").as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(requests[0].body["model"], "text-embedding-3-small");
        assert_eq!(requests[0].body["input"], json!(["a", "bbb"]));
        assert_eq!(requests[2].body["input"], json!(["eeeee"]));
        assert!(embedder.embed(&[]).await.unwrap().vectors.is_empty());
        assert_eq!(embedder.name(), "openai:text-embedding-3-small");
    }

    #[tokio::test]
    async fn azure_embeddings_use_the_deployment_and_a_wrong_size_is_refused() {
        let server = MockServer::start_with_body(|_, body| reply_for(body, 3)).await;
        let mut config = ProviderConfig::new(ProviderKind::Azure, "");
        config.base_url = Some(server.root.clone());
        config.azure_deployment = Some("embed".into());
        config.azure_api_version = Some("2024-10-21".into());
        config.api_key = Some(Secret::new(KEY.into()));
        config.dimensions = Some(1536);
        let embedder = build(config, 64);

        let error = embedder.embed(&["x".to_owned()]).await.unwrap_err();

        assert!(
            matches!(&error, LlmError::Protocol(m) if m.contains("expected 1536")),
            "{error}"
        );
        let seen = &server.requests()[0];
        assert_eq!(
            seen.path,
            "/openai/deployments/embed/embeddings?api-version=2024-10-21"
        );
        assert_eq!(seen.header("api-key").as_deref(), Some(KEY));
        assert_eq!(embedder.name(), "azure:embed");
    }

    #[tokio::test]
    async fn embedding_errors_retry_on_503_and_hide_the_key() {
        let server = MockServer::start_with_body(|attempt, body| {
            if attempt == 0 {
                Reply::status(503, "busy")
            } else {
                reply_for(body, 2)
            }
        })
        .await;
        let mut config = ProviderConfig::new(ProviderKind::Ollama, "nomic-embed-text");
        config.base_url = Some(server.base.clone());
        let embedder = build(config, 64);
        assert_eq!(
            embedder
                .embed(&["x".to_owned()])
                .await
                .unwrap()
                .vectors
                .len(),
            1
        );
        assert_eq!(server.count(), 2);
        assert_eq!(server.requests()[0].header("authorization"), None);

        let rejected = MockServer::start(|_| {
            Reply::status(
                400,
                &format!(
                    r#"{{"error":{{"message":"bad key {KEY}","type":"invalid_request_error"}}}}"#
                ),
            )
        })
        .await;
        let mut config = ProviderConfig::new(ProviderKind::OpenAi, "m");
        config.base_url = Some(rejected.base.clone());
        config.api_key = Some(Secret::new(KEY.into()));
        let error = build(config, 64)
            .embed(&["x".to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(error, LlmError::Rejected(_)));
        assert!(!error.to_string().contains("SECRET"), "{error}");
        assert_eq!(rejected.count(), 1);
    }

    #[test]
    fn zero_vectors_stay_zero() {
        assert_eq!(normalized(vec![0.0, 0.0]), vec![0.0, 0.0]);
        assert_eq!(normalized(vec![3.0, 4.0]), vec![0.6, 0.8]);
    }
}
