//! The OpenAI-compatible Chat Completions client, streamed: OpenAI, Azure
//! OpenAI, Ollama and vLLM speak the same protocol at different URLs with
//! different authentication.
//!
//! Text arrives as `choices[0].delta.content`; tool calls arrive as fragments
//! keyed by `index` whose `function.arguments` strings concatenate to JSON, so
//! they are assembled and parsed only when the stream ends.

use agentry_actors::llm::{
    ChatMessage, Completion, CompletionEvent, CompletionRequest, LlmError, LlmProvider, ToolCall,
    ToolChoice, ToolRound, Usage,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::transport::{EventStream, Failure, Operation, RetryPolicy, Transport};
use super::{estimate_prompt_tokens, estimate_tokens, LlmConfigError, OpenAiEndpoint};
use super::{ProviderConfig, ProviderKind};

/// Streams chat completions from an OpenAI-compatible server; the
/// configuration's kind picks the URL scheme and the authentication header.
pub struct OpenAiProvider {
    transport: Transport,
    endpoint: OpenAiEndpoint,
    kind: ProviderKind,
    model: String,
}

impl OpenAiProvider {
    /// For a validated configuration of kind openai, azure, ollama or vllm.
    pub fn from_config(
        config: &ProviderConfig,
        http: reqwest::Client,
    ) -> Result<Self, LlmConfigError> {
        let endpoint = OpenAiEndpoint::for_operation(config, "chat/completions")?;
        let model = match (config.kind, config.model.trim()) {
            // Azure routes by deployment; records still want a model name.
            (ProviderKind::Azure, "") => config.azure_deployment.clone().unwrap_or_default(),
            (_, model) => model.to_owned(),
        };
        Ok(Self {
            transport: Transport::new(
                http,
                RetryPolicy::from_config(config),
                config.kind.as_str(),
                endpoint.auth.secret().cloned(),
            ),
            endpoint,
            kind: config.kind,
            model,
        })
    }

    #[cfg(test)]
    pub(crate) fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.transport.policy = policy;
        self
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut messages = serde_json::to_value(&request.messages).expect("messages serialize");
        let messages_array = messages.as_array_mut().expect("an array");
        for round in &request.tool_rounds {
            messages_array.extend(round_messages(round));
        }
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
            "temperature": request.temperature,
        });
        if request.max_tokens > 0 {
            // OpenAI's newer models refuse `max_tokens`; compatible servers may not know the new name.
            let field = match self.kind {
                ProviderKind::OpenAi => "max_completion_tokens",
                _ => "max_tokens",
            };
            body[field] = json!(request.max_tokens);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": tool.name,
                            "description": tool.description,
                            "parameters": tool.parameters,
                        }
                    })
                })
                .collect();
            if request.tool_choice == ToolChoice::None {
                body["tool_choice"] = json!("none");
            }
        }
        body
    }

    async fn attempt(
        &self,
        body: &Value,
        messages: &[ChatMessage],
        events: &mpsc::UnboundedSender<CompletionEvent>,
    ) -> Result<Completion, Failure> {
        let request = self
            .endpoint
            .auth
            .apply(self.transport.client().post(&self.endpoint.url))
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
                if event.data.trim() == "[DONE]" {
                    stream.done = true;
                    break 'read;
                }
                match stream.apply(&event.data) {
                    Ok(Some(delta)) => {
                        emitted = true;
                        // A closed receiver means the visitor left; finish anyway for the record.
                        let _ = events.send(CompletionEvent::Delta(delta));
                    }
                    Ok(None) => {}
                    Err(failure) => {
                        return Err(self.transport.scrub_failure(failure).after_output(emitted))
                    }
                }
            }
        }
        let completion = stream
            .finish(messages)
            .map_err(|failure| failure.after_output(emitted))?;
        for call in &completion.tool_calls {
            let _ = events.send(CompletionEvent::ToolCall(call.clone()));
        }
        Ok(completion)
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn provider(&self) -> &str {
        self.kind.as_str()
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
            .run(Operation::Chat, || {
                self.attempt(&body, &request.messages, events)
            })
            .await
    }
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallFragment>>,
}

#[derive(Debug, Deserialize)]
struct ToolCallFragment {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionFragment>,
}

#[derive(Debug, Deserialize)]
struct FunctionFragment {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// What the stream has said so far.
#[derive(Debug, Default)]
struct StreamState {
    text: String,
    calls: Vec<PartialCall>,
    /// Wire `index` → position in `calls`.
    slots: Vec<(usize, usize)>,
    usage: Option<Usage>,
    finished: bool,
    done: bool,
}

impl StreamState {
    /// Applies one `data:` payload, returning the text delta it carries.
    fn apply(&mut self, data: &str) -> Result<Option<String>, Failure> {
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            Failure::Final(LlmError::Protocol(format!("unreadable stream chunk: {e}")))
        })?;
        if let Some(error) = chunk.error {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error event in the stream");
            return Err(Failure::retryable(LlmError::Unavailable(format!(
                "the stream reported an error: {message}"
            ))));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            });
        }
        let mut delta_text = String::new();
        // n = 1 is what we ask for; other choices would be alternative answers.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(content) = delta.content {
                delta_text.push_str(&content);
            }
            for (position, fragment) in delta.tool_calls.into_iter().flatten().enumerate() {
                self.apply_fragment(fragment.index.unwrap_or(position), fragment);
            }
        }
        if delta_text.is_empty() {
            return Ok(None);
        }
        self.text.push_str(&delta_text);
        Ok(Some(delta_text))
    }

    fn apply_fragment(&mut self, index: usize, fragment: ToolCallFragment) {
        let existing = self
            .slots
            .iter()
            .rev()
            .find(|(wire, _)| *wire == index)
            .map(|(_, slot)| *slot);
        let id = fragment.id.filter(|id| !id.is_empty());
        // A fresh id at a used index is a new call (some servers send every call at index 0).
        let slot = match (existing, &id) {
            (Some(slot), Some(id))
                if !self.calls[slot].id.is_empty() && self.calls[slot].id != *id =>
            {
                None
            }
            (existing, _) => existing,
        };
        let slot = slot.unwrap_or_else(|| {
            self.calls.push(PartialCall::default());
            self.slots.push((index, self.calls.len() - 1));
            self.calls.len() - 1
        });
        let call = &mut self.calls[slot];
        if let Some(id) = id {
            call.id = id;
        }
        if let Some(function) = fragment.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                call.name = name;
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
    }

    /// The completion, once the stream is over: tool calls parsed, usage
    /// from the provider or estimated.
    fn finish(self, messages: &[ChatMessage]) -> Result<Completion, Failure> {
        if !self.done && !self.finished {
            return Err(Failure::retryable(LlmError::Unavailable(
                "the stream ended before the answer was complete".into(),
            )));
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (position, call) in self.calls.into_iter().enumerate() {
            if call.name.is_empty() {
                return Err(Failure::Final(LlmError::Protocol(format!(
                    "tool call {position} has no function name"
                ))));
            }
            let arguments = parse_arguments(&call.name, &call.arguments)?;
            let id = if call.id.is_empty() {
                format!("call_{position}")
            } else {
                call.id
            };
            tool_calls.push(ToolCall {
                id,
                name: call.name,
                arguments,
            });
        }
        let usage = self.usage.unwrap_or_else(|| Usage {
            prompt_tokens: estimate_prompt_tokens(messages),
            completion_tokens: estimate_tokens(self.text.chars().count()),
        });
        Ok(Completion {
            text: self.text,
            tool_calls,
            usage,
        })
    }
}

/// Tool arguments as a JSON object; no arguments at all means `{}`.
/// An earlier round in the chat-completions format: the assistant message
/// with its `tool_calls` (arguments as a JSON string), then one `tool`
/// message per result.
fn round_messages(round: &ToolRound) -> Vec<Value> {
    let calls: Vec<Value> = round
        .calls
        .iter()
        .map(|call| {
            json!({
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments.to_string() },
            })
        })
        .collect();
    let text = (!round.text.is_empty()).then_some(round.text.as_str());
    let mut messages = vec![json!({ "role": "assistant", "content": text, "tool_calls": calls })];
    messages.extend(round.results.iter().map(|result| {
        json!({
            "role": "tool",
            "tool_call_id": result.call_id,
            "content": result.output.to_string(),
        })
    }));
    messages
}

pub(crate) fn parse_arguments(name: &str, arguments: &str) -> Result<Value, Failure> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        // The raw arguments are model output; they stay out of the message.
        Ok(_) => Err(Failure::Final(LlmError::Protocol(format!(
            "arguments of tool call {name} are not a JSON object"
        )))),
        Err(e) => Err(Failure::Final(LlmError::Protocol(format!(
            "arguments of tool call {name} are not valid JSON: {e}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use agentry_actors::llm::{ChatMessage, GroundingPassage};
    use agentry_actors::tools;
    use agentry_actors::Secret;

    use super::*;
    use crate::llm::test_support::{drain, split_bytes, test_policy, MockServer, Reply};

    const KEY: &str = "sk-test-SECRET-0123456789";

    fn request() -> CompletionRequest {
        CompletionRequest {
            messages: vec![
                ChatMessage::system("You answer questions about the clinic."),
                ChatMessage::user("When are you open? My email is ana@example.com"),
            ],
            tools: tools::catalog(),
            tool_choice: ToolChoice::Auto,
            tool_rounds: Vec::new(),
            grounding: vec![GroundingPassage {
                title: "Hours".into(),
                text: "Open 9 to 5.".into(),
            }],
            max_tokens: 300,
            temperature: 0.2,
        }
    }

    fn config(kind: ProviderKind, base: &str) -> ProviderConfig {
        let mut config = ProviderConfig::new(kind, "gpt-test");
        config.base_url = Some(base.to_owned());
        config.api_key = Some(Secret::new(KEY.into()));
        config
    }

    fn provider(config: &ProviderConfig) -> OpenAiProvider {
        OpenAiProvider::from_config(config, reqwest::Client::new())
            .unwrap()
            .with_policy(test_policy())
    }

    fn sse(chunks: &[Value]) -> String {
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&format!("data: {chunk}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }

    /// Text in three deltas, then a tool call in four fragments, then usage.
    fn text_and_tool_stream() -> String {
        sse(&[
            json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}),
            json!({"choices":[{"index":0,"delta":{"content":"We are open "}}]}),
            json!({"choices":[{"index":0,"delta":{"content":"9–5, "}}]}),
            json!({"choices":[{"index":0,"delta":{"content":"café included."}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"capture_lead","arguments":""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"em"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ail\": \"ana@exa"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"mple.com\"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_def","function":{"name":"escalate_to_human","arguments":"{\"reason\":\"asked\"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"choices":[],"usage":{"prompt_tokens":42,"completion_tokens":17,"total_tokens":59}}),
        ])
    }

    #[tokio::test]
    async fn openai_streams_text_assembles_tool_calls_and_reads_usage() {
        let server =
            MockServer::start(|_| Reply::sse_bytes(split_bytes(&text_and_tool_stream(), 7))).await;
        let provider = provider(&config(ProviderKind::OpenAi, &server.base));
        let (tx, rx) = mpsc::unbounded_channel();

        let completion = provider.complete(&request(), &tx).await.unwrap();

        assert_eq!(completion.text, "We are open 9–5, café included.");
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 42,
                completion_tokens: 17
            }
        );
        let expected_calls = vec![
            ToolCall {
                id: "call_abc".into(),
                name: "capture_lead".into(),
                arguments: json!({"email": "ana@example.com"}),
            },
            ToolCall {
                id: "call_def".into(),
                name: "escalate_to_human".into(),
                arguments: json!({"reason": "asked"}),
            },
        ];
        assert_eq!(completion.tool_calls, expected_calls);
        let events = drain(rx);
        let deltas: String = events
            .iter()
            .filter_map(|e| match e {
                CompletionEvent::Delta(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, completion.text);
        let calls: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                CompletionEvent::ToolCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(calls, expected_calls);

        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(
            seen[0].header("authorization").as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(seen[0].header("api-key"), None);
        let body = &seen[0].body;
        assert_eq!(body["model"], "gpt-test");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_completion_tokens"], 300);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(
            body["messages"][1]["content"],
            "When are you open? My email is ana@example.com"
        );
        assert_eq!(body["tools"].as_array().unwrap().len(), 4);
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "capture_lead");
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
    }

    /// A round that called a tool, and what the tool answered.
    fn lead_round() -> ToolRound {
        ToolRound {
            text: "One moment.".into(),
            calls: vec![ToolCall {
                id: "call_abc".into(),
                name: "capture_lead".into(),
                arguments: json!({"email": "ana@example.com"}),
            }],
            results: vec![agentry_actors::llm::ToolResult {
                call_id: "call_abc".into(),
                output: json!({"status": "saved"}),
                is_error: false,
            }],
        }
    }

    #[test]
    fn earlier_rounds_go_back_as_tool_calls_and_tool_messages() {
        let provider = provider(&config(ProviderKind::OpenAi, "http://127.0.0.1:9"));
        let mut request = request();
        request.tool_rounds.push(lead_round());
        request.tool_choice = ToolChoice::None;
        let body = provider.body(&request);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["role"], "assistant");
        assert_eq!(messages[2]["content"], "One moment.");
        assert_eq!(messages[2]["tool_calls"][0]["id"], "call_abc");
        assert_eq!(messages[2]["tool_calls"][0]["type"], "function");
        let arguments = messages[2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("arguments travel as a JSON string");
        assert_eq!(
            serde_json::from_str::<Value>(arguments).unwrap(),
            json!({"email": "ana@example.com"})
        );
        assert_eq!(messages[3]["role"], "tool");
        assert_eq!(messages[3]["tool_call_id"], "call_abc");
        assert_eq!(messages[3]["content"], r#"{"status":"saved"}"#);
        assert_eq!(body["tool_choice"], "none");
        assert!(provider.body(&self::request()).get("tool_choice").is_none());
    }

    #[tokio::test]
    async fn deltas_arrive_one_per_chunk_when_the_server_sends_them_apart() {
        let stream = sse(&[
            json!({"choices":[{"index":0,"delta":{"content":"Hel"}}]}),
            json!({"choices":[{"index":0,"delta":{"content":"lo"}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
        ]);
        // One event per network chunk.
        let pieces: Vec<Vec<u8>> = stream
            .split_inclusive("\n\n")
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let server = MockServer::start(move |_| Reply::sse_bytes(pieces.clone())).await;
        let mut ollama = ProviderConfig::new(ProviderKind::Ollama, "llama3.1");
        ollama.base_url = Some(server.base.clone());
        let provider = provider(&ollama);
        let (tx, rx) = mpsc::unbounded_channel();

        let completion = provider.complete(&request(), &tx).await.unwrap();

        assert_eq!(
            drain(rx),
            vec![
                CompletionEvent::Delta("Hel".into()),
                CompletionEvent::Delta("lo".into())
            ]
        );
        assert_eq!(completion.text, "Hello");
        assert!(completion.tool_calls.is_empty());
        // No usage chunk: estimated from characters.
        assert_eq!(completion.usage.completion_tokens, 2);
        assert!(completion.usage.prompt_tokens > 0);
        let seen = &server.requests()[0];
        assert_eq!(seen.header("authorization"), None, "no key, no header");
        assert_eq!(seen.body["model"], "llama3.1");
        assert_eq!(seen.body["max_tokens"], 300);
    }

    #[tokio::test]
    async fn azure_uses_the_deployment_url_and_api_key_header() {
        let server =
            MockServer::start(|_| Reply::sse_bytes(split_bytes(&text_and_tool_stream(), 64))).await;
        let mut azure = config(ProviderKind::Azure, &server.root);
        azure.model = String::new();
        azure.azure_deployment = Some("chat-prod".into());
        azure.azure_api_version = Some("2024-10-21".into());
        let provider = provider(&azure);
        assert_eq!(
            (provider.provider(), provider.model()),
            ("azure", "chat-prod")
        );
        let (tx, _rx) = mpsc::unbounded_channel();

        let completion = provider.complete(&request(), &tx).await.unwrap();

        assert_eq!(completion.tool_calls.len(), 2);
        let seen = &server.requests()[0];
        assert_eq!(
            seen.path,
            "/openai/deployments/chat-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(seen.header("api-key").as_deref(), Some(KEY));
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.body["stream"], true);
        assert_eq!(seen.body["max_tokens"], 300);
    }

    #[tokio::test]
    async fn a_429_is_retried_after_its_retry_after() {
        let server = MockServer::start(|attempt| {
            if attempt == 0 {
                Reply::status(
                    429,
                    r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
                )
                // Capped to the test policy's 50 ms, or this test would wait a second.
                .with_header("retry-after", "1")
            } else {
                Reply::sse_bytes(split_bytes(&text_and_tool_stream(), 16))
            }
        })
        .await;
        let provider = provider(&config(ProviderKind::Vllm, &server.base));
        let (tx, _rx) = mpsc::unbounded_channel();

        let started = std::time::Instant::now();
        let completion = provider.complete(&request(), &tx).await.unwrap();

        assert_eq!(completion.text, "We are open 9–5, café included.");
        assert_eq!(server.count(), 2);
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[tokio::test]
    async fn repeated_500s_end_unavailable_after_every_retry() {
        let server = MockServer::start(|_| Reply::status(500, "upstream exploded")).await;
        let provider = provider(&config(ProviderKind::OpenAi, &server.base));
        let (tx, rx) = mpsc::unbounded_channel();

        let error = provider.complete(&request(), &tx).await.unwrap_err();

        assert!(
            matches!(&error, LlmError::Unavailable(m) if m.contains("HTTP 500")),
            "{error}"
        );
        assert_eq!(server.count(), test_policy().max_retries as usize + 1);
        assert!(drain(rx).is_empty());
    }

    #[tokio::test]
    async fn a_401_is_rejected_at_once_and_never_shows_the_key() {
        let server = MockServer::start(|_| {
            Reply::status(
                401,
                &json!({"error":{"message": format!("Incorrect API key provided: {KEY}. Or sk-test-SEC***6789."),"type":"invalid_request_error","code":"invalid_api_key"}}).to_string(),
            )
        })
        .await;
        let provider = provider(&config(ProviderKind::OpenAi, &server.base));
        let (tx, _rx) = mpsc::unbounded_channel();

        let error = provider.complete(&request(), &tx).await.unwrap_err();

        assert!(matches!(error, LlmError::Rejected(_)), "{error}");
        assert_eq!(server.count(), 1);
        let message = error.to_string();
        assert!(
            message.contains("HTTP 401 (invalid_request_error)"),
            "{message}"
        );
        assert!(
            !message.contains(KEY) && !message.contains("SECRET"),
            "{message}"
        );
        assert!(!format!("{error:?}").contains("SECRET"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_as_unavailable() {
        let server = MockServer::start(|_| {
            Reply::sse_bytes(vec![b"data: {}\n\n".to_vec()])
                .delay_headers(Duration::from_millis(150))
        })
        .await;
        let mut policy = test_policy();
        policy.timeout = Duration::from_millis(40);
        policy.max_retries = 0;
        let provider = OpenAiProvider::from_config(
            &config(ProviderKind::OpenAi, &server.base),
            reqwest::Client::new(),
        )
        .unwrap()
        .with_policy(policy);
        let (tx, _rx) = mpsc::unbounded_channel();

        let error = provider.complete(&request(), &tx).await.unwrap_err();

        assert!(
            matches!(&error, LlmError::Unavailable(m) if m.contains("no response within")),
            "{error}"
        );
        assert!(!error.to_string().contains("SECRET"));
    }

    #[tokio::test]
    async fn a_connection_refused_is_unavailable_after_retries() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let provider = provider(&config(
            ProviderKind::OpenAi,
            &format!("http://{address}/v1"),
        ));
        let (tx, _rx) = mpsc::unbounded_channel();

        let error = provider.complete(&request(), &tx).await.unwrap_err();

        assert!(
            matches!(&error, LlmError::Unavailable(m) if m.starts_with("connection failed")),
            "{error}"
        );
        assert!(!error.to_string().contains("SECRET"));
    }

    #[tokio::test]
    async fn a_stream_cut_after_the_first_delta_is_not_replayed() {
        let partial = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Half an\"}}]}\n\n"
            .to_owned();
        let server =
            MockServer::start(move |_| Reply::sse_bytes(vec![partial.clone().into_bytes()])).await;
        let provider = provider(&config(ProviderKind::OpenAi, &server.base));
        let (tx, rx) = mpsc::unbounded_channel();

        let error = provider.complete(&request(), &tx).await.unwrap_err();

        assert!(matches!(error, LlmError::Unavailable(_)), "{error}");
        assert_eq!(server.count(), 1, "no retry once a delta went out");
        assert_eq!(drain(rx), vec![CompletionEvent::Delta("Half an".into())]);
    }

    #[tokio::test]
    async fn tool_arguments_that_are_not_json_are_a_protocol_error() {
        let stream = sse(&[
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"request_quote","arguments":"{\"details\": "}}]}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        ]);
        let server =
            MockServer::start(move |_| Reply::sse_bytes(vec![stream.clone().into_bytes()])).await;
        let provider = provider(&config(ProviderKind::OpenAi, &server.base));
        let (tx, _rx) = mpsc::unbounded_channel();

        let error = provider.complete(&request(), &tx).await.unwrap_err();

        assert!(matches!(error, LlmError::Protocol(_)), "{error}");
        assert_eq!(server.count(), 1);
    }

    #[test]
    fn every_call_at_index_zero_with_fresh_ids_stays_separate() {
        let mut state = StreamState::default();
        for (id, name) in [("a", "capture_lead"), ("b", "request_quote")] {
            let data = json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":id,"function":{"name":name,"arguments":"{}"}}]}}]});
            state.apply(&data.to_string()).unwrap();
        }
        state.done = true;
        let completion = state.finish(&[]).unwrap();
        let names: Vec<_> = completion
            .tool_calls
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["capture_lead", "request_quote"]);
    }
}
