//! The Anthropic Messages API client, streamed.
//!
//! The system prompt is a top-level field rather than a message, tools carry
//! an `input_schema`, and the stream is a sequence of typed events: content
//! blocks open, receive deltas (text, or pieces of a tool's JSON input) and
//! close; usage arrives at the start (input) and near the end (output).

use std::collections::BTreeMap;

use agentry_actors::llm::{
    ChatMessage, ChatRole, Completion, CompletionEvent, CompletionRequest, LlmError, LlmProvider,
    ToolCall, ToolChoice, ToolRound, Usage,
};
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::openai::parse_arguments;
use super::transport::{EventStream, Failure, Operation, RetryPolicy, Transport};
use super::{LlmConfigError, ProviderConfig, ProviderKind};

const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the request leaves it at 0.
const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Streams completions from the Anthropic Messages API.
pub struct AnthropicProvider {
    transport: Transport,
    url: String,
    key: agentry_actors::Secret<String>,
    model: String,
}

impl AnthropicProvider {
    /// For a validated configuration of kind anthropic.
    pub fn from_config(
        config: &ProviderConfig,
        http: reqwest::Client,
    ) -> Result<Self, LlmConfigError> {
        let missing = |what| LlmConfigError::Missing {
            kind: ProviderKind::Anthropic,
            what,
        };
        let base = config.resolved_base_url().ok_or(missing("base_url"))?;
        let key = config.key().cloned().ok_or(missing("api_key"))?;
        Ok(Self {
            transport: Transport::new(
                http,
                RetryPolicy::from_config(config),
                ProviderKind::Anthropic.as_str(),
                Some(key.clone()),
            ),
            url: format!("{base}/v1/messages"),
            key,
            model: config.model.trim().to_owned(),
        })
    }

    #[cfg(test)]
    pub(crate) fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.transport.policy = policy;
        self
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let system = request
            .messages
            .iter()
            .filter(|m| m.role == ChatRole::System && !m.content.trim().is_empty())
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let max_tokens = match request.max_tokens {
            0 => DEFAULT_MAX_TOKENS,
            n => n,
        };
        let mut messages = conversation(&request.messages);
        for round in &request.tool_rounds {
            messages.extend(round_messages(round));
        }
        let mut body = json!({
            "model": self.model,
            "max_tokens": max_tokens,
            "messages": messages,
            "stream": true,
            // Anthropic's range is 0..=1 where OpenAI's is 0..=2.
            "temperature": request.temperature.clamp(0.0, 1.0),
        });
        if !system.is_empty() {
            body["system"] = json!(system);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": tool.parameters,
                    })
                })
                .collect();
            if request.tool_choice == ToolChoice::None {
                body["tool_choice"] = json!({ "type": "none" });
            }
        }
        body
    }

    async fn attempt(
        &self,
        body: &Value,
        events: &mpsc::UnboundedSender<CompletionEvent>,
    ) -> Result<Completion, Failure> {
        let request = self
            .transport
            .client()
            .post(&self.url)
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", API_VERSION)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(body);
        let mut sse = EventStream::new(self.transport.send(request).await?);
        let mut stream = StreamState::default();
        let mut emitted = false;
        'read: while let Some(batch) = self
            .transport
            .next_events(&mut sse)
            .await
            .map_err(|failure| failure.after_output(emitted))?
        {
            for event in batch {
                let step = stream.apply(&event.data).map_err(|failure| {
                    self.transport.scrub_failure(failure).after_output(emitted)
                })?;
                match step {
                    Step::Nothing => {}
                    Step::Delta(text) => {
                        emitted = true;
                        let _ = events.send(CompletionEvent::Delta(text));
                    }
                    Step::ToolCall(call) => {
                        emitted = true;
                        let _ = events.send(CompletionEvent::ToolCall(call));
                    }
                    Step::Stop => break 'read,
                }
            }
        }
        stream
            .finish()
            .map_err(|failure| failure.after_output(emitted))
    }
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn provider(&self) -> &str {
        ProviderKind::Anthropic.as_str()
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(
        &self,
        request: &CompletionRequest,
        events: &mpsc::UnboundedSender<CompletionEvent>,
    ) -> Result<Completion, LlmError> {
        let body = self.body(request);
        self.transport
            .run(Operation::Chat, || self.attempt(&body, events))
            .await
    }
}

/// The user and assistant turns, empty ones dropped (the API refuses empty
/// text) and consecutive turns of one role joined.
fn conversation(messages: &[ChatMessage]) -> Vec<Value> {
    let mut turns: Vec<(ChatRole, String)> = Vec::new();
    for message in messages {
        if message.role == ChatRole::System || message.content.trim().is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((role, content)) if *role == message.role => {
                content.push_str("\n\n");
                content.push_str(&message.content);
            }
            _ => turns.push((message.role, message.content.clone())),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// An earlier round in the Messages format: the assistant's text and
/// `tool_use` blocks, then a user message of `tool_result` blocks.
fn round_messages(round: &ToolRound) -> [Value; 2] {
    let mut content = Vec::with_capacity(round.calls.len() + 1);
    if !round.text.trim().is_empty() {
        content.push(json!({ "type": "text", "text": round.text }));
    }
    content.extend(round.calls.iter().map(|call| {
        json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments })
    }));
    let results: Vec<Value> = round
        .results
        .iter()
        .map(|result| {
            json!({
                "type": "tool_result",
                "tool_use_id": result.call_id,
                "content": result.output.to_string(),
                "is_error": result.is_error,
            })
        })
        .collect();
    [
        json!({ "role": "assistant", "content": content }),
        json!({ "role": "user", "content": results }),
    ]
}

/// What one event asks the caller to do.
#[derive(Debug, PartialEq)]
enum Step {
    Nothing,
    Delta(String),
    ToolCall(ToolCall),
    Stop,
}

#[derive(Debug)]
enum Block {
    Text,
    ToolUse {
        id: String,
        name: String,
        json: String,
        initial: Value,
    },
    /// Thinking and block types we do not use.
    Other,
}

#[derive(Debug, Default)]
struct StreamState {
    text: String,
    blocks: BTreeMap<u64, Block>,
    tool_calls: Vec<ToolCall>,
    input_tokens: u32,
    output_tokens: u32,
    stopped: bool,
}

fn tokens(usage: &Value, field: &str) -> Option<u32> {
    usage
        .get(field)
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn protocol(message: impl Into<String>) -> Failure {
    Failure::Final(LlmError::Protocol(message.into()))
}

impl StreamState {
    fn apply(&mut self, data: &str) -> Result<Step, Failure> {
        let event: Value = serde_json::from_str(data)
            .map_err(|e| protocol(format!("unreadable stream event: {e}")))?;
        let index = || {
            event
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| protocol("content block event without an index"))
        };
        match event.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                if let Some(usage) = event.pointer("/message/usage") {
                    self.read_input_usage(usage);
                    self.output_tokens = tokens(usage, "output_tokens").unwrap_or(0);
                }
            }
            "content_block_start" => {
                let block = event
                    .get("content_block")
                    .ok_or_else(|| protocol("content_block_start without a block"))?;
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => Block::Text,
                    Some("tool_use") => Block::ToolUse {
                        id: block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .filter(|n| !n.is_empty())
                            .ok_or_else(|| protocol("tool_use block without a name"))?
                            .to_owned(),
                        json: String::new(),
                        initial: block.get("input").cloned().unwrap_or(Value::Null),
                    },
                    _ => Block::Other,
                };
                self.blocks.insert(index()?, block);
                // A text block may start with text already in it.
                if let Some(text) = event
                    .pointer("/content_block/text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.text.push_str(text);
                    return Ok(Step::Delta(text.to_owned()));
                }
            }
            "content_block_delta" => {
                let index = index()?;
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match (
                    delta.get("type").and_then(Value::as_str),
                    self.blocks.get_mut(&index),
                ) {
                    (Some("text_delta"), _) => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            self.text.push_str(text);
                            return Ok(Step::Delta(text.to_owned()));
                        }
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse { json, .. })) => {
                        json.push_str(
                            delta
                                .get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                        );
                    }
                    (Some("input_json_delta"), _) => {
                        return Err(protocol(format!(
                            "input_json_delta for block {index}, which is not a tool_use block"
                        )))
                    }
                    // thinking_delta, signature_delta, citations…
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(Block::ToolUse {
                    id,
                    name,
                    json,
                    initial,
                }) = self.blocks.remove(&index()?)
                {
                    let arguments = if json.trim().is_empty() && initial.is_object() {
                        initial
                    } else {
                        parse_arguments(&name, &json)?
                    };
                    let id = if id.is_empty() {
                        format!("toolu_{}", self.tool_calls.len())
                    } else {
                        id
                    };
                    let call = ToolCall {
                        id,
                        name,
                        arguments,
                    };
                    self.tool_calls.push(call.clone());
                    return Ok(Step::ToolCall(call));
                }
            }
            "message_delta" => {
                if let Some(usage) = event.get("usage") {
                    // Cumulative, so the last one wins.
                    if let Some(output) = tokens(usage, "output_tokens") {
                        self.output_tokens = output;
                    }
                    if usage.get("input_tokens").is_some() {
                        self.read_input_usage(usage);
                    }
                }
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(Step::Stop);
            }
            "error" => {
                let error = event.get("error").unwrap_or(&Value::Null);
                let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
                let message = error.get("message").and_then(Value::as_str).unwrap_or("");
                let detail = format!("the stream reported {kind}: {message}");
                return Err(match kind {
                    "invalid_request_error"
                    | "authentication_error"
                    | "permission_error"
                    | "not_found_error"
                    | "request_too_large" => Failure::Final(LlmError::Rejected(detail)),
                    _ => Failure::retryable(LlmError::Unavailable(detail)),
                });
            }
            // "ping", and event types added after this was written.
            _ => {}
        }
        Ok(Step::Nothing)
    }

    /// Prompt tokens include the cached parts of the prompt.
    fn read_input_usage(&mut self, usage: &Value) {
        self.input_tokens = [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .iter()
        .filter_map(|field| tokens(usage, field))
        .fold(0u32, u32::saturating_add);
    }

    fn finish(self) -> Result<Completion, Failure> {
        if !self.stopped {
            return Err(Failure::retryable(LlmError::Unavailable(
                "the stream ended before message_stop".into(),
            )));
        }
        Ok(Completion {
            text: self.text,
            tool_calls: self.tool_calls,
            usage: Usage {
                prompt_tokens: self.input_tokens,
                completion_tokens: self.output_tokens,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use agentry_actors::llm::ChatMessage;
    use agentry_actors::tools;
    use agentry_actors::Secret;

    use super::*;
    use crate::llm::test_support::{drain, split_bytes, test_policy, MockServer, Reply};

    const KEY: &str = "sk-ant-SECRET-abcdef0123456";

    fn request() -> CompletionRequest {
        CompletionRequest {
            messages: vec![
                ChatMessage::system("You are the front desk."),
                ChatMessage::system("Knowledge: open 9 to 5."),
                ChatMessage::assistant("Hi! How can I help?"),
                ChatMessage::user("Can I book Tuesday?"),
                ChatMessage::user("Around 10am."),
            ],
            tools: tools::catalog(),
            tool_choice: ToolChoice::Auto,
            tool_rounds: Vec::new(),
            grounding: Vec::new(),
            max_tokens: 0,
            temperature: 1.5,
        }
    }

    fn provider(base: &str) -> AnthropicProvider {
        let mut config = ProviderConfig::new(ProviderKind::Anthropic, "claude-test");
        config.base_url = Some(base.to_owned());
        config.api_key = Some(Secret::new(KEY.into()));
        AnthropicProvider::from_config(&config, reqwest::Client::new())
            .unwrap()
            .with_policy(test_policy())
    }

    fn event(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn documented_stream() -> String {
        [
            event("message_start", json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-test","stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}})),
            event("content_block_start", json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
            event("ping", json!({"type":"ping"})),
            event("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Tuesday at 10 "}})),
            event("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"works — I'll request it."}})),
            event("content_block_stop", json!({"type":"content_block_stop","index":0})),
            event("content_block_start", json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"book_appointment","input":{}}})),
            event("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}})),
            event("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"requested_"}})),
            event("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"time\": \"Tuesday 10am\"}"}})),
            event("content_block_stop", json!({"type":"content_block_stop","index":1})),
            event("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":31}})),
            event("message_stop", json!({"type":"message_stop"})),
        ]
        .concat()
    }

    #[test]
    fn earlier_rounds_go_back_as_tool_use_and_tool_result_blocks() {
        let mut request = request();
        request.tool_rounds.push(ToolRound {
            text: String::new(),
            calls: vec![ToolCall {
                id: "toolu_1".into(),
                name: "book_appointment".into(),
                arguments: json!({"requested_time": "Tuesday 10am"}),
            }],
            results: vec![agentry_actors::llm::ToolResult {
                call_id: "toolu_1".into(),
                output: json!({"status": "rejected", "errors": ["x"]}),
                is_error: true,
            }],
        });
        request.tool_choice = ToolChoice::None;
        let body = provider("http://127.0.0.1:9").body(&request);
        let messages = body["messages"].as_array().unwrap();
        let n = messages.len();
        assert_eq!(
            messages[n - 3]["role"],
            "user",
            "the visitor's turn comes first"
        );
        assert_eq!(
            messages[n - 2],
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "book_appointment",
                 "input": {"requested_time": "Tuesday 10am"}}
            ]})
        );
        assert_eq!(
            messages[n - 1],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": r#"{"errors":["x"],"status":"rejected"}"#, "is_error": true}
            ]})
        );
        assert_eq!(body["tool_choice"], json!({"type": "none"}));
    }

    #[tokio::test]
    async fn anthropic_streams_text_and_a_tool_use_block() {
        let server =
            MockServer::start(|_| Reply::sse_bytes(split_bytes(&documented_stream(), 11))).await;
        let provider = provider(&server.root);
        let (tx, rx) = mpsc::unbounded_channel();

        let completion = provider.complete(&request(), &tx).await.unwrap();

        let call = ToolCall {
            id: "toolu_01".into(),
            name: "book_appointment".into(),
            arguments: json!({"requested_time": "Tuesday 10am"}),
        };
        assert_eq!(completion.text, "Tuesday at 10 works — I'll request it.");
        assert_eq!(completion.tool_calls, vec![call.clone()]);
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 30,
                completion_tokens: 31
            }
        );
        assert_eq!(
            drain(rx),
            vec![
                CompletionEvent::Delta("Tuesday at 10 ".into()),
                CompletionEvent::Delta("works — I'll request it.".into()),
                CompletionEvent::ToolCall(call),
            ]
        );

        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let seen = &seen[0];
        assert_eq!(seen.path, "/v1/messages");
        assert_eq!(seen.header("x-api-key").as_deref(), Some(KEY));
        assert_eq!(
            seen.header("anthropic-version").as_deref(),
            Some("2023-06-01")
        );
        assert_eq!(seen.header("authorization"), None);
        let body = &seen.body;
        assert_eq!(body["model"], "claude-test");
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(
            body["system"],
            "You are the front desk.\n\nKnowledge: open 9 to 5."
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "Can I book Tuesday?\n\nAround 10am."}
            ])
        );
        assert_eq!(body["tools"].as_array().unwrap().len(), 4);
        assert_eq!(body["tools"][1]["name"], "book_appointment");
        assert_eq!(body["tools"][1]["input_schema"]["type"], "object");
        assert!(body["tools"][1].get("parameters").is_none());
    }

    #[tokio::test]
    async fn an_overloaded_error_event_before_any_text_is_retried() {
        let server = MockServer::start(|attempt| {
            if attempt == 0 {
                Reply::sse_bytes(vec![event(
                    "error",
                    json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
                )
                .into_bytes()])
            } else {
                Reply::sse_bytes(split_bytes(&documented_stream(), 40))
            }
        })
        .await;
        let (tx, _rx) = mpsc::unbounded_channel();

        let completion = provider(&server.root)
            .complete(&request(), &tx)
            .await
            .unwrap();

        assert_eq!(completion.tool_calls.len(), 1);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn a_529_retries_and_a_403_does_not() {
        let overloaded = MockServer::start(|_| {
            Reply::status(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
        })
        .await;
        let (tx, _rx) = mpsc::unbounded_channel();
        let error = provider(&overloaded.root)
            .complete(&request(), &tx)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, LlmError::Unavailable(m) if m.contains("HTTP 529 (overloaded_error)")),
            "{error}"
        );
        assert_eq!(overloaded.count(), 3);

        let body = json!({"type":"error","error":{"type":"authentication_error","message":format!("invalid x-api-key {KEY}")}});
        let forbidden = MockServer::start(move |_| Reply::json(401, &body)).await;
        let error = provider(&forbidden.root)
            .complete(&request(), &tx)
            .await
            .unwrap_err();
        assert!(matches!(error, LlmError::Rejected(_)), "{error}");
        assert_eq!(forbidden.count(), 1);
        assert!(!error.to_string().contains("SECRET"), "{error}");
    }

    #[tokio::test]
    async fn a_stream_without_message_stop_is_an_error_and_not_replayed_after_text() {
        let cut: String = documented_stream()
            .split("event: content_block_stop")
            .next()
            .unwrap()
            .to_owned();
        let server =
            MockServer::start(move |_| Reply::sse_bytes(vec![cut.clone().into_bytes()])).await;
        let (tx, rx) = mpsc::unbounded_channel();

        let error = provider(&server.root)
            .complete(&request(), &tx)
            .await
            .unwrap_err();

        assert!(matches!(error, LlmError::Unavailable(_)), "{error}");
        assert_eq!(server.count(), 1);
        assert_eq!(drain(rx).len(), 2);
    }

    #[test]
    fn a_tool_use_without_input_deltas_takes_its_initial_input() {
        let mut state = StreamState::default();
        state
            .apply(&json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"escalate_to_human","input":{}}}).to_string())
            .unwrap();
        let step = state
            .apply(&json!({"type":"content_block_stop","index":0}).to_string())
            .unwrap();
        assert!(
            matches!(step, Step::ToolCall(ToolCall { ref arguments, .. }) if *arguments == json!({}))
        );
    }
}
