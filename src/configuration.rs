//! Layered configuration: the embedded `config/default.toml`, then the profile
//! file chosen by `AGENTRY_ENV`, then `AGENTRY__SECTION__KEY` variables, then
//! the conventional `DATABASE_URL` and `REDIS_URL`.
//!
//! This is the only module that reads the environment; the rest of the code
//! receives a validated [`Settings`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use agentry_actors::Secret;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use config::{Config, Environment as EnvSource, File, FileFormat};
use serde::Deserialize;

const DEFAULT_TOML: &str = include_str!("../config/default.toml");
const DEVELOPMENT_TOML: &str = include_str!("../config/development.toml");
const TEST_TOML: &str = include_str!("../config/test.toml");
const PRODUCTION_TOML: &str = include_str!("../config/production.toml");

/// The profile, from `AGENTRY_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Development,
    Test,
    Production,
}

impl Profile {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "development" | "dev" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(ConfigError::Invalid(format!(
                "AGENTRY_ENV={other:?} is not one of development, test, production"
            ))),
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Development => DEVELOPMENT_TOML,
            Self::Test => TEST_TOML,
            Self::Production => PRODUCTION_TOML,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    #[serde(skip, default = "default_profile")]
    pub profile: Profile,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub security: SecuritySettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub demo: DemoSettings,
    pub widget: WidgetSettings,
    pub chat: ChatSettings,
    pub knowledge: KnowledgeSettings,
    pub embedding: EmbeddingSettings,
    pub llm: LlmSettings,
    pub webhooks: WebhookSettings,
    pub rate_limits: RateLimitSettings,
    pub tokens: TokenSettings,
    pub lockout: LockoutSettings,
    pub metrics: MetricsSettings,
    pub twilio: TwilioSettings,
    pub recordings: RecordingSettings,
    pub files: FileSettings,
    pub jobs: JobsSettings,
}

/// Tenants' files: upload limit, virus scanning (clamd) and share links.
#[derive(Clone, Debug, Deserialize)]
pub struct FileSettings {
    /// Largest file `POST /api/v1/files` takes (larger is 413).
    pub max_bytes: u64,
    /// clamd's `tcp://host:port` or unix socket path; empty: scanning off
    /// (files are `unscanned` at once).
    pub clamd_addr: String,
    /// One scan (connect, stream, verdict) must finish within this.
    pub clamd_timeout_secs: u64,
    /// How often an instance looks for files others uploaded and nobody scanned.
    pub scan_poll_ms: u64,
    /// A claimed scan not finished this long is another instance's to take.
    pub scan_lease_secs: u64,
    /// An upload's deadline (instead of http.request_timeout_secs).
    pub upload_timeout_secs: u64,
    /// Seconds each share-link lifetime (`expires_in`) lasts: 1h, 24h, 7d, 30d.
    pub share_expiries: BTreeMap<String, u64>,
}

/// The share-link lifetimes a client may ask for, besides `permanent`.
pub const SHARE_EXPIRY_NAMES: [&str; 4] = ["1h", "24h", "7d", "30d"];

impl FileSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 || self.clamd_timeout_secs == 0 || self.scan_poll_ms == 0 {
            return Err(ConfigError::Invalid(
                "files.max_bytes, clamd_timeout_secs and scan_poll_ms must be at least 1".into(),
            ));
        }
        if self.scan_lease_secs <= self.clamd_timeout_secs {
            return Err(ConfigError::Invalid(
                "files.scan_lease_secs must be more than files.clamd_timeout_secs: a shorter lease \
                 would hand a scan still running to a second instance"
                    .into(),
            ));
        }
        let mut names: Vec<&str> = self.share_expiries.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = SHARE_EXPIRY_NAMES;
        expected.sort_unstable();
        if names != expected || self.share_expiries.values().any(|secs| *secs == 0) {
            return Err(ConfigError::Invalid(format!(
                "files.share_expiries must give each of {} a number of seconds (at least 1)",
                SHARE_EXPIRY_NAMES.join(", ")
            )));
        }
        let addr = self.clamd_addr.trim();
        if !addr.is_empty() && crate::files::clamd::ClamdAddr::parse(addr).is_none() {
            return Err(ConfigError::Invalid(format!(
                "files.clamd_addr {addr:?} is neither tcp://host:port nor an absolute socket path"
            )));
        }
        Ok(())
    }
}

/// Scheduled jobs (see `crate::jobs`): each a cron schedule with seconds
/// (`sec min hour day-of-month month day-of-week`, UTC), checked at load.
#[derive(Clone, Debug, Deserialize)]
pub struct JobsSettings {
    /// Runs the scheduler in this instance (every instance may: each tick runs once per cluster).
    pub enabled: bool,
    pub purge_sessions: String,
    pub expire_api_tokens: String,
    pub purge_visitor_ips: String,
    pub rollup_usage: String,
    pub apply_retention: String,
    /// How long a run waits for another instance holding the same tick before skipping it.
    pub claim_wait_ms: u64,
    /// A tick older than this (an instance waking from a long pause) is not run.
    pub max_tick_lateness_secs: u64,
    /// Ended dashboard sessions and widget leftovers are purged this long after they ended.
    pub session_grace_secs: u64,
}

impl JobsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        for job in crate::jobs::JobName::ALL {
            let schedule = job.schedule(self);
            crate::jobs::schedule::parse(schedule).map_err(|reason| {
                ConfigError::Invalid(format!(
                    "jobs.{} = {schedule:?} is not a valid schedule ({reason}); write six fields, \
                     sec min hour day-of-month month day-of-week, e.g. \"0 */5 * * * *\"",
                    job.label()
                ))
            })?;
        }
        if !(1..=60_000).contains(&self.claim_wait_ms) {
            return Err(ConfigError::Invalid(
                "jobs.claim_wait_ms must be 1 to 60000".into(),
            ));
        }
        if self.max_tick_lateness_secs == 0 {
            return Err(ConfigError::Invalid(
                "jobs.max_tick_lateness_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn claim_wait(&self) -> Duration {
        Duration::from_millis(self.claim_wait_ms)
    }

    pub fn max_tick_lateness(&self) -> Duration {
        Duration::from_secs(self.max_tick_lateness_secs)
    }

    pub fn session_grace(&self) -> Duration {
        Duration::from_secs(self.session_grace_secs)
    }
}

/// Call recordings: where their sealed audio is kept, and the limits of
/// fetching, capturing and linking to it.
#[derive(Clone, Debug, Deserialize)]
pub struct RecordingSettings {
    /// The local directory, when `url` is empty.
    pub path: String,
    /// `s3://bucket/prefix` for an S3-compatible bucket; empty: `path`.
    pub url: String,
    pub s3_region: String,
    /// An S3-compatible service's endpoint (MinIO, R2 ...); empty: AWS.
    pub s3_endpoint: String,
    /// Empty: the instance's or task's role.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret<String>,
    pub s3_allow_http: bool,
    /// How long a signed link to a recording's audio works.
    pub link_ttl_secs: u64,
    /// Largest recording downloaded from Twilio.
    pub max_fetch_bytes: usize,
    /// A download must finish within this, inside Twilio's 15 s callback wait.
    pub fetch_timeout_secs: u64,
    /// Caller audio kept per media stream (8,000 bytes a second).
    pub max_stream_bytes: usize,
    /// A media stream silent this long is ended and what it carried stored.
    pub stream_idle_secs: u64,
    /// Send each stored recording to the tenant's own OpenAI-compatible
    /// model for a transcript (the tenant's key, its bill).
    pub transcribe: bool,
    /// The model named in `/audio/transcriptions`.
    pub transcription_model: String,
}

/// The SMS and voice channels (Twilio webhooks and REST API).
#[derive(Clone, Debug, Deserialize)]
pub struct TwilioSettings {
    /// The public base URL Twilio calls (behind the load balancer); its
    /// signatures cover this URL, not the Host header a request arrives with.
    pub public_base_url: String,
    /// Refuse (403) an inbound request without a valid `X-Twilio-Signature`.
    /// Only a development setup may turn it off; production refuses to start so.
    pub verify_signatures: bool,
    /// Twilio gives up on a webhook after 15 s: a reply not ready by then is
    /// sent later through the REST API.
    pub webhook_timeout_secs: u64,
    /// A reply is cut to this many SMS segments, at a sentence boundary.
    pub max_sms_segments: usize,
    /// Twilio's REST API (tests point it at a local receiver).
    pub api_base_url: String,
    /// How long a caller may stay silent before the call ends.
    pub gather_timeout_secs: u32,
    /// Answered to HELP when the tenant set no help text.
    pub default_help_text: String,
    /// Said when a call is answered, when the tenant set no greeting.
    pub default_greeting: String,
    /// How often each instance looks for queued replies to send.
    pub outbound_poll_ms: u64,
    /// Attempts to send a queued reply before it is marked failed.
    pub outbound_max_attempts: u32,
    /// Hosts a `RecordingUrl` may name; our Twilio credentials go nowhere else.
    pub recording_hosts: Vec<String>,
    /// Recording downloads over plain http, and to loopback (tests only).
    pub recording_allow_http: bool,
    pub recording_allow_localhost: bool,
    /// The voice greeting starts a media stream recording the caller.
    pub media_streams: bool,
    /// How long the token in a media stream's URL admits a connection.
    pub media_token_ttl_secs: u64,
}

/// The Prometheus scrape endpoint has a listener of its own, so the public port never serves it.
#[derive(Clone, Debug, Deserialize)]
pub struct MetricsSettings {
    pub bind: SocketAddr,
}

/// API tokens' lifetimes, in days.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenSettings {
    /// A new token's lifetime when its creator names none.
    pub lifetime_days: u32,
    /// The longest lifetime a creator may ask for.
    pub max_lifetime_days: u32,
}

/// Brute-force lockout per client IP (see `crate::lockout`).
#[derive(Clone, Debug, Deserialize)]
pub struct LockoutSettings {
    pub max_failures: u32,
    pub window_secs: u64,
    pub lockout_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WebhookSettings {
    pub allow_http: bool,
    pub allow_localhost: bool,
    pub allowed_networks: Vec<ipnet::IpNet>,
    pub allowed_hosts: Vec<String>,
    pub rotation_grace_secs: u64,
    pub retry_delays_secs: Vec<u64>,
    pub max_retry_after_secs: u64,
    /// Runs the outbox relay and the webhook dispatcher in this instance.
    pub dispatch: bool,
    pub timeout_secs: u64,
    pub max_in_flight: usize,
    pub max_in_flight_per_endpoint: usize,
    pub reclaim_after_secs: u64,
    pub relay_batch: usize,
    pub relay_idle_poll_ms: u64,
}

/// What a reclaim deadline must exceed the request timeout by: an attempt
/// still running on a live instance must not be taken over.
pub const RECLAIM_MARGIN_SECS: u64 = 5;

impl WebhookSettings {
    pub fn retry_schedule(&self) -> crate::webhook_retry::RetrySchedule {
        crate::webhook_retry::RetrySchedule {
            delays: self
                .retry_delays_secs
                .iter()
                .map(|secs| std::time::Duration::from_secs(*secs))
                .collect(),
            max_retry_after: std::time::Duration::from_secs(self.max_retry_after_secs),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    pub fn reclaim_after(&self) -> Duration {
        Duration::from_secs(self.reclaim_after_secs)
    }

    pub fn relay_idle_poll(&self) -> Duration {
        Duration::from_millis(self.relay_idle_poll_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "webhooks.timeout_secs must be at least 1".into(),
            ));
        }
        if self.reclaim_after_secs <= self.timeout_secs + RECLAIM_MARGIN_SECS {
            return Err(ConfigError::Invalid(format!(
                "webhooks.reclaim_after_secs ({}) must be more than webhooks.timeout_secs ({}) + {RECLAIM_MARGIN_SECS} s: \
                 a shorter deadline would hand an attempt still in flight to a second instance",
                self.reclaim_after_secs, self.timeout_secs
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight_per_endpoint == 0 {
            return Err(ConfigError::Invalid(
                "webhooks.max_in_flight and webhooks.max_in_flight_per_endpoint must be at least 1"
                    .into(),
            ));
        }
        if self.relay_batch == 0 || self.relay_idle_poll_ms == 0 {
            return Err(ConfigError::Invalid(
                "webhooks.relay_batch and webhooks.relay_idle_poll_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// What webhook deliveries may reach.
    pub fn guard_policy(&self) -> crate::net_guard::GuardPolicy {
        crate::net_guard::GuardPolicy {
            allow_http: self.allow_http,
            allow_loopback: self.allow_localhost,
            allow_private: false,
            allowed_networks: self.allowed_networks.clone(),
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|host| host.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }
}

impl RecordingSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        const WEEK_SECS: u64 = 7 * 24 * 3600;
        if !(1..=WEEK_SECS).contains(&self.link_ttl_secs) {
            return Err(ConfigError::Invalid(
                "recordings.link_ttl_secs must be 1 s to 7 days".into(),
            ));
        }
        if !(1..=14).contains(&self.fetch_timeout_secs) {
            return Err(ConfigError::Invalid(
                "recordings.fetch_timeout_secs must be 1 to 14 (Twilio waits 15 s for the callback)"
                    .into(),
            ));
        }
        if self.max_fetch_bytes == 0 || self.max_stream_bytes == 0 || self.stream_idle_secs == 0 {
            return Err(ConfigError::Invalid(
                "recordings.max_fetch_bytes, max_stream_bytes and stream_idle_secs must be at least 1"
                    .into(),
            ));
        }
        if self.url.trim().is_empty() && self.path.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "recordings.path must name a directory when recordings.url is empty".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct LlmSettings {
    pub allow_private_base_urls: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WidgetSettings {
    pub session_ttl_secs: u64,
    pub max_message_chars: usize,
    /// How long a CORS preflight's "some widget allows this origin" answer is reused.
    pub origin_cache_ttl_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatSettings {
    pub session_idle_secs: u64,
    pub tenant_idle_secs: u64,
    pub history_limit: usize,
    pub passages: usize,
    pub max_tokens: u32,
    /// Rounds of tool calls a turn may run before the model must answer in words.
    pub max_tool_rounds: usize,
    pub turn_timeout_secs: u64,
    /// How long shutdown waits for turns in flight before stopping the pipeline.
    pub drain_secs: u64,
    pub fault_injection: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct KnowledgeSettings {
    pub max_document_chars: usize,
    pub chunk_max_chars: usize,
    pub chunk_overlap_chars: usize,
    pub recover_after_secs: u64,
    /// Memory budget of the namespaces the retrievers hold, in bytes.
    pub cache_max_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingSettings {
    pub provider: String,
    pub model: String,
    pub base_url: String,
    pub api_key: Secret<String>,
}

fn default_profile() -> Profile {
    Profile::Development
}

#[derive(Clone, Debug, Deserialize)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    pub max_body_bytes: usize,
    pub public_url: String,
    /// Requests other than chat turns that take longer get 408.
    pub request_timeout_secs: u64,
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after the first byte of a later request) is closed.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with nothing in flight is closed after this long.
    pub idle_timeout_secs: u64,
    /// A live event stream ends after this long; its client reconnects.
    pub event_stream_secs: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn default_privacy_per_minute() -> u32 {
    10
}

/// Requests per minute per tier (see config/default.toml).
#[derive(Clone, Debug, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub shards: usize,
    pub auth: u32,
    pub admin: u32,
    pub chat: u32,
    pub upload: u32,
    pub standard: u32,
    pub provider_webhooks: u32,
    pub widget_sessions: u32,
    pub widget_messages: u32,
    pub api_tokens: u32,
    /// Privacy exports and erasures, per tenant.
    #[serde(default = "default_privacy_per_minute")]
    pub privacy: u32,
    pub fail_closed: Vec<String>,
    /// How often each instance reloads the per-tenant overrides.
    pub overrides_refresh_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    pub url: Secret<String>,
    pub app_user: String,
    pub app_password: Secret<String>,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

impl DatabaseSettings {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct RedisSettings {
    pub url: Secret<String>,
    pub prefix: String,
    pub pool_size: usize,
    pub stream_max_len: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    pub dashboard_token_ttl_secs: u64,
    /// Password checks at once (0: one per CPU).
    pub max_concurrent_hashes: usize,
    /// How long a login waits for a password-check slot before a 503.
    pub hash_queue_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SecuritySettings {
    pub encryption_current_key_id: String,
    pub encryption_keys: BTreeMap<String, Secret<String>>,
    pub signing: SigningSettings,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SigningSettings {
    pub token_key: Secret<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Trace export: the spans every request and chat turn makes, sent to an
/// OpenTelemetry collector when one is configured. Without one nothing is
/// exported, and the trace ids still reach every log line.
#[derive(Clone, Debug, Deserialize)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP (protobuf) receiver, e.g.
    /// `http://127.0.0.1:4318`; spans go to `{otlp_endpoint}/v1/traces`.
    /// Empty: export off.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl TelemetrySettings {
    /// Where spans are posted, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim();
        (!base.is_empty()).then(|| format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.traces_url() {
            let parsed = url::Url::parse(&url).map_err(|error| {
                ConfigError::Invalid(format!(
                    "telemetry.otlp_endpoint {:?} is not a URL: {error}",
                    self.otlp_endpoint
                ))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(
                    "telemetry.otlp_endpoint must be an http:// or https:// URL".into(),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "telemetry.service_name must not be empty".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct DemoSettings {
    pub seed: bool,
    /// Runs a webhook echo receiver on loopback and points the demo tenant's endpoint at it.
    pub webhook_echo: bool,
    pub webhook_echo_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads the settings from this process's environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::vars().collect())
    }

    /// Loads the settings from the given environment variables (tests pass their own).
    pub fn load_from(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let profile = Profile::parse(env.get("AGENTRY_ENV").map(String::as_str).unwrap_or(""))?;
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(profile.file(), FileFormat::Toml))
            .add_source(
                EnvSource::with_prefix("AGENTRY")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    // Lists from one variable, comma-separated, for these keys only:
                    // any other value may itself contain commas.
                    .list_separator(",")
                    .with_list_parse_key("http.trusted_proxies")
                    .with_list_parse_key("webhooks.allowed_networks")
                    .with_list_parse_key("webhooks.allowed_hosts")
                    .with_list_parse_key("webhooks.retry_delays_secs")
                    .with_list_parse_key("twilio.recording_hosts")
                    .with_list_parse_key("rate_limits.fail_closed")
                    .source(Some(env.clone().into_iter().collect())),
            );
        for (variable, key) in [
            ("DATABASE_URL", "database.url"),
            ("REDIS_URL", "redis.url"),
            // The filter everyone knows from tracing; it wins over log.filter.
            ("RUST_LOG", "log.filter"),
            // The names operators know from the webhook docs.
            ("AGENTRY_WEBHOOK_ALLOW_HTTP", "webhooks.allow_http"),
            (
                "AGENTRY_WEBHOOK_ALLOW_LOCALHOST",
                "webhooks.allow_localhost",
            ),
        ] {
            if let Some(value) = env.get(variable).filter(|v| !v.is_empty()) {
                builder = builder.set_override(key, value.as_str())?;
            }
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.profile = profile;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what deserialization cannot: keys decode to the right sizes, and
    /// production runs neither without keys nor with the public development ones.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::rate_limit::Tier::check_settings(&self.rate_limits).map_err(ConfigError::Invalid)?;
        const MAX_ROTATION_GRACE_SECS: u64 = 30 * 24 * 3600;
        const MAX_TOOL_ROUNDS: usize = 10;
        if self.chat.max_tool_rounds > MAX_TOOL_ROUNDS {
            // Each round is another model call the tenant pays for.
            return Err(ConfigError::Invalid(format!(
                "chat.max_tool_rounds must be at most {MAX_TOOL_ROUNDS}"
            )));
        }
        if self.webhooks.rotation_grace_secs > MAX_ROTATION_GRACE_SECS {
            return Err(ConfigError::Invalid(format!(
                "webhooks.rotation_grace_secs must be at most {MAX_ROTATION_GRACE_SECS} (30 days)"
            )));
        }
        if self
            .webhooks
            .retry_delays_secs
            .iter()
            .any(|secs| *secs == 0 || *secs > MAX_ROTATION_GRACE_SECS)
        {
            return Err(ConfigError::Invalid(
                "webhooks.retry_delays_secs must each be 1 s to 30 days".into(),
            ));
        }
        self.webhooks.validate()?;
        let twilio = &self.twilio;
        if !twilio.verify_signatures && self.profile == Profile::Production {
            return Err(ConfigError::Invalid(
                "production refuses twilio.verify_signatures = false: unsigned requests would act for any tenant".into(),
            ));
        }
        if url::Url::parse(&twilio.public_base_url).is_err() {
            return Err(ConfigError::Invalid(
                "twilio.public_base_url must be an absolute URL (AGENTRY__TWILIO__PUBLIC_BASE_URL)"
                    .into(),
            ));
        }
        if !(1..=10).contains(&twilio.max_sms_segments) {
            return Err(ConfigError::Invalid(
                "twilio.max_sms_segments must be 1 to 10".into(),
            ));
        }
        if !(1..=14).contains(&twilio.webhook_timeout_secs) {
            return Err(ConfigError::Invalid(
                "twilio.webhook_timeout_secs must be 1 to 14 (Twilio waits 15 s)".into(),
            ));
        }
        self.recordings.validate()?;
        self.files.validate()?;
        self.telemetry.validate()?;
        self.jobs.validate()?;
        if !(1..=3600).contains(&twilio.media_token_ttl_secs) {
            return Err(ConfigError::Invalid(
                "twilio.media_token_ttl_secs must be 1 to 3600".into(),
            ));
        }
        let tokens = &self.tokens;
        if tokens.max_lifetime_days == 0
            || tokens.lifetime_days == 0
            || tokens.lifetime_days > tokens.max_lifetime_days
        {
            return Err(ConfigError::Invalid(format!(
                "tokens.lifetime_days ({}) must be 1 to tokens.max_lifetime_days ({})",
                tokens.lifetime_days, tokens.max_lifetime_days
            )));
        }
        let lockout = &self.lockout;
        if lockout.max_failures == 0 || lockout.window_secs == 0 || lockout.lockout_secs == 0 {
            return Err(ConfigError::Invalid(
                "lockout.max_failures, lockout.window_secs and lockout.lockout_secs must be at least 1"
                    .into(),
            ));
        }
        let security = &self.security;
        let current = &security.encryption_current_key_id;
        if current.is_empty() {
            return Err(ConfigError::Invalid(
                "security.encryption_current_key_id is missing (set AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID; `agentry keys generate` prints one)".into(),
            ));
        }
        if !security.encryption_keys.contains_key(current) {
            return Err(ConfigError::Invalid(format!(
                "security.encryption_keys has no key {current:?} (set AGENTRY__SECURITY__ENCRYPTION_KEYS__{})",
                current.to_ascii_uppercase()
            )));
        }
        for (id, key) in &security.encryption_keys {
            if !is_valid_key_id(id) {
                return Err(ConfigError::Invalid(format!(
                    "security.encryption_keys: key id {id:?} must be 1-32 characters of a-z, 0-9, _ or -"
                )));
            }
            match BASE64.decode(key.expose().trim()) {
                Ok(bytes) if bytes.len() == 32 => {}
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "security.encryption_keys.{id} must be base64 of exactly 32 bytes"
                    )))
                }
            }
        }
        let token_key = security.signing.token_key.expose().trim();
        if token_key.is_empty() {
            return Err(ConfigError::Invalid(
                "security.signing.token_key is missing (set AGENTRY__SECURITY__SIGNING__TOKEN_KEY; `agentry keys generate` prints one)".into(),
            ));
        }
        match BASE64.decode(token_key) {
            Ok(bytes) if bytes.len() >= 32 => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "security.signing.token_key must be base64 of at least 32 bytes".into(),
                ))
            }
        }
        if self.profile == Profile::Production {
            let development = DevelopmentKeys::embedded()?;
            for (id, key) in &security.encryption_keys {
                if development
                    .encryption
                    .iter()
                    .any(|dev| dev == key.expose().trim())
                {
                    return Err(ConfigError::Invalid(format!(
                        "production refuses the development encryption key security.encryption_keys.{id}; generate one with `agentry keys generate`"
                    )));
                }
            }
            if token_key == development.signing {
                return Err(ConfigError::Invalid(
                    "production refuses the development signing key security.signing.token_key; generate one with `agentry keys generate`".into(),
                ));
            }
        }
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid(
                "redis.prefix must be non-empty without braces or spaces".into(),
            ));
        }
        Ok(())
    }

    pub fn encryption_key_bytes(&self) -> BTreeMap<String, Secret<Vec<u8>>> {
        self.security
            .encryption_keys
            .iter()
            .filter_map(|(id, key)| {
                let bytes = BASE64.decode(key.expose().trim()).ok()?;
                Some((id.clone(), Secret::new(bytes)))
            })
            .collect()
    }

    pub fn token_key_bytes(&self) -> Secret<Vec<u8>> {
        Secret::new(
            BASE64
                .decode(self.security.signing.token_key.expose().trim())
                .unwrap_or_default(),
        )
    }
}

fn is_valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The keys shipped in `config/development.toml`; public, so production refuses them.
struct DevelopmentKeys {
    encryption: Vec<String>,
    signing: String,
}

impl DevelopmentKeys {
    fn embedded() -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Defaults {
            security: SecuritySettings,
        }
        let defaults: Defaults = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(DEVELOPMENT_TOML, FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        Ok(Self {
            encryption: defaults
                .security
                .encryption_keys
                .values()
                .map(|key| key.expose().trim().to_owned())
                .collect(),
            signing: defaults
                .security
                .signing
                .token_key
                .expose()
                .trim()
                .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const PROD_ENC: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const PROD_SIGN: &str = "H4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4c=";
    const DEV_ENC: &str = "YWdlbnRyeS1kZXYta2V5LW5vdC1mb3ItcHJvZCEhISE=";
    const DEV_SIGN: &str = "ZGV2ZWxvcG1lbnQtc2lnbmluZy1rZXktbm90LWZvci1wcm9kdWN0aW9u";

    #[test]
    fn development_is_the_default_profile_and_loads_with_no_environment() {
        let settings = Settings::load_from(env(&[])).unwrap();
        assert_eq!(settings.profile, Profile::Development);
        assert!(settings.demo.seed);
        assert_eq!(settings.http.bind.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn environment_variables_override_files() {
        let settings = Settings::load_from(env(&[
            ("AGENTRY__HTTP__MAX_BODY_BYTES", "1024"),
            ("AGENTRY__REDIS__PREFIX", "run42"),
            ("DATABASE_URL", "postgres://u@db:5432/x"),
            ("REDIS_URL", "redis://cache:6379"),
        ]))
        .unwrap();
        assert_eq!(settings.http.max_body_bytes, 1024);
        assert_eq!(settings.redis.prefix, "run42");
        assert_eq!(settings.database.url.expose(), "postgres://u@db:5432/x");
        assert_eq!(settings.redis.url.expose(), "redis://cache:6379");
    }

    #[test]
    fn trace_export_is_off_by_default_and_its_endpoint_must_be_an_http_url() {
        let settings = Settings::load_from(env(&[])).unwrap();
        assert_eq!(settings.telemetry.traces_url(), None);
        let on = Settings::load_from(env(&[(
            "AGENTRY__TELEMETRY__OTLP_ENDPOINT",
            "http://collector:4318/",
        )]))
        .unwrap();
        assert_eq!(
            on.telemetry.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        for bad in ["collector:4318", "ftp://collector", "not a url"] {
            assert!(
                Settings::load_from(env(&[("AGENTRY__TELEMETRY__OTLP_ENDPOINT", bad)])).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn list_settings_come_comma_separated_and_rust_log_sets_the_filter() {
        let settings = Settings::load_from(env(&[
            ("AGENTRY__HTTP__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1/32"),
            ("AGENTRY__WEBHOOKS__RETRY_DELAYS_SECS", "1,5"),
            // Not a list key: its commas stay part of the value.
            ("AGENTRY__LOG__FILTER", "info,sqlx=warn"),
        ]))
        .unwrap();
        let proxies: Vec<String> = settings
            .http
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.1/32"]);
        assert_eq!(settings.webhooks.retry_delays_secs, [1, 5]);
        assert_eq!(settings.log.filter, "info,sqlx=warn");
        let traced = Settings::load_from(env(&[
            ("AGENTRY__LOG__FILTER", "warn"),
            ("RUST_LOG", "trace"),
        ]))
        .unwrap();
        assert_eq!(traced.log.filter, "trace");
    }

    #[test]
    fn production_without_keys_says_which_is_missing() {
        let err = Settings::load_from(env(&[("AGENTRY_ENV", "production")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("encryption_current_key_id is missing"),
            "{err}"
        );

        let err = Settings::load_from(env(&[
            ("AGENTRY_ENV", "production"),
            ("AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID", "k1"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("has no key \"k1\""), "{err}");

        let err = Settings::load_from(env(&[
            ("AGENTRY_ENV", "production"),
            ("AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID", "k1"),
            ("AGENTRY__SECURITY__ENCRYPTION_KEYS__K1", PROD_ENC),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("token_key is missing"), "{err}");
    }

    #[test]
    fn only_development_may_accept_unsigned_twilio_requests() {
        let unsigned = ("AGENTRY__TWILIO__VERIFY_SIGNATURES", "false");
        let err = Settings::load_from(env(&[("AGENTRY_ENV", "production"), unsigned])).unwrap_err();
        assert!(
            err.to_string().contains("twilio.verify_signatures"),
            "{err}"
        );
        let development = Settings::load_from(env(&[unsigned])).unwrap();
        assert!(!development.twilio.verify_signatures);
        assert!(
            Settings::load_from(env(&[]))
                .unwrap()
                .twilio
                .verify_signatures
        );
    }

    #[test]
    fn production_refuses_the_development_keys() {
        let err = Settings::load_from(env(&[
            ("AGENTRY_ENV", "production"),
            ("AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID", "k1"),
            ("AGENTRY__SECURITY__ENCRYPTION_KEYS__K1", DEV_ENC),
            ("AGENTRY__SECURITY__SIGNING__TOKEN_KEY", PROD_SIGN),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("development encryption key"),
            "{err}"
        );

        let err = Settings::load_from(env(&[
            ("AGENTRY_ENV", "production"),
            ("AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID", "k1"),
            ("AGENTRY__SECURITY__ENCRYPTION_KEYS__K1", PROD_ENC),
            ("AGENTRY__SECURITY__SIGNING__TOKEN_KEY", DEV_SIGN),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("development signing key"), "{err}");
    }

    #[test]
    fn production_starts_with_fresh_keys() {
        let settings = Settings::load_from(env(&[
            ("AGENTRY_ENV", "production"),
            ("AGENTRY__SECURITY__ENCRYPTION_CURRENT_KEY_ID", "k1"),
            ("AGENTRY__SECURITY__ENCRYPTION_KEYS__K1", PROD_ENC),
            ("AGENTRY__SECURITY__SIGNING__TOKEN_KEY", PROD_SIGN),
        ]))
        .unwrap();
        assert_eq!(settings.profile, Profile::Production);
        assert!(!settings.demo.seed);
        assert_eq!(settings.security.encryption_keys.len(), 1);
    }

    #[test]
    fn a_short_encryption_key_is_refused() {
        let err = Settings::load_from(env(&[(
            "AGENTRY__SECURITY__ENCRYPTION_KEYS__DEV1",
            "c2hvcnQ=",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    }

    #[test]
    fn a_reclaim_deadline_within_the_request_timeout_and_margin_is_refused() {
        let err = Settings::load_from(env(&[
            ("AGENTRY__WEBHOOKS__TIMEOUT_SECS", "15"),
            ("AGENTRY__WEBHOOKS__RECLAIM_AFTER_SECS", "20"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("reclaim_after_secs (20)"), "{err}");
        let settings = Settings::load_from(env(&[
            ("AGENTRY__WEBHOOKS__TIMEOUT_SECS", "15"),
            ("AGENTRY__WEBHOOKS__RECLAIM_AFTER_SECS", "21"),
        ]))
        .unwrap();
        assert_eq!(settings.webhooks.reclaim_after(), Duration::from_secs(21));
    }

    #[test]
    fn an_invalid_job_schedule_is_refused_at_load_naming_the_key() {
        let err =
            Settings::load_from(env(&[("AGENTRY__JOBS__ROLLUP_USAGE", "every hour")])).unwrap_err();
        assert!(err.to_string().contains("jobs.rollup_usage"), "{err}");
        // Five fields (no seconds) are refused too: schedules name their second.
        let err = Settings::load_from(env(&[("AGENTRY__JOBS__PURGE_SESSIONS", "*/5 * * * *")]))
            .unwrap_err();
        assert!(err.to_string().contains("jobs.purge_sessions"), "{err}");
        let settings =
            Settings::load_from(env(&[("AGENTRY__JOBS__PURGE_SESSIONS", "* * * * * *")])).unwrap();
        assert_eq!(settings.jobs.purge_sessions, "* * * * * *");
    }

    #[test]
    fn an_unknown_profile_is_refused() {
        let err = Settings::load_from(env(&[("AGENTRY_ENV", "staging")])).unwrap_err();
        assert!(err.to_string().contains("staging"), "{err}");
    }
}
