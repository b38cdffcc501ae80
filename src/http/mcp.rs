//! `/mcp`: the Model Context Protocol server for MCP clients (Claude Desktop,
//! n8n, agents of the tenant's own), on the official Rust SDK's Streamable
//! HTTP transport.
//!
//! Its tools are operations of the REST API v1: a tool call runs the same
//! function as the REST route, with the same bearer token, the same scope
//! check, the same body rules and the same limits. The server is stateless
//! (no `Mcp-Session-Id`), so any instance behind the load balancer answers
//! any request; the token is checked on every one, so a revocation holds at once.

use std::sync::Arc;

use agentry_actors::AgentId;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::common::schema_for_type;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::Principal;
use super::json_body;
use super::routes::{conversations, documents, leads, webhook_deliveries};
use super::AppState;

/// The `/mcp` endpoint: callers authenticate first, then the MCP service answers.
pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    let max_body = state.settings.http.max_body_bytes;
    let handler = Agentry {
        state: state.clone(),
    };
    let config = StreamableHttpServerConfig::default()
        // No sessions: every request stands alone, on whichever instance gets it.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(max_body)
        // The SDK's Host check guards servers on a developer's loopback
        // against DNS rebinding, which needs ambient credentials; here
        // every request carries its bearer token, and the public host is
        // the load balancer's.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let mut router = OpenApiRouter::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state, authenticate));
    // The SDK's service is not a handler `routes!` can register, so its
    // operation is added here, beside the one `nest_service` that serves it.
    router.get_openapi_mut().merge(McpApi::openapi());
    router
}

#[derive(OpenApi)]
#[openapi(paths(mcp_endpoint))]
struct McpApi;

/// A JSON-RPC 2.0 message of the Model Context Protocol (`initialize`,
/// `tools/list`, `tools/call` …); see the MCP specification.
#[derive(ToSchema)]
#[allow(dead_code)]
struct JsonRpcMessage {
    #[schema(example = "2.0")]
    jsonrpc: String,
    /// Absent on a notification.
    #[schema(value_type = Option<Object>)]
    id: Option<Value>,
    method: Option<String>,
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
}

/// A refusal before any tool ran: a JSON-RPC error carrying the REST
/// error body as its `data`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct JsonRpcRefusal {
    jsonrpc: String,
    #[schema(value_type = Option<Object>)]
    id: Option<Value>,
    error: JsonRpcError,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct JsonRpcError {
    code: i64,
    message: String,
    #[schema(value_type = Object)]
    data: Value,
}

/// The MCP endpoint (Streamable HTTP, stateless, JSON responses): each tool
/// runs a REST route's code with its scope check. Served by the SDK's
/// service; this function only carries the operation's description.
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    security(("api_token" = []), ("dashboard" = [])),
    params(("accept" = String, Header, description = "`application/json, text/event-stream`")),
    request_body(content = JsonRpcMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC response", content_type = "application/json", body = Object),
        (status = 202, description = "A notification or response, accepted"),
        (status = 400, description = "Not a JSON-RPC message the server takes"),
        (status = 401, description = "No valid token", body = JsonRpcRefusal),
        (status = 406, description = "`Accept` names neither `application/json` nor `text/event-stream`"),
        (status = 415, description = "Not `Content-Type: application/json`"),
        (status = 429, description = "Rate limited or locked out", body = JsonRpcRefusal),
        (status = 503, description = "A dependency is briefly unavailable", body = JsonRpcRefusal)))]
#[allow(dead_code)]
async fn mcp_endpoint() {}

/// JSON-RPC's code for a request refused before any tool ran (server-defined range).
const REFUSED: i64 = -32001;

/// Refuses a request without a valid token with the REST API's status and
/// headers (401 with `WWW-Authenticate`, 429 with `Retry-After`, ...), and a
/// JSON-RPC error body that MCP clients show, carrying the REST error as its
/// `data`. An admitted caller reaches the tools through the request's extensions.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match Principal::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => {
            let rpc_error = json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": { "code": REFUSED, "message": error.to_string(), "data": error_body(&error)["error"] },
            });
            let (head, _) = error.into_response().into_parts();
            Response::from_parts(head, Body::from(rpc_error.to_string()))
        }
    }
}

#[derive(Clone)]
struct Agentry {
    state: AppState,
}

/// The tools, each mirroring a REST route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentryTool {
    ListLeads,
    GetLead,
    CreateLead,
    SearchConversations,
    GetConversation,
    AddKnowledgeDocument,
    ListWebhookDeliveries,
}

impl AgentryTool {
    const ALL: [Self; 7] = [
        Self::ListLeads,
        Self::GetLead,
        Self::CreateLead,
        Self::SearchConversations,
        Self::GetConversation,
        Self::AddKnowledgeDocument,
        Self::ListWebhookDeliveries,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::ListLeads => "list_leads",
            Self::GetLead => "get_lead",
            Self::CreateLead => "create_lead",
            Self::SearchConversations => "search_conversations",
            Self::GetConversation => "get_conversation",
            Self::AddKnowledgeDocument => "add_knowledge_document",
            Self::ListWebhookDeliveries => "list_webhook_deliveries",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }

    fn definition(self) -> Tool {
        let (description, schema, read_only) = match self {
            Self::ListLeads => (
                "List the tenant's leads, newest first (scope leads:read).",
                schema_for_type::<leads::LeadQuery>(),
                true,
            ),
            Self::GetLead => (
                "One lead with its bookings and quote requests (scope leads:read).",
                schema_for_type::<LeadId>(),
                true,
            ),
            Self::CreateLead => (
                "Add a lead; it needs an email or a phone. Emits lead.created (scope leads:write).",
                schema_for_type::<leads::CreateLead>(),
                false,
            ),
            Self::SearchConversations => (
                "Find conversations by what was said (q), status, agent or start time, newest first (scope conversations:read).",
                schema_for_type::<conversations::ConversationQuery>(),
                true,
            ),
            Self::GetConversation => (
                "One conversation with its transcript (scope conversations:read).",
                schema_for_type::<ConversationId>(),
                true,
            ),
            Self::AddKnowledgeDocument => (
                "Add a document to an agent's knowledge base; it is ingested in the background (scope knowledge:write).",
                schema_for_type::<NewAgentDocument>(),
                false,
            ),
            Self::ListWebhookDeliveries => (
                "List webhook delivery attempts, newest first (scope webhooks:read).",
                schema_for_type::<webhook_deliveries::DeliveryQuery>(),
                true,
            ),
        };
        Tool::new(self.name(), description, schema).with_annotations(
            ToolAnnotations::new()
                .read_only(read_only)
                .destructive(false),
        )
    }

    /// Runs the tool's REST operation; its result, or the REST API's error.
    async fn run(self, state: &AppState, caller: &Principal, arguments: &Value) -> ToolOutcome {
        match self {
            Self::ListLeads => {
                let query = input(arguments)?;
                output(leads::list_leads(state, caller, query).await?)
            }
            Self::GetLead => {
                let LeadId { lead_id } = input(arguments)?;
                output(leads::get_lead(state, caller, lead_id).await?)
            }
            Self::CreateLead => {
                let body = input(arguments)?;
                output(leads::create_lead(state, caller, body).await?)
            }
            Self::SearchConversations => {
                let query = input(arguments)?;
                output(conversations::list_conversations(state, caller, query).await?)
            }
            Self::GetConversation => {
                let ConversationId { conversation_id } = input(arguments)?;
                output(conversations::get_conversation(state, caller, conversation_id).await?)
            }
            Self::AddKnowledgeDocument => {
                let NewAgentDocument {
                    agent_id,
                    title,
                    content,
                    content_type,
                } = input(arguments)?;
                let document = documents::NewDocument {
                    title,
                    content,
                    content_type,
                };
                let agent = AgentId::from_uuid(agent_id);
                let (_, stored) = documents::add_document(state, caller, agent, document).await?;
                output(stored)
            }
            Self::ListWebhookDeliveries => {
                let query = input(arguments)?;
                output(webhook_deliveries::list_deliveries(state, caller, query).await?)
            }
        }
    }
}

type ToolOutcome = Result<Value, ApiError>;

/// The arguments, by the REST API's body rules (objects only, no NUL, lengths).
fn input<T: DeserializeOwned>(arguments: &Value) -> Result<T, ApiError> {
    json_body::from_value(arguments).map_err(|error| ApiError::Invalid(error.to_string()))
}

fn output(value: impl Serialize) -> ToolOutcome {
    serde_json::to_value(value).map_err(|error| ApiError::Internal(error.to_string()))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LeadId {
    lead_id: Uuid,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConversationId {
    conversation_id: Uuid,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewAgentDocument {
    /// The agent whose knowledge base gets the document.
    agent_id: Uuid,
    /// 1 to 300 characters.
    title: String,
    content: String,
    /// `text` (default), `markdown` or `html`.
    content_type: Option<String>,
}

impl ServerHandler for Agentry {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentry", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tenant's leads, conversations, knowledge base and webhook deliveries. \
                 Each tool needs a scope of the API token it is called with.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            AgentryTool::ALL.map(AgentryTool::definition).to_vec(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = AgentryTool::parse(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("no tool named {}", request.name),
                None,
            ));
        };
        // The authentication layer put the caller there; without it nothing runs.
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("the caller is unknown", None))?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        metrics::counter!("agentry_mcp_tool_calls_total", "tool" => tool.name()).increment(1);
        let result = match tool.run(&self.state, &caller, &arguments).await {
            Ok(value) => CallToolResult::structured(wrap_object(value)),
            Err(error) => {
                metrics::counter!("agentry_mcp_tool_errors_total", "tool" => tool.name())
                    .increment(1);
                CallToolResult::structured_error(error_body(&error))
            }
        };
        Ok(result.into())
    }
}

/// Structured content must be an object; every operation's result is one already.
fn wrap_object(value: Value) -> Value {
    if value.is_object() {
        value
    } else {
        json!({ "result": value })
    }
}

/// The REST API's JSON error body, so an MCP client reads the same code and message.
fn error_body(error: &ApiError) -> Value {
    if let ApiError::Internal(detail) = error {
        tracing::error!(error = %detail, "MCP tool failed");
    }
    json!({ "error": { "code": error.code(), "status": error.status().as_u16(), "message": error.to_string() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_parses_back_from_its_name() {
        for tool in AgentryTool::ALL {
            assert_eq!(AgentryTool::parse(tool.name()), Some(tool));
            let definition = tool.definition();
            assert_eq!(
                definition.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                tool.name()
            );
        }
        assert_eq!(AgentryTool::parse("drop_tables"), None);
    }

    #[test]
    fn tool_arguments_pass_the_body_rules() {
        let nul = json!({ "name": "a\u{0}b", "email": "a@example.com" });
        assert!(matches!(
            input::<leads::CreateLead>(&nul),
            Err(ApiError::Invalid(_))
        ));
        let unknown = json!({ "lead_id": Uuid::nil(), "extra": 1 });
        assert!(input::<LeadId>(&unknown).is_err());
        assert!(input::<LeadId>(&json!({ "lead_id": Uuid::nil() })).is_ok());
    }
}
