//! Builds the application from settings: the same function serves `agentry
//! serve` and the integration tests' `spawn_app`.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentry_actors::chat_session::{PipelineDeps, PipelineSettings};
use agentry_actors::knowledge::ChunkOptions;
use agentry_actors::llm::Embedder;
use agentry_actors::pipeline::ChatPipeline;
use agentry_actors::resident::ResidentNamespaces;
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bus::RedisBus;
use crate::configuration::Settings;
use crate::crypto::Keyring;
use crate::db::bootstrap;
use crate::db::chat::PgChatStore;
use crate::db::knowledge::PgKnowledgeStore;
use crate::db::tool_runs::PgToolRunner;
use crate::http::{self, AppContext, AppState};
use crate::kb_ingest::IngestWorker;
use crate::live::LiveHub;
use crate::llm;
use crate::llm_resolver::PgLlmResolver;
use crate::lockout::Lockout;
use crate::seed::{self, SeededDemo};
use crate::telemetry;
use crate::tokens::TokenSigner;
use crate::widget_sessions::WidgetSessions;

pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    state: AppState,
    workers: Vec<JoinHandle<()>>,
    stop_workers: watch::Sender<bool>,
    /// Set when this start seeded the development demo.
    pub seeded_demo: Option<SeededDemo>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = bootstrap::prepare(&settings.database)
            .await
            .context("PostgreSQL: could not prepare the database")?;
        let bus = RedisBus::connect(&settings.redis).context("Redis: bad configuration")?;
        let keyring = Arc::new(
            Keyring::new(
                &settings.security.encryption_current_key_id,
                &settings.encryption_key_bytes(),
            )
            .context("encryption keyring")?,
        );
        let signer = TokenSigner::new(settings.token_key_bytes());
        // Bound before seeding, so the demo endpoint gets the port really in use.
        let echo = if settings.demo.webhook_echo {
            match crate::webhook_echo::bind(settings.demo.webhook_echo_port).await {
                Ok(bound) => Some(bound),
                Err(error) => {
                    tracing::warn!(%error, port = settings.demo.webhook_echo_port, "webhook echo receiver not started");
                    None
                }
            }
        } else {
            None
        };
        let echo_url = echo
            .as_ref()
            .map(|(_, address)| format!("http://{address}{}", crate::webhook_echo::PATH));
        let seeded_demo = if settings.demo.seed {
            seed::seed_if_empty(&settings, &store, &bus, &keyring, echo_url.as_deref())
                .await
                .context("seeding the demo tenant")?
        } else {
            None
        };
        let listener = TcpListener::bind(settings.http.bind)
            .await
            .with_context(|| format!("could not listen on {}", settings.http.bind))?;
        let metrics_listener = TcpListener::bind(settings.metrics.bind)
            .await
            .with_context(|| format!("metrics: could not listen on {}", settings.metrics.bind))?;

        // Models and embedders, the tenants' and the deployment's, are reached
        // through the SSRF guard; self-hosted ones (Ollama, vLLM) often speak
        // plain http on private networks, admitted only by their own opt-in.
        let llm_http = crate::net_guard::GuardedClient::new(crate::net_guard::GuardPolicy {
            allow_http: true,
            allow_private: settings.llm.allow_private_base_urls,
            ..Default::default()
        })
        .context("HTTP client for LLMs")?;
        let embedder: Arc<dyn Embedder> = llm::deployment_embedder(&settings.embedding, &llm_http)
            .context(
                "embedding configuration (a private address needs llm.allow_private_base_urls)",
            )?;
        let live = Arc::new(LiveHub::new(&bus).context("Redis: the live stream")?);
        let chat = &settings.chat;
        let pipeline = ChatPipeline::start(PipelineDeps {
            chat: Arc::new(PgChatStore::new(store.clone(), live.clone())),
            knowledge: Arc::new(PgKnowledgeStore::new(store.clone())),
            embedder: embedder.clone(),
            llm: Arc::new(PgLlmResolver::new(
                store.clone(),
                keyring.clone(),
                llm_http.clone(),
            )),
            tools: Arc::new(PgToolRunner::new(
                store.clone(),
                keyring.clone(),
                live.clone(),
            )),
            resident: Arc::new(ResidentNamespaces::new(settings.knowledge.cache_max_bytes)),
            settings: PipelineSettings {
                session_idle: Duration::from_secs(chat.session_idle_secs),
                tenant_idle: Duration::from_secs(chat.tenant_idle_secs),
                history_limit: chat.history_limit,
                passages: chat.passages,
                max_tokens: chat.max_tokens,
                max_tool_rounds: chat.max_tool_rounds,
                fault_injection: chat.fault_injection,
                ..PipelineSettings::default()
            },
        })
        .await
        .context("starting the chat pipeline")?;

        let (stop_workers, workers_stopped) = watch::channel(false);
        let ingest = IngestWorker {
            store: store.clone(),
            bus: bus.clone(),
            embedder,
            chunking: ChunkOptions {
                max_chars: settings.knowledge.chunk_max_chars,
                overlap_chars: settings.knowledge.chunk_overlap_chars,
            },
            consumer: format!("instance-{}", uuid::Uuid::new_v4().simple()),
            recover_after: Duration::from_secs(settings.knowledge.recover_after_secs),
        };
        let limiter =
            crate::rate_limit::RateLimiter::start(bus.clone(), settings.rate_limits.clone())
                .await
                .context("starting the rate limiter")?;
        let overrides = limiter.overrides().clone();
        overrides
            .refresh(&store)
            .await
            .context("loading the rate-limit overrides")?;
        let mut workers = vec![
            tokio::spawn(ingest.run(workers_stopped.clone())),
            tokio::spawn(crate::saturation::run(
                store.clone(),
                bus.clone(),
                workers_stopped.clone(),
            )),
            tokio::spawn(overrides.refresh_every(
                store.clone(),
                Duration::from_secs(settings.rate_limits.overrides_refresh_secs.max(1)),
                workers_stopped.clone(),
            )),
        ];
        let sms_sender = crate::sms_sender::SmsSender::new(
            store.clone(),
            keyring.clone(),
            settings.twilio.clone(),
        )
        .context("HTTP client for Twilio")?;
        workers.push(tokio::spawn(sms_sender.run(workers_stopped.clone())));
        workers.push(tokio::spawn(live.clone().run(workers_stopped.clone())));
        let files_stopped = workers_stopped.clone();
        if let Some((listener, address)) = echo {
            // Verifies signatures only when this start seeded the endpoint (the
            // secret is shown once); otherwise it prints deliveries unchecked.
            let secret = seeded_demo
                .as_ref()
                .and_then(|demo| demo.webhook_echo.as_ref())
                .map(|echo| echo.secret.clone());
            let receiver = crate::webhook_echo::EchoReceiver::new(secret.as_deref())
                .map_err(anyhow::Error::msg)?;
            tracing::info!(%address, "webhook echo receiver listening");
            let mut stop = workers_stopped.clone();
            workers.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                if let Err(error) = receiver.serve(listener, stopped).await {
                    tracing::warn!(%error, "webhook echo receiver stopped");
                }
            }));
        }
        if settings.webhooks.dispatch {
            let client = crate::net_guard::GuardedClient::new(settings.webhooks.guard_policy())
                .context("HTTP client for webhooks")?;
            workers.push(
                crate::webhook_dispatch::start(
                    crate::webhook_dispatch::DispatchDeps {
                        store: store.clone(),
                        bus: bus.clone(),
                        keyring: keyring.clone(),
                        client,
                        settings: settings.webhooks.clone(),
                        consumer: format!("instance-{}", uuid::Uuid::new_v4().simple()),
                    },
                    workers_stopped.clone(),
                )
                .await
                .context("starting the webhook dispatcher")?,
            );
        }

        let password_gate = crate::accounts::PasswordGate::new(
            settings.auth.max_concurrent_hashes,
            Duration::from_millis(settings.auth.hash_queue_timeout_ms),
        );
        let mut recordings = crate::recordings::Recordings::new(&settings, keyring.clone())
            .context("call recordings (recordings.*, twilio.recording_hosts)")?;
        if settings.recordings.transcribe {
            recordings.transcriber = Some(crate::recordings::transcribe::Transcriber::new(
                llm_http.clone(),
                settings.recordings.transcription_model.clone(),
                agentry_actors::pii::Scrubber::default(),
                store.clone(),
                keyring.clone(),
            ));
        }
        let files = Arc::new(crate::files::Files::new(
            recordings.storage().clone(),
            keyring.clone(),
            settings.files.clone(),
        ));
        if let Some(addr) = crate::files::clamd::ClamdAddr::parse(&settings.files.clamd_addr) {
            let worker = crate::files::scan::ScanWorker {
                files: files.clone(),
                store: store.clone(),
                bus: bus.clone(),
                clamd: crate::files::clamd::Clamd::new(
                    addr,
                    Duration::from_secs(settings.files.clamd_timeout_secs),
                ),
                claimer: uuid::Uuid::new_v4(),
                max_document_chars: settings.knowledge.max_document_chars,
            };
            workers.push(tokio::spawn(worker.run(files_stopped)));
        }
        let state = Arc::new(AppContext {
            files,
            recordings,
            media_bridges: Default::default(),
            limiter,
            password_gate,
            widget_sessions: WidgetSessions::new(bus.clone()),
            live,
            lockout: Lockout::new(bus.clone(), settings.lockout.clone()),
            origin_cache: http::origin_cache::OriginCache::new(Duration::from_secs(
                settings.widget.origin_cache_ttl_secs,
            )),
            settings,
            store,
            bus,
            keyring,
            signer,
            metrics: telemetry::metrics_handle(),
            pipeline,
        });
        if state.settings.jobs.enabled {
            workers.push(
                crate::jobs::start(state.clone(), workers_stopped)
                    .await
                    .context("starting the job scheduler")?,
            );
        }
        Ok(Self {
            listener,
            metrics_listener,
            state,
            workers,
            stop_workers,
            seeded_demo,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served (`metrics.bind`).
    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = http::router(self.state.clone());
        // One shutdown signal for both listeners.
        let (stop_serving, serving_stopped) = watch::channel(false);
        let live = self.state.live.clone();
        tokio::spawn(async move {
            shutdown.await;
            // Event streams never end by themselves: the server would wait on them.
            live.close();
            let _ = stop_serving.send(true);
        });
        let stopped = |mut receiver: watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let metrics_server = tokio::spawn(
            axum::serve(
                self.metrics_listener,
                http::routes::health::metrics_router(self.state.clone()),
            )
            .with_graceful_shutdown(stopped(serving_stopped.clone()))
            .into_future(),
        );
        let http_settings = &self.state.settings.http;
        let limits = http::server::ServerLimits {
            header_read_timeout: Duration::from_secs(http_settings.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(http_settings.idle_timeout_secs),
            max_connections: http_settings.max_connections,
        };
        // Handlers get the peer address (ConnectInfo) as with axum::serve.
        http::server::serve(self.listener, router, limits, serving_stopped)
            .await
            .context("HTTP server")?;
        if let Ok(Err(error)) = metrics_server.await {
            tracing::warn!(%error, "metrics listener stopped");
        }
        // Turns still running (a visitor's stream outlives its request) finish first.
        let drain = Duration::from_secs(self.state.settings.chat.drain_secs);
        // Media streams are upgraded sockets the HTTP server no longer
        // tracks: each stores what it captured while the pool is still open.
        let unstored = self.state.media_bridges.shut_down(drain).await;
        if unstored > 0 {
            tracing::warn!(
                unstored,
                "shutdown: media streams still storing after the drain deadline"
            );
        }
        let unfinished = self.state.pipeline.drain(drain).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "shutdown: turns still running after the drain deadline"
            );
        }
        // Workers finish the job in hand; what they leave pending is reclaimed by other instances.
        let _ = self.stop_workers.send(true);
        for worker in self.workers {
            let _ = worker.await;
        }
        self.state.limiter.stop();
        self.state.bus.quit().await;
        self.state.store.pool().close().await;
        Ok(())
    }
}
