//! The proxy's HTTP server (axum): a JSON API for automation that cannot use the admin socket,
//! above all the grid operator's curtailment signal ([`api`]), and the NOC status page that
//! polls it ([`noc`], at `/`). The Prometheus endpoint ([`metrics`]) lives here too: it is the
//! other reader of the running proxy, on its own listener.
//!
//! Reads (`GET`) need no token; every change (`POST`) needs `Authorization: Bearer <token>`
//! where the token comes from the environment variable `[http] token_env` names or the file
//! `token_file` names (a Docker secret), never from the config file itself; without one,
//! changes are refused. Tokens are compared in
//! constant time. Bodies are capped (`[limits] http_max_body_bytes`, `413` beyond); every
//! answer says `X-Content-Type-Options: nosniff`; connections are capped and timed out as
//! [`crate::http_server`] describes; the server stops with the proxy.

pub mod api;
pub mod metrics;
pub mod noc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::plane::ControlPlane;
use crate::http_server::HttpLimits;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The control plane the API drives.
    pub plane: Arc<ControlPlane>,
    /// The bearer token changes need; `None`: changes are refused.
    pub token: Option<Arc<str>>,
}

/// Browsers must take every answer as the type it says (JSON stays JSON, never a script).
async fn nosniff(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// A bound HTTP server.
pub struct WebServer {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
}

impl WebServer {
    /// Binds `config.listen` and prepares the routes, with the token from `token_env` or
    /// `token_file`, within the `http_*` keys of `limits`. An unreadable token file is an
    /// error (a typo must not silently make the API read-only).
    pub async fn bind(
        config: &crate::config::Http,
        limits: &crate::config::Limits,
        plane: Arc<ControlPlane>,
    ) -> std::io::Result<WebServer> {
        let from_env = config
            .token_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        let from_file = match &config.token_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                std::io::Error::other(format!("[http] token_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let token = from_env
            .or(from_file)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .map(Arc::<str>::from);
        if token.is_none() {
            warn!("no HTTP API token configured: changes over HTTP are refused");
        }
        let state = AppState { plane, token };
        let router = api::routes()
            .merge(noc::routes())
            .layer(axum::extract::DefaultBodyLimit::max(
                limits.http_max_body_bytes,
            ))
            .layer(axum::middleware::map_response(nosniff))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        Ok(WebServer {
            listener,
            router,
            limits: HttpLimits::from_config(limits),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) {
        let addr = self.listener.local_addr().ok();
        info!(?addr, "HTTP API ready");
        crate::http_server::serve(self.listener, self.router, self.limits, "http", shutdown).await;
    }
}
