//! What a finished turn cost and asked for: its `agent_usage_events` and
//! `agent_action_runs` rows, both append-only audit tables. Built here as the
//! JSON arrays that `agentry_finish_turn` inserts in one statement each.

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

/// The action runs of a turn: one per tool call, recorded as requested
/// (executing the tools is its own stage).
pub fn action_rows(record: &TurnRecord) -> Value {
    record
        .tool_calls
        .iter()
        .map(|call| {
            json!({
                "id": Uuid::now_v7(),
                "tool": call.name,
                "status": "requested",
                "input": call.arguments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use agentry_actors::llm::{ToolCall, Usage};
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
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "capture_lead".into(),
                arguments: json!({"email": "a@b.test"}),
            }],
            embedding,
            guardrail_removals: Default::default(),
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

    #[test]
    fn each_tool_call_is_one_requested_action_run() {
        let rows = action_rows(&record(None));
        assert_eq!(rows.as_array().unwrap().len(), 1);
        assert_eq!(rows[0]["tool"], "capture_lead");
        assert_eq!(rows[0]["status"], "requested");
        assert_eq!(rows[0]["input"]["email"], "a@b.test");
    }
}
