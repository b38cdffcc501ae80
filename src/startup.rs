//! Builds the application from settings: the same function serves `agentry
//! serve` and the integration tests' `spawn_app`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::bus::RedisBus;
use crate::configuration::Settings;
use crate::crypto::Keyring;
use crate::db::bootstrap;
use crate::http::{self, AppContext, AppState};
use crate::seed::{self, SeededDemo};
use crate::telemetry;
use crate::tokens::TokenSigner;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Set when this start seeded the development demo.
    pub seeded_demo: Option<SeededDemo>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = bootstrap::prepare(&settings.database)
            .await
            .context("PostgreSQL: could not prepare the database")?;
        let bus = RedisBus::connect(&settings.redis).context("Redis: bad configuration")?;
        let keyring = Keyring::new(
            &settings.security.encryption_current_key_id,
            &settings.encryption_key_bytes(),
        )
        .context("encryption keyring")?;
        let signer = TokenSigner::new(settings.token_key_bytes());
        let seeded_demo = if settings.demo.seed {
            seed::seed_if_empty(&settings, &store)
                .await
                .context("seeding the demo tenant")?
        } else {
            None
        };
        let listener = TcpListener::bind(settings.http.bind)
            .await
            .with_context(|| format!("could not listen on {}", settings.http.bind))?;
        let state = Arc::new(AppContext {
            settings,
            store,
            bus,
            keyring,
            signer,
            metrics: telemetry::metrics_handle(),
        });
        Ok(Self {
            listener,
            state,
            seeded_demo,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
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
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server")?;
        self.state.bus.quit().await;
        self.state.store.pool().close().await;
        Ok(())
    }
}
