//! HTTP handlers: `/validate` and `/v1/check` on the TLS port; `/metrics`, `/healthz`
//! and `/readyz` on the plain metrics port. Thin: reading, limits and status codes here;
//! judging in `review`.

use crate::admission::{self, Decoded, Subject};
use crate::decision::Findings;
use crate::logging::DecisionLog;
use crate::metrics::{self, Metrics};
use crate::report;
use crate::review::{Placement, Reviewer};
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus::{IntGauge, Registry};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The API server never sends more than this; anything larger is refused unread.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub reviewer: Arc<Reviewer>,
    pub metrics: Metrics,
    pub registry: Registry,
    /// Where each review's decision line goes.
    pub log: DecisionLog,
    /// A client that takes longer than this to send its body is cut off.
    pub read_timeout: Duration,
    /// Dry runs judged at once; more are answered 429 (see `check`).
    pub dry_runs: Arc<tokio::sync::Semaphore>,
    /// Large reviews judged at once (see `validate`).
    pub large_reviews: Arc<tokio::sync::Semaphore>,
}

/// Dry runs (`/v1/check`) judged at once: a person's tool, which may take at most one core
/// from the API server's reviews (the blocking threads it runs on share the cores).
pub const MAX_DRY_RUNS: usize = 1;

/// The admission router, served over TLS.
pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/v1/check", post(check))
        .fallback(not_found)
        .with_state(Arc::new(state))
}

/// The plain-HTTP router for probes and metrics.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(Arc::new(state))
}

/// A request refused before judging.
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": self.1, "status": self.0.as_u16()})),
        )
            .into_response()
    }
}

async fn validate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let received = Instant::now();
    let timeout = admission::parse_timeout(query_param(query.as_deref(), "timeout").as_deref());
    let deadline = received + timeout - admission::answer_margin(timeout);
    let refuse = |e: HttpError| {
        state
            .metrics
            .rejected_requests
            .with_label_values(&[e.0.as_str()])
            .inc();
        e.into_response()
    };
    let body = async {
        require_json(request.headers())?;
        read_body(request, received, state.read_timeout).await
    };
    let body = match body.await {
        Ok(body) => body,
        Err(e) => return refuse(e),
    };
    if body.len() < LARGE_BODY {
        return answer(&state, &body, received, deadline)
            .await
            .unwrap_or_else(refuse);
    }
    // A large review is parsed and judged off the async workers, few at a time: its CPU
    // never delays the small reviews that are nearly all of them, and its memory is bounded.
    let Ok(Ok(_permit)) =
        tokio::time::timeout_at(deadline.into(), state.large_reviews.clone().acquire_owned()).await
    else {
        return refuse(HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LARGE_REVIEWS} reviews over {LARGE_BODY} bytes were being judged until the deadline; retry"),
        ));
    };
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(answer(&state, &body, received, deadline)))
        .unwrap_or_else(refuse)
}

/// Bodies from this size on are large reviews (see `validate`); an ordinary Pod review
/// is a few KiB, one with `managedFields` tens.
pub const LARGE_BODY: usize = 256 * 1024;
/// Large reviews judged at once.
pub const MAX_LARGE_REVIEWS: usize = 2;

/// Parses, judges and answers one review body.
async fn answer(
    state: &AppState,
    body: &[u8],
    received: Instant,
    deadline: Instant,
) -> Result<Response, HttpError> {
    // The body is parsed for the policy set live once it has arrived, which then judges it.
    // The review borrows its strings from the body.
    let policy = state.reviewer.policies().current();
    let decoded = admission::parse_body(body, policy.review_reads())
        .and_then(admission::decode)
        .map_err(bad_request)?;
    let _in_flight = InFlight::start(&state.metrics);
    let (api_version, subject, findings) = match decoded {
        Decoded::Refuse {
            api_version,
            subject,
            problem,
        } => (api_version, subject, admission::refusal(&problem)),
        Decoded::Judge(review) => {
            let verdict = state
                .reviewer
                .judge(&review, policy, deadline, Placement::InlineFirst)
                .await;
            (review.api_version, review.subject, verdict.messages)
        }
    };
    let elapsed = received.elapsed();
    record(state, &subject, &findings, elapsed);
    Ok(Json(admission::respond(api_version, &subject, &findings)).into_response())
}

async fn check(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let received = Instant::now();
    let timeout = admission::parse_timeout(query_param(query.as_deref(), "timeout").as_deref());
    let text = query_param(query.as_deref(), "format").as_deref() == Some("text");
    // A dry run takes a slot for its whole course, or is turned away at once.
    let Ok(_slot) = state.dry_runs.clone().try_acquire_owned() else {
        let mut response = HttpError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_DRY_RUNS} dry run(s) being judged already; retry in a moment"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let body = match read_body(request, received, state.read_timeout).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let _in_flight = InFlight::start(&state.metrics);
    // Parsing (YAML especially) is CPU work of the size of the body: off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        let max = crate::manifest::MAX_DRY_RUN_OBJECTS;
        let reviews = crate::manifest::reviews_at_most(&body, max).map_err(|e| match e {
            crate::manifest::ManifestError::TooMany { .. } => {
                HttpError(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            e => bad_request(e),
        })?;
        match crate::manifest::too_large(&reviews) {
            Some(why) => Err(HttpError(StatusCode::PAYLOAD_TOO_LARGE, why)),
            None => Ok(reviews),
        }
    })
    .await;
    let reviews = match parsed {
        Ok(Ok(reviews)) => reviews,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => {
            return HttpError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the dry run crashed".into(),
            )
            .into_response()
        }
    };
    let report = report::judge(
        &state.reviewer,
        reviews,
        received + timeout,
        crate::review::Placement::Offloaded,
    )
    .await;
    state
        .metrics
        .check_duration
        .observe(received.elapsed().as_secs_f64());
    if text {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report::render_text(&report),
        )
            .into_response()
    } else {
        Json(report).into_response()
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    // Ready once policies and certificates are loaded, which `serve` does before listening,
    // and, with a cluster, once every synced kind has finished its first list. A failed
    // reload keeps the previous policies live, so it is shown but stays ready; so does a
    // watch that fails later (reviews go on with the last copy).
    let status = state.reviewer.policies().status();
    let Some(sync) = state.reviewer.inventory() else {
        return Json(json!({"status": "ready", "policies": status})).into_response();
    };
    let kinds = sync.status();
    match state.reviewer.inventory_gap(&state.reviewer.policies().current()) {
        None => Json(json!({"status": "ready", "policies": status, "inventory": kinds}))
            .into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": why, "policies": status, "inventory": kinds})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state.registry),
    )
        .into_response()
}

async fn not_found() -> Response {
    HttpError(
        StatusCode::NOT_FOUND,
        "no such endpoint; use POST /validate or POST /v1/check".into(),
    )
    .into_response()
}

fn bad_request(e: impl std::fmt::Display) -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, e.to_string())
}

fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?} is not supported; send application/json"),
        ))
    }
}

/// Reads the whole body within the size limit and within `timeout` of `received`. A
/// `Content-Length` over the limit is refused at once, unread.
async fn read_body(
    request: Request,
    received: Instant,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let too_large = || {
        HttpError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = request.into_body();
    let collected = tokio::time::timeout_at(
        (received + timeout).into(),
        Limited::new(body, MAX_BODY_BYTES).collect(),
    )
    .await;
    match collected {
        Err(_) => Err(HttpError(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body was not received within {timeout:?}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(bad_request(format!("reading the body failed: {e}"))),
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// Counts a review as in flight until dropped, whatever path the handler takes.
struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.in_flight.inc();
        Self(&metrics.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Metrics and the one structured log line per decision.
fn record(state: &AppState, subject: &Subject, findings: &Findings, elapsed: Duration) {
    let metrics = &state.metrics;
    let decision = findings.decision();
    metrics
        .reviews
        .with_label_values(&[
            decision.as_str(),
            metrics::operation_label(&subject.operation),
            metrics::kind_label(&subject.kind),
        ])
        .inc();
    metrics.validate_duration.observe(elapsed.as_secs_f64());
    state.log.decision(&crate::logging::Decision {
        uid: &subject.uid,
        namespace: &subject.namespace,
        kind: &subject.kind,
        name: &subject.name,
        operation: &subject.operation,
        decision,
        reasons: &findings.denial_codes().join(","),
        warnings: findings.warnings().count(),
        duration: elapsed,
    });
}
