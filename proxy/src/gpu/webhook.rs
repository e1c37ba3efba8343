//! The webhook adapter: budget and shed events are POSTed as JSON to a configured URL; the
//! GPU side reports its demand back through the admin socket ([`WebhookScheduler::report_demand`]).
//!
//! Body (one JSON object, `Content-Type: application/json`):
//! ```json
//! {"event":"budget","kw":12.0,"reason":null,"at":"2026-11-22T01:02:03.456Z","seq":7,"source":"hashshift"}
//! {"event":"shed","kw":5.0,"reason":"grid curtailment","at":"...","seq":8,"source":"hashshift"}
//! ```
//! - `event`: `"budget"` (the power the GPU cluster may use from now on, absolute, in kW) or
//!   `"shed"` (give this many kW back now).
//! - `at`: when hashshift decided (RFC 3339, UTC); `seq`: increases with every event this
//!   process sends, so a receiver can drop a stale event that a retry delivered late.
//!
//! Delivery: any 2xx is success. Connect errors, timeouts, 5xx, 408 and 429 are retried up to
//! `max_attempts` in all, with exponential backoff (`backoff_initial_ms` doubling up to
//! `backoff_max_ms`); other 4xx fail at once (retrying would not help). Worst case per call:
//! `max_attempts × timeout_ms + backoffs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{
    GpuDemand, GpuError, ReportedDemand, ShedOutcome, check_kw, check_ms, check_shed_deadline,
    clean_reason,
};
use crate::error::{Classify, Retry};
use crate::http_client::{self, HttpError, HttpUrl, Limits};

/// The most of a reply body read; the status is what counts, a longer body is not an error.
const MAX_REPLY_BODY: usize = 64 * 1024;

/// `[gpu_scheduler] kind = "webhook"` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// `http://host[:port]/path` (plain HTTP; see [`crate::http_client`] for why).
    pub url: String,
    /// Sent as the `Authorization` header when set (e.g. `Bearer <token>`).
    pub authorization: Option<String>,
    /// Timeout of one attempt (connect, send, the whole reply), in ms.
    pub timeout_ms: u64,
    /// Attempts in all, the first included (≥ 1).
    pub max_attempts: u32,
    /// Wait before the first retry, in ms; doubles each retry.
    pub backoff_initial_ms: u64,
    /// The longest wait between attempts, in ms.
    pub backoff_max_ms: u64,
    /// How long a shed may take until the GPU side has given the power back, in seconds,
    /// before it is escalated (audit `gpu`/`shed-overdue`, a metric); retries go on after.
    pub shed_deadline_secs: f64,
}

/// The most attempts one call may make (each is bounded by `timeout_ms`).
const MAX_ATTEMPTS: u32 = 100;

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            authorization: None,
            timeout_ms: 5_000,
            max_attempts: 4,
            backoff_initial_ms: 250,
            backoff_max_ms: 4_000,
            shed_deadline_secs: super::DEFAULT_SHED_DEADLINE_SECS,
        }
    }
}

impl WebhookConfig {
    /// Defaults with this URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The webhook adapter. See the module doc.
#[derive(Debug)]
pub struct WebhookScheduler {
    cfg: WebhookConfig,
    url: HttpUrl,
    seq: AtomicU64,
    reported: ReportedDemand,
}

impl WebhookScheduler {
    /// Validates the config (URL, attempts; no I/O).
    pub fn new(cfg: WebhookConfig) -> Result<Self, GpuError> {
        let url = HttpUrl::parse(&cfg.url).map_err(|detail| GpuError::Url {
            url: cfg.url.clone(),
            detail,
        })?;
        if cfg.max_attempts == 0 || cfg.max_attempts > MAX_ATTEMPTS {
            return Err(GpuError::Config(format!(
                "webhook max_attempts must be 1 to {MAX_ATTEMPTS}, got {}",
                cfg.max_attempts
            )));
        }
        check_ms("webhook timeout_ms", cfg.timeout_ms)?;
        check_ms("webhook backoff_initial_ms", cfg.backoff_initial_ms.max(1))?;
        check_ms("webhook backoff_max_ms", cfg.backoff_max_ms.max(1))?;
        check_shed_deadline(cfg.shed_deadline_secs)?;
        // Checked once here so that every send can put it in a header.
        if let Some(a) = &cfg.authorization
            && HeaderValue::from_str(a).is_err()
        {
            return Err(GpuError::Config(
                "webhook authorization has control characters".into(),
            ));
        }
        Ok(Self {
            cfg,
            url,
            seq: AtomicU64::new(0),
            reported: ReportedDemand::default(),
        })
    }

    /// The longest one call can take: every attempt timing out, with the longest wait between
    /// attempts (`max_attempts × timeout_ms + (max_attempts - 1) × backoff_max_ms`).
    pub fn call_bound(&self) -> Duration {
        let attempts = self.cfg.max_attempts.max(1);
        let per_try = Duration::from_millis(self.cfg.timeout_ms);
        let waits = Duration::from_millis(self.cfg.backoff_max_ms.max(self.cfg.backoff_initial_ms));
        per_try
            .saturating_mul(attempts)
            .saturating_add(waits.saturating_mul(attempts - 1))
    }

    /// POSTs `{"event":"budget","kw":kw,..}`; Ok once the endpoint answered 2xx.
    pub async fn set_budget_kw(&self, kw: f64) -> Result<(), GpuError> {
        let kw = check_kw(kw)?;
        self.send("budget", kw, None).await
    }

    /// POSTs `{"event":"shed","kw":kw,"reason":..}`. The outcome is `Notified`, unconfirmed:
    /// what the GPU side frees shows in its next demand report.
    pub async fn shed(&self, kw: f64, reason: &str) -> Result<ShedOutcome, GpuError> {
        let kw = check_kw(kw)?;
        let started = std::time::Instant::now();
        self.send("shed", kw, Some(&clean_reason(reason))).await?;
        Ok(ShedOutcome::notified(kw, started.elapsed()))
    }

    /// The demand last reported through [`Self::report_demand`] (zero until then).
    pub fn demand(&self) -> GpuDemand {
        self.reported.get()
    }

    /// Records what the GPU side reported (the admin socket calls this).
    pub fn report_demand(&self, demand: GpuDemand) {
        self.reported.set(demand);
    }

    async fn send(&self, event: &str, kw: f64, reason: Option<&str>) -> Result<(), GpuError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let body = serde_json::json!({
            "event": event,
            "kw": kw,
            "reason": reason,
            "at": rfc3339(SystemTime::now()),
            "seq": seq,
            "source": "hashshift",
        })
        .to_string();
        let body = bytes::Bytes::from(body);
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let limits = Limits {
            connect_timeout: timeout,
            request_timeout: timeout,
            max_body: MAX_REPLY_BODY,
        };
        let host = self.url.host_header();
        let target = self.url.connect_target();
        let auth: Vec<_> = self
            .cfg
            .authorization
            .as_deref()
            .map(|a| (AUTHORIZATION, a))
            .into_iter()
            .collect();
        let mut backoff = Duration::from_millis(self.cfg.backoff_initial_ms);
        let max_backoff = Duration::from_millis(self.cfg.backoff_max_ms);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = http_client::Request {
                method: Method::POST,
                host: &host,
                path: &self.url.path,
                headers: &auth,
                body: body.clone(),
            };
            // One bound for the whole attempt, connect included (the client bounds connect
            // and request separately; their sum could exceed `timeout_ms`).
            let sent =
                tokio::time::timeout(timeout, http_client::request(target.as_str(), req, limits))
                    .await
                    .unwrap_or(Err(HttpError::Timeout {
                        step: "request",
                        after: timeout,
                    }));
            let status = match sent {
                Ok(reply) => Ok(reply.status),
                // The status is what counts; an oversized body does not undo it.
                Err(HttpError::TooLarge { status, .. }) => Ok(status),
                Err(e) => Err(e),
            };
            let (retry, err) = match status {
                Ok(status) if (200..300).contains(&status) => {
                    tracing::info!(event, kw, seq, attempt, "GPU webhook delivered");
                    return Ok(());
                }
                Ok(status) => (
                    Retry::for_http_status(status),
                    GpuError::HttpStatus {
                        url: self.cfg.url.clone(),
                        status,
                        attempts: attempt,
                    },
                ),
                Err(e) => (
                    e.retry(),
                    GpuError::Http {
                        url: self.cfg.url.clone(),
                        detail: e.to_string(),
                        attempts: attempt,
                    },
                ),
            };
            tracing::warn!(
                event,
                seq,
                attempt,
                error = %err,
                side = %err.side(),
                %retry,
                "GPU webhook attempt failed"
            );
            if !retry.is_retryable() || attempt >= self.cfg.max_attempts {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
        }
    }
}

/// RFC 3339 UTC with milliseconds, without a date crate (civil-from-days, H. Hinnant).
fn rfc3339(t: SystemTime) -> String {
    let d = crate::time::since_epoch_at(t);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_309_323);
        assert_eq!(rfc3339(t), "2026-11-22T01:02:03.000Z");
    }

    #[test]
    fn config_is_validated() {
        assert!(WebhookScheduler::new(WebhookConfig::new("https://x/")).is_err());
        let zero = WebhookConfig {
            max_attempts: 0,
            ..WebhookConfig::new("http://127.0.0.1:1/")
        };
        assert!(WebhookScheduler::new(zero).is_err());
        assert!(WebhookScheduler::new(WebhookConfig::new("http://127.0.0.1:1/")).is_ok());
        for bad in ["Bearer a\r\nX: y", "Bearer \u{7f}"] {
            let cfg = WebhookConfig {
                authorization: Some(bad.into()),
                ..WebhookConfig::new("http://127.0.0.1:1/")
            };
            assert!(WebhookScheduler::new(cfg).is_err(), "{bad:?}");
        }
    }
}
