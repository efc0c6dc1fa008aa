//! The daemon's HTTP endpoint (`[http] listen`, axum): `/healthz` (200 `ok` while the
//! process runs), `/readyz` (200 when ready, else 503, both with a short JSON body),
//! `/metrics` (Prometheus text), and `POST /webhooks/{name}` ([`super::webhooks`]). Also
//! the client side of `contact-sync healthcheck`.

use super::health::Health;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the routes read.
#[derive(Clone)]
pub struct Endpoint {
    /// Readiness state.
    pub health: Arc<Health>,
    /// The Prometheus recorder's handle (`None`: `/metrics` answers 503).
    pub metrics: Option<PrometheusHandle>,
    /// The webhook receivers (`None`: no provider takes webhooks; every
    /// `POST /webhooks/{name}` answers 404).
    pub webhooks: Option<Arc<super::webhooks::Receivers>>,
}

impl axum::extract::FromRef<Endpoint> for super::webhooks::Mounted {
    fn from_ref(endpoint: &Endpoint) -> Self {
        Self(endpoint.webhooks.clone())
    }
}

/// The routes.
pub fn router(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/webhooks/{name}",
            post(super::webhooks::receive).layer(DefaultBodyLimit::max(super::webhooks::MAX_BODY)),
        )
        .with_state(endpoint)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(e): State<Endpoint>) -> Response {
    let readiness = e.health.readiness(crate::clock::Clock::system().now_secs());
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(readiness)).into_response()
}

async fn metrics(State(e): State<Endpoint>) -> Response {
    match &e.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// Binds `addr`. Done before the daemon reports ready, so a taken port fails the start.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} (http.listen): {e}; pick a free address or remove [http]")
    })
}

/// Serves the endpoint on `listener` until `stop` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, endpoint: Endpoint, stop: CancellationToken) {
    let app = router(endpoint);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!("the health and metrics endpoint stopped: {e}");
    }
}

/// The address a local client uses to reach a daemon listening on `listen`: a wildcard
/// address (`0.0.0.0`, `[::]`) becomes the loopback address of its family.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `contact-sync healthcheck`: GET `/readyz` of the daemon listening on `listen`.
/// `Ok` (a line to print) on 200; otherwise the reason (the body of a 503, or the connection error).
pub async fn check_ready(listen: SocketAddr, timeout: Duration) -> Result<String, String> {
    let target = local_target(listen);
    let url = format!("http://{target}/readyz");
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", describe(&e)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    if status == reqwest::StatusCode::OK {
        Ok(format!("{url}: ready"))
    } else {
        Err(format!("{url} answered {status}: {reason}"))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time (is the daemon running and http.listen right?)".into()
    } else if e.is_connect() {
        "cannot connect (is the daemon running with this [http] listen?)".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        let t = local_target("0.0.0.0:9477".parse().unwrap());
        assert_eq!(t, "127.0.0.1:9477".parse().unwrap());
        let t = local_target("[::]:9477".parse().unwrap());
        assert_eq!(t, "[::1]:9477".parse().unwrap());
        let t = local_target("127.0.0.2:1".parse().unwrap());
        assert_eq!(t, "127.0.0.2:1".parse().unwrap());
    }
}
