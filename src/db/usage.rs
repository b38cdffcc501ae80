//! What a finished turn cost: its `agent_usage_events` rows (an append-only
//! audit table), built here as the JSON array that `agentry_finish_turn`
//! inserts in one statement.

use agentry_actors::ports::TurnRecord;
use serde_json::{json, Value};
use uuid::Uuid;

/// The usage rows of a turn: the chat completion (with what the guardrails
/// removed from its reply, per rule), and the embedding of the question when
/// something was embedded.
pub fn usage_rows(record: &TurnRecord) -> Value {
    let mut rows = vec![json!({
        "id": Uuid::now_v7(),
        "kind": "chat",
        "provider": record.provider,
        "model": record.model,
        "prompt_tokens": record.usage.prompt_tokens,
        "completion_tokens": record.usage.completion_tokens,
        "guardrail_removals": record.guardrail_removals,
    })];
    if let Some(embedding) = &record.embedding {
        rows.push(json!({
            "id": Uuid::now_v7(),
            "kind": "embedding",
            "provider": embedding.embedder,
            "model": embedding.embedder,
            "prompt_tokens": embedding.tokens,
            "completion_tokens": 0,
        }));
    }
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use agentry_actors::llm::Usage;
    use agentry_actors::ports::EmbeddingUsage;
    use agentry_actors::AgentId;

    use super::*;

    fn record(embedding: Option<EmbeddingUsage>) -> TurnRecord {
        TurnRecord {
            agent: AgentId::new(),
            reply_seq: 1,
            content: "hi".into(),
            provider: "offline".into(),
            model: "m".into(),
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
            },
            embedding,
            guardrail_removals: Default::default(),
            pii: Default::default(),
        }
    }

    #[test]
    fn an_embedding_row_only_when_something_was_embedded() {
        let rows = usage_rows(&record(None));
        assert_eq!(rows.as_array().unwrap().len(), 1);
        assert_eq!(rows[0]["kind"], "chat");
        assert_eq!(rows[0]["prompt_tokens"], 12);

        let embedded = Some(EmbeddingUsage {
            embedder: "offline-hash-v1".into(),
            tokens: 7,
        });
        let rows = usage_rows(&record(embedded));
        assert_eq!(rows[1]["kind"], "embedding");
        assert_eq!(rows[1]["prompt_tokens"], 7);
        assert_eq!(rows[1]["model"], "offline-hash-v1");
    }
}
