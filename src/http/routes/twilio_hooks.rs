//! `/api/twilio/*`: what Twilio calls for a tenant's numbers. Every request
//! names its tenant by one of the tenant's numbers and is signed with that
//! tenant's auth token (`X-Twilio-Signature` over the public URL and the
//! parameters); an unsigned or wrongly signed one is 403 before anything is
//! read or written for it.
//!
//! - `POST /sms`: compliance keywords (STOP, START, HELP and synonyms) first,
//!   answered even to a suppressed sender; then a chat turn on channel `sms`,
//!   one conversation per number and sender, answered with `<Message>` cut to
//!   whole SMS segments. A reply later than `twilio.webhook_timeout_secs` is
//!   answered with empty TwiML and sent through the REST API instead.
//! - `POST /sms/status`: delivery statuses of those later replies.
//! - `POST /voice`, `/voice/gather`, `/voice/status`: a call's greeting, each
//!   caller utterance as a turn on channel `voice` (transcript scrubbed),
//!   `<Dial>` to the tenant's number when the agent escalates, and the end of
//!   the call. With `twilio.media_streams`, the greeting also starts a media
//!   stream recording the caller (`super::twilio_media`).
//! - `POST /voice/recording?number=…`: Twilio's recording status callback.
//!   It carries no `To`, so the tenant's number rides in the callback URL's
//!   query, which the signature covers. A completed recording is downloaded
//!   while Twilio waits (at most `recordings.fetch_timeout_secs`), sealed and
//!   stored; a failed download is logged, counted and answered 503, so it
//!   shows in Twilio's debugger and is retried where the URL asks Twilio to.

use std::time::Duration;

use agentry_actors::chat_session::TurnRequest;
use agentry_actors::pipeline::TurnHandle;
use agentry_actors::ports::TurnChannel;
use agentry_actors::{AgentId, ConversationId, TenantId};
use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::twilio::{self, CalledNumber, OutboundSms};
use crate::domain::first_chars;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::rate_limit::Tier;
use crate::recordings::fetch::FetchError;
use crate::recordings::media_stream::is_sid;
use crate::recordings::{NewAudio, Outcome, RecordingEvent, Saved, Source};
use crate::twilio::sms_text::{self, Keyword};
use crate::twilio::twiml::{Response as TwiML, SpeechTimeout};
use crate::twilio::{signature, speech};

pub const OPTED_OUT: &str = "You have been unsubscribed and will receive no more messages from this number. Reply START to resubscribe.";
pub const OPTED_IN: &str =
    "You have been resubscribed and will receive messages again. Reply STOP to unsubscribe.";
const GOODBYE: &str = "Thank you for calling. Goodbye.";
const CONNECTING: &str = "Connecting you now.";
const TOO_SLOW: &str = "Sorry, that is taking me too long. Could you say that again?";
const UNAVAILABLE: &str = "Sorry, I can't answer right now. Please try again later.";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sms))
        .routes(routes!(sms_status))
        .routes(routes!(voice))
        .routes(routes!(voice_gather))
        .routes(routes!(voice_status))
        .routes(routes!(voice_recording))
}

// The form parameters each webhook reads, for the API document (the
// handlers read the signed form as Twilio sent it, in order: see [`Signed`]).
// Twilio sends many more, which are signed and ignored.

/// An inbound text message.
#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
struct SmsForm {
    /// The tenant's number texted (E.164).
    To: String,
    /// The sender (E.164).
    From: String,
    Body: Option<String>,
    MessageSid: Option<String>,
}

/// A status callback of a message the tenant's number sent.
#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
struct SmsStatusForm {
    /// The tenant's number that sent it.
    From: String,
    MessageSid: String,
    MessageStatus: Option<String>,
    SmsStatus: Option<String>,
    ErrorCode: Option<String>,
}

/// A call, or a call's event.
#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
struct CallForm {
    /// The tenant's number called (E.164).
    To: String,
    From: Option<String>,
    CallSid: String,
    /// What the caller said (`/voice/gather`).
    SpeechResult: Option<String>,
    /// The call's state (`/voice/status`): `completed`, `busy` …
    CallStatus: Option<String>,
}

/// A recording status callback (the tenant's number is in the query).
#[derive(ToSchema)]
#[allow(dead_code, non_snake_case)]
struct RecordingForm {
    /// Only `completed` is acted on.
    RecordingStatus: String,
    RecordingSid: String,
    CallSid: String,
    /// Downloaded only from `twilio.recording_hosts`.
    RecordingUrl: String,
    RecordingDuration: Option<String>,
    AccountSid: Option<String>,
}

/// The callback URL's query: the tenant's number.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct RecordingQuery {
    /// The tenant's number, E.164 (`%2B14155550100`).
    number: String,
}

/// Where a request names the tenant's number.
#[derive(Clone, Copy)]
enum NumberIn {
    /// A form parameter: `To` for what reaches the tenant, `From` for its
    /// own outbound messages.
    Form(&'static str),
    /// The `number` query parameter of the URL Twilio was given (`%2B` or a
    /// bare `+`, which form decoding reads as a space); the signature covers it.
    Query,
}

/// Where a route's requests name the tenant's number (a type, so the
/// extractor below names it in the handler's signature).
trait NumberSource {
    const IN: NumberIn;
}

/// The number called or texted: what reaches the tenant.
struct CalledTo;
/// The tenant's own number sending: statuses of its outbound messages.
struct SentFrom;
/// The `number` query parameter (recording callbacks name no number).
struct InQuery;

impl NumberSource for CalledTo {
    const IN: NumberIn = NumberIn::Form("To");
}

impl NumberSource for SentFrom {
    const IN: NumberIn = NumberIn::Form("From");
}

impl NumberSource for InQuery {
    const IN: NumberIn = NumberIn::Query;
}

/// A request Twilio signed for the tenant's number found as `N` says; see
/// [`Inbound::verify`] for what is checked before a handler runs.
struct Signed<N>(Inbound, std::marker::PhantomData<N>);

impl<N: NumberSource> FromRequest<AppState> for Signed<N> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let uri = request
            .extensions()
            .get::<OriginalUri>()
            .cloned()
            .unwrap_or_else(|| OriginalUri(request.uri().clone()));
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(rejection.body_text())
                }
            })?;
        let inbound = Inbound::verify(state, &uri, &headers, &body, N::IN).await?;
        Ok(Self(inbound, std::marker::PhantomData))
    }
}

/// A request Twilio signed for one of a tenant's numbers.
struct Inbound {
    params: Vec<(String, String)>,
    number: CalledNumber,
}

impl Inbound {
    /// Checks, in order: the form, the number (see [`NumberIn`]), the
    /// signature, and the tenant's tier for provider webhooks.
    async fn verify(
        state: &AppState,
        uri: &OriginalUri,
        headers: &HeaderMap,
        body: &Bytes,
        number_in: NumberIn,
    ) -> Result<Self, ApiError> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/x-www-form-urlencoded".into(),
            ));
        }
        let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        // PostgreSQL text cannot hold NUL: such a parameter would fail its
        // query (a 500) rather than be refused. Twilio never sends one.
        if params
            .iter()
            .any(|(key, value)| key.contains('\0') || value.contains('\0'))
        {
            return Err(ApiError::BadRequest(
                "a form parameter holds a NUL character".into(),
            ));
        }
        let called = match number_in {
            NumberIn::Form(field) => param(&params, field)
                .map(str::to_owned)
                .ok_or_else(|| ApiError::BadRequest(format!("{field} is missing")))?,
            NumberIn::Query => query_number(uri).ok_or_else(|| {
                ApiError::BadRequest("the URL's number query parameter is missing".into())
            })?,
        };
        if called.contains('\0') {
            return Err(ApiError::BadRequest(
                "the number holds a NUL character".into(),
            ));
        }
        let number = twilio::find_called(&state.store, &called)
            .await?
            .ok_or(ApiError::NotFound)?;
        let settings = &state.settings.twilio;
        if settings.verify_signatures {
            check_signature(state, uri, headers, &params, &number)?;
        }
        let tenant = number.tenant();
        state
            .limit(Tier::ProviderWebhooks, Some(tenant), &tenant.to_string())
            .await?;
        Ok(Self { params, number })
    }

    fn get(&self, name: &str) -> Option<&str> {
        param(&self.params, name)
    }

    fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::BadRequest(format!("{name} is missing")))
    }

    fn tenant(&self) -> TenantId {
        self.number.tenant()
    }

    fn agent(&self) -> AgentId {
        self.number.agent()
    }
}

fn query_number(uri: &OriginalUri) -> Option<String> {
    let query = uri.0.query()?;
    let (_, value) = form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "number")?;
    let digits = value.trim().trim_start_matches('+');
    (!digits.is_empty()).then(|| format!("+{digits}"))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn check_signature(
    state: &AppState,
    uri: &OriginalUri,
    headers: &HeaderMap,
    params: &[(String, String)],
    number: &CalledNumber,
) -> Result<(), ApiError> {
    let refused = |why: &str| ApiError::Forbidden(format!("Twilio signature refused: {why}"));
    let sealed = number
        .auth_token_sealed
        .as_deref()
        .ok_or_else(|| refused("the number's tenant has no Twilio credentials"))?;
    let token = state
        .keyring
        .open_string(&twilio::auth_token_owner(number.tenant()), sealed)
        .map_err(|error| ApiError::Internal(format!("opening a Twilio auth token: {error}")))?;
    let given = headers
        .get("x-twilio-signature")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| refused("X-Twilio-Signature is missing"))?;
    // The URL Twilio signed is the public one, rebuilt from configuration:
    // behind the load balancer, Host and scheme are not what Twilio called.
    let path = uri
        .0
        .path_and_query()
        .map_or_else(|| uri.0.path(), |pq| pq.as_str());
    let url = signature::public_url(&state.settings.twilio.public_base_url, path);
    if signature::verify(token.expose(), &url, params, given) {
        Ok(())
    } else {
        metrics::counter!("agentry_twilio_signature_refusals_total").increment(1);
        Err(refused("it does not match"))
    }
}

fn twiml(response: TwiML) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        response.to_xml(),
    )
        .into_response()
}

/// What every Twilio webhook answers: TwiML, or a refusal of the edge or of
/// the signature check (described once here, for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum TwilioWebhookResponses {
    /// TwiML
    #[response(status = 200, content_type = "text/xml")]
    TwiML(String),
    /// A parameter the webhook needs is missing or malformed
    #[response(status = 400)]
    BadRequest,
    /// The Twilio signature is missing or does not match
    #[response(status = 403)]
    BadSignature,
    /// No tenant has this number
    #[response(status = 404)]
    UnknownNumber,
    /// Request body is too large
    #[response(status = 413)]
    TooLarge,
    /// Not application/x-www-form-urlencoded
    #[response(status = 415)]
    NotAForm,
    /// The tenant's provider_webhooks tier is exhausted
    #[response(status = 429)]
    RateLimited,
    /// A dependency is briefly unavailable
    #[response(status = 503)]
    Unavailable,
}

/// The recording URL is refused (host, scheme, size or not a WAV)
#[derive(utoipa::IntoResponses)]
#[response(status = 422)]
#[allow(dead_code)]
struct RecordingRefused;

/// An inbound SMS: a compliance keyword, or a chat turn answered with `<Message>`.
#[utoipa::path(post, path = "/sms", tag = "twilio", security(("twilio_signature" = [])), request_body(content = SmsForm, content_type = "application/x-www-form-urlencoded"),
    responses(TwilioWebhookResponses))]
async fn sms(
    State(state): State<AppState>,
    Signed(inbound, _): Signed<CalledTo>,
) -> Result<Response, ApiError> {
    let (from, to) = (inbound.require("From")?, inbound.require("To")?);
    if !sms_text::is_e164(from) {
        return Err(ApiError::BadRequest("From must be an E.164 number".into()));
    }
    let text = inbound.get("Body").unwrap_or("");
    let tenant = inbound.tenant();
    let mut tx = state.store.tenant(tenant).await?;

    // Compliance first: acknowledged whatever the suppression list says.
    if let Some(keyword) = sms_text::keyword(text) {
        let answer = match keyword {
            Keyword::OptOut => {
                twilio::suppress(&mut tx, from, &text.trim().to_ascii_uppercase()).await?;
                OPTED_OUT.to_owned()
            }
            Keyword::OptIn => {
                twilio::unsuppress(&mut tx, from).await?;
                OPTED_IN.to_owned()
            }
            Keyword::Help => twilio::get_config(&mut tx)
                .await?
                .and_then(|config| config.help_text)
                .unwrap_or_else(|| state.settings.twilio.default_help_text.clone()),
        };
        tx.commit().await?;
        metrics::counter!("agentry_sms_keywords_total", "keyword" => keyword_label(keyword))
            .increment(1);
        return Ok(twiml(TwiML::new().message(&answer)));
    }
    if twilio::is_suppressed(&mut tx, from).await? {
        // Opted out: no reply on any path until START.
        return Ok(twiml(TwiML::new()));
    }
    let text = first_chars(text.trim(), state.settings.widget.max_message_chars);
    if text.is_empty() {
        return Ok(twiml(TwiML::new()));
    }
    let conversation =
        twilio::channel_conversation(&mut tx, inbound.agent(), "sms", &format!("{to}:{from}"))
            .await?;
    tx.commit().await?;

    let handle = submit(&state, &inbound, conversation, TurnChannel::Sms, text)?;
    let deadline = Duration::from_secs(state.settings.twilio.webhook_timeout_secs);
    let max_segments = state.settings.twilio.max_sms_segments;
    let mut reply = handle.reply;
    match tokio::time::timeout(deadline, &mut reply).await {
        Ok(Ok(Ok(stored))) => Ok(twiml(
            TwiML::new().message(&sms_text::fit(&stored.content, max_segments)),
        )),
        Ok(outcome) => {
            if let Ok(Err(error)) = outcome {
                tracing::warn!(%error, "SMS turn failed");
            }
            Ok(twiml(TwiML::new().message(UNAVAILABLE)))
        }
        Err(_) => {
            // Twilio stops waiting soon: the reply goes out through the REST
            // API once it is ready, from a queue any instance sends from.
            metrics::counter!("agentry_sms_late_replies_total").increment(1);
            let (ours, sender) = (to.to_owned(), from.to_owned());
            crate::telemetry::trace_context::spawn_in_span(async move {
                let outcome = match reply.await {
                    Ok(Ok(stored)) => {
                        let body = sms_text::fit(&stored.content, max_segments);
                        queue_reply(&state, tenant, conversation, &ours, &sender, &body).await
                    }
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("the turn was dropped".into()),
                };
                if let Err(error) = outcome {
                    tracing::warn!(%error, "late SMS reply not queued");
                }
            });
            Ok(twiml(TwiML::new()))
        }
    }
}

/// Queues `body` from the tenant's number `from` to the sender `to`.
async fn queue_reply(
    state: &AppState,
    tenant: TenantId,
    conversation: ConversationId,
    from: &str,
    to: &str,
    body: &str,
) -> Result<(), String> {
    let queued = async {
        let mut tx = state.store.tenant(tenant).await?;
        twilio::enqueue_outbound(
            &mut tx,
            &OutboundSms {
                conversation,
                from,
                to,
                body,
            },
        )
        .await?;
        tx.commit().await
    };
    queued.await.map_err(|error| error.to_string())
}

fn keyword_label(keyword: Keyword) -> &'static str {
    match keyword {
        Keyword::OptOut => "opt_out",
        Keyword::OptIn => "opt_in",
        Keyword::Help => "help",
    }
}

fn submit(
    state: &AppState,
    inbound: &Inbound,
    conversation: ConversationId,
    channel: TurnChannel,
    text: &str,
) -> Result<TurnHandle, ApiError> {
    state
        .pipeline
        .submit(TurnRequest {
            tenant: inbound.tenant(),
            agent: inbound.agent(),
            conversation,
            channel,
            text: text.to_owned(),
        })
        .map_err(|_| ApiError::Unavailable("the assistant"))
}

/// The delivery status of a reply sent through the REST API.
#[utoipa::path(post, path = "/sms/status", tag = "twilio", security(("twilio_signature" = [])), request_body(content = SmsStatusForm, content_type = "application/x-www-form-urlencoded"),
    responses(TwilioWebhookResponses))]
async fn sms_status(
    State(state): State<AppState>,
    Signed(inbound, _): Signed<SentFrom>,
) -> Result<Response, ApiError> {
    // A status of one of the tenant's own messages: the tenant's number is `From`.
    let sid = inbound.require("MessageSid")?;
    let status = inbound
        .get("MessageStatus")
        .or_else(|| inbound.get("SmsStatus"))
        .ok_or_else(|| ApiError::BadRequest("MessageStatus is missing".into()))?;
    let mut tx = state.store.tenant(inbound.tenant()).await?;
    twilio::record_status(&mut tx, sid, status, inbound.get("ErrorCode")).await?;
    tx.commit().await?;
    Ok(twiml(TwiML::new()))
}

/// The next `<Gather>` of a call: `say`, then listen; silence says goodbye.
fn listen(state: &AppState, say: &str) -> TwiML {
    listen_after(state, TwiML::new(), say)
}

/// [`listen`], after the verbs already in `response`.
fn listen_after(state: &AppState, response: TwiML, say: &str) -> TwiML {
    let action = signature::public_url(
        &state.settings.twilio.public_base_url,
        "/api/twilio/voice/gather",
    );
    response
        .gather_speech(
            &action,
            state.settings.twilio.gather_timeout_secs,
            SpeechTimeout::Auto,
            say,
        )
        .say(GOODBYE)
        .hangup()
}

/// An incoming call: the greeting and a speech `<Gather>`.
#[utoipa::path(post, path = "/voice", tag = "twilio", security(("twilio_signature" = [])), request_body(content = CallForm, content_type = "application/x-www-form-urlencoded"),
    responses(TwilioWebhookResponses))]
async fn voice(
    State(state): State<AppState>,
    Signed(inbound, _): Signed<CalledTo>,
) -> Result<Response, ApiError> {
    let call = inbound.require("CallSid")?;
    let mut tx = state.store.tenant(inbound.tenant()).await?;
    let greeting = twilio::get_config(&mut tx)
        .await?
        .and_then(|config| config.voice_greeting)
        .unwrap_or_else(|| state.settings.twilio.default_greeting.clone());
    metrics::counter!("agentry_voice_calls_total").increment(1);
    let mut response = TwiML::new();
    if state.settings.twilio.media_streams {
        if !is_sid(call, "CA") {
            return Err(ApiError::BadRequest(
                "CallSid must be CA followed by 32 hex digits".into(),
            ));
        }
        let url = super::twilio_media::stream_url(&state, inbound.tenant(), call);
        response = response.start_stream(&url);
    }
    Ok(twiml(listen_after(&state, response, &greeting)))
}

/// What the caller said: a turn answered with `<Say>` (or `<Dial>` on escalation).
#[utoipa::path(post, path = "/voice/gather", tag = "twilio", security(("twilio_signature" = [])), request_body(content = CallForm, content_type = "application/x-www-form-urlencoded"),
    responses(TwilioWebhookResponses))]
async fn voice_gather(
    State(state): State<AppState>,
    Signed(inbound, _): Signed<CalledTo>,
) -> Result<Response, ApiError> {
    let call = inbound.require("CallSid")?;
    let speech_text = first_chars(
        inbound.get("SpeechResult").unwrap_or("").trim(),
        state.settings.widget.max_message_chars,
    );
    if speech_text.is_empty() {
        return Ok(twiml(TwiML::new().say(GOODBYE).hangup()));
    }
    let tenant = inbound.tenant();
    let mut tx = state.store.tenant(tenant).await?;
    let conversation =
        twilio::channel_conversation(&mut tx, inbound.agent(), "voice", call).await?;
    tx.commit().await?;

    let handle = submit(
        &state,
        &inbound,
        conversation,
        TurnChannel::Voice,
        speech_text,
    )?;
    let deadline = Duration::from_secs(state.settings.twilio.webhook_timeout_secs);
    let reply = match tokio::time::timeout(deadline, handle.reply).await {
        Ok(Ok(Ok(stored))) => speech::for_speech(&stored.content),
        Ok(outcome) => {
            if let Ok(Err(error)) = outcome {
                tracing::warn!(%error, "voice turn failed");
            }
            return Ok(twiml(TwiML::new().say(UNAVAILABLE).hangup()));
        }
        // The turn still finishes and is stored; the caller is asked again.
        Err(_) => return Ok(twiml(listen(&state, TOO_SLOW))),
    };
    let mut tx = state.store.tenant(tenant).await?;
    let escalated = twilio::waits_for_human(&mut tx, conversation).await?;
    let transfer_to = match escalated {
        true => twilio::get_config(&mut tx)
            .await?
            .and_then(|config| config.escalation_number),
        false => None,
    };
    drop(tx);
    Ok(twiml(match transfer_to {
        Some(number) => {
            metrics::counter!("agentry_voice_transfers_total").increment(1);
            TwiML::new().say(&reply).say(CONNECTING).dial(&number)
        }
        None => listen(&state, &reply),
    }))
}

/// The end of a call ends its conversation.
/// A call's status callback; the end of a call ends its conversation.
#[utoipa::path(post, path = "/voice/status", tag = "twilio", security(("twilio_signature" = [])), request_body(content = CallForm, content_type = "application/x-www-form-urlencoded"),
    responses(TwilioWebhookResponses))]
async fn voice_status(
    State(state): State<AppState>,
    Signed(inbound, _): Signed<CalledTo>,
) -> Result<Response, ApiError> {
    let call = inbound.require("CallSid")?;
    let ended = matches!(
        inbound.get("CallStatus"),
        Some("completed" | "busy" | "failed" | "no-answer" | "canceled")
    );
    if ended {
        let mut tx = state.store.tenant(inbound.tenant()).await?;
        twilio::end_channel_conversation(&mut tx, "voice", call).await?;
        tx.commit().await?;
    }
    Ok(twiml(TwiML::new()))
}

/// A recording Twilio made of a call (the tenant turned recording on for the
/// number, with this route as its recording status callback).
/// A recording status callback: a completed recording is downloaded, sealed and stored.
#[utoipa::path(post, path = "/voice/recording", tag = "twilio", security(("twilio_signature" = [])), request_body(content = RecordingForm, content_type = "application/x-www-form-urlencoded"), params(RecordingQuery),
    responses(TwilioWebhookResponses, RecordingRefused))]
async fn voice_recording(
    State(state): State<AppState>,
    Signed(inbound, _): Signed<InQuery>,
) -> Result<Response, ApiError> {
    // `in-progress`, `absent` (too short or silent) and `failed` carry no file.
    if inbound.require("RecordingStatus")? != "completed" {
        return Ok(twiml(TwiML::new()));
    }
    let recording_sid = inbound.require("RecordingSid")?;
    let call_sid = inbound.require("CallSid")?;
    let recording_url = inbound.require("RecordingUrl")?;
    if !is_sid(recording_sid, "RE") || !is_sid(call_sid, "CA") {
        return Err(ApiError::BadRequest(
            "RecordingSid and CallSid must be Twilio SIDs (RE…, CA…)".into(),
        ));
    }
    let duration_secs = inbound
        .get("RecordingDuration")
        .and_then(|secs| secs.trim().parse::<i32>().ok())
        .filter(|secs| *secs >= 0);
    let tenant = inbound.tenant();
    let event = |outcome, detail: Option<&str>| {
        RecordingEvent {
            source: Source::Twilio,
            outcome,
            detail,
        }
        .emit()
    };
    let mut tx = state.store.tenant(tenant).await?;
    if crate::db::recordings::exists(&mut tx, recording_sid).await? {
        event(Outcome::Duplicate, None);
        return Ok(twiml(TwiML::new()));
    }
    let config = twilio::get_config(&mut tx)
        .await?
        .ok_or_else(|| ApiError::Forbidden("the tenant has no Twilio credentials".into()))?;
    // No connection held through the download.
    drop(tx);
    if inbound
        .get("AccountSid")
        .is_some_and(|sid| sid != config.account_sid)
    {
        return Err(ApiError::Forbidden(
            "AccountSid is not the tenant's Twilio account".into(),
        ));
    }
    let auth_token = state
        .keyring
        .open_string(&twilio::auth_token_owner(tenant), &config.auth_token_sealed)
        .map_err(|error| ApiError::Internal(format!("opening a Twilio auth token: {error}")))?;
    let audio = match state
        .recordings
        .fetcher
        .fetch(recording_url, &config.account_sid, auth_token.expose())
        .await
    {
        Ok(audio) => audio,
        Err(error) => {
            event(error.outcome(), Some(&error.to_string()));
            return Err(match error {
                FetchError::Upstream(_) => ApiError::Unavailable("the recording download"),
                refused => ApiError::Invalid(refused.to_string()),
            });
        }
    };
    let saved = state
        .recordings
        .save(
            &state.store,
            tenant,
            &NewAudio {
                call_sid,
                recording_sid,
                content_type: "audio/wav",
                bytes: &audio,
                duration_secs,
                source: Source::Twilio,
            },
        )
        .await;
    match saved {
        Ok(Saved::Stored(id)) => {
            event(Outcome::Stored, None);
            state.recordings.transcribe_later(tenant, id, audio);
        }
        Ok(Saved::Duplicate) => event(Outcome::Duplicate, None),
        Err(error) => {
            event(Outcome::StoreFailed, Some(&error.to_string()));
            return Err(ApiError::Unavailable("recording storage"));
        }
    }
    Ok(twiml(TwiML::new()))
}
