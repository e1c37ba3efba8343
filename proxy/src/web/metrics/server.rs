//! The metrics listener: `GET /metrics` (axum), on its own address so that Prometheus never
//! needs the HTTP API's token and the API never shares a port with scrapes.
//!
//! A scrape is CPU work (a pass over every miner), so it runs on the blocking pool, never on
//! the runtime's worker threads that move miners' shares; at most [`MAX_SCRAPES`] run at
//! once, more get `503` (Prometheus retries on its next interval). Connections are capped
//! and timed out as [`crate::http_server`] describes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::http_server::HttpLimits;

/// Scrapes rendered at once.
pub const MAX_SCRAPES: usize = 2;

#[derive(Clone)]
struct ScrapeState {
    registry: Registry,
    permits: Arc<Semaphore>,
}

/// A bound metrics listener.
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
}

impl MetricsServer {
    /// Binds `listen` to serve `registry` within `limits`.
    pub async fn bind(
        listen: SocketAddr,
        registry: Registry,
        limits: HttpLimits,
    ) -> std::io::Result<MetricsServer> {
        let state = ScrapeState {
            registry,
            permits: Arc::new(Semaphore::new(MAX_SCRAPES)),
        };
        let router = Router::new()
            .route("/metrics", get(scrape))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        Ok(MetricsServer {
            listener,
            router,
            limits,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) {
        let addr = self.listener.local_addr().ok();
        info!(?addr, "metrics endpoint ready");
        crate::http_server::serve(self.listener, self.router, self.limits, "metrics", shutdown)
            .await;
    }
}

async fn scrape(State(s): State<ScrapeState>) -> Response {
    let Ok(permit) = s.permits.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many scrapes at once\n",
        )
            .into_response();
    };
    let registry = s.registry.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        super::render(&registry)
    })
    .await;
    match rendered {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, super::CONTENT_TYPE)], body).into_response(),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
        Err(e) => {
            warn!(error = %e, "metrics scrape task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n").into_response()
        }
    }
}
