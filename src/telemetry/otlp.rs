//! Optional export of the spans to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf), when `telemetry.otlp_endpoint` is set.
//!
//! Spans are batched off the request path (the SDK's batch processor, on a
//! thread of its own) and posted through the service's reqwest, spawned on
//! the Tokio runtime that started the export, so no second HTTP stack or TLS
//! library comes along. The collector is the operator's own infrastructure,
//! like PostgreSQL and Redis, so this client is not the outbound guard's:
//! it only never follows a redirect. Shutdown flushes what is still batched.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::configuration::TelemetrySettings;

/// One export's deadline: a collector that does not answer costs a batch, never a request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporting pipeline; [`Exporter::shutdown`] flushes it.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Starts the export to `traces_url`; must run inside a Tokio runtime.
    pub fn start(settings: &TelemetrySettings, traces_url: &str) -> anyhow::Result<Self> {
        let client = ReqwestClient {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(EXPORT_TIMEOUT)
                .build()?,
            runtime: tokio::runtime::Handle::try_current()?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Self { provider })
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("agentry")
    }

    /// Exports what is still batched, then stops. The SDK blocks its caller
    /// until the last export is answered, so this waits on the blocking pool.
    pub async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "trace export did not shut down cleanly"),
            Err(error) => tracing::warn!(%error, "trace export shutdown panicked"),
        }
    }
}

/// The SDK's HTTP client port over the service's reqwest.
#[derive(Debug)]
struct ReqwestClient {
    client: reqwest::Client,
    /// The export thread has no reactor of its own: each post runs here.
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for ReqwestClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let response = client.execute(reqwest::Request::try_from(request)?).await?;
                let mut answer = Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                Ok(answer.body(response.bytes().await?)?)
            })
            .await?
    }
}
