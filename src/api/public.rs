//! The public API (`[api]`): on-demand checks through the same topics,
//! checkers and persisters as scheduled ones, and read access to results
//! and sites in Postgres. Every route needs a bearer token (see [`guard`]).
//!
//! * `POST /v1/checks[?wait=5s]`: validate, publish a `CheckRequest`
//!   (origin `on_demand`); with `wait`, answer with the outcome if it comes
//!   in time, else `202` with the check id and a `Location`.
//! * `GET /v1/checks/{id}`: the persisted result, so a client that lost its
//!   connection fetches it later.
//! * `GET /v1/sites`, `/v1/sites/{name}`, `/v1/sites/{name}/results`.
//! * `GET /v1/openapi.json`.
//! * `GET /v1/stream`: a WebSocket for on-demand checks and live outcomes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Extension, Json, Router};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Deserialize;
use serde_json::{json, Value};

use super::guard::{self, Caller, Guard};
use super::outcomes::Outcomes;
use crate::bus::Publisher;
use crate::config::{self, FieldError, Settings};
use crate::model::{self, CheckRequest, Origin};
use crate::net as targets;

/// Queueing allowance on top of an on-demand check's own timeout.
const QUEUE_ALLOWANCE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct PublicApi {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub publisher: Publisher,
    pub outcomes: Outcomes,
}

impl PublicApi {
    pub fn router(self) -> Router {
        let guard = Guard::new(
            self.settings.api_tokens.clone(),
            self.settings.api.requests_per_minute,
            self.settings.api.max_in_flight,
            self.settings.api.failed_auth_per_minute,
        );
        let limit = self.settings.api.max_body_bytes;
        Router::new()
            .route("/v1/checks", post(create_check))
            .route("/v1/checks/{id}", get(get_check))
            .route("/v1/sites", get(list_sites))
            .route("/v1/sites/{name}", get(get_site))
            .route("/v1/sites/{name}/results", get(site_results))
            .route("/v1/openapi.json", get(|| async { Json(openapi()) }))
            .route("/v1/stream", get(super::stream::stream))
            .layer(middleware::from_fn_with_state(guard, guard::check))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }
}

/// Why a check was not queued.
pub enum Rejection {
    Invalid(Vec<FieldError>),
    Unavailable(String),
}

impl Rejection {
    pub(super) fn to_json(&self) -> Value {
        match self {
            Rejection::Invalid(errors) => json!({ "errors": errors }),
            Rejection::Unavailable(e) => json!({ "error": e }),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let code = match self {
            Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, Json(self.to_json())).into_response()
    }
}

/// Validates an on-demand check (config rules, then private targets) and
/// publishes its request. Subscribe to the outcomes *before* calling.
pub(super) async fn queue(
    api: &PublicApi,
    body: &Value,
    caller: &Caller,
) -> Result<CheckRequest, Rejection> {
    let site =
        config::parse_on_demand(body, &api.settings.site_defaults).map_err(Rejection::Invalid)?;
    let a = &api.settings.api;
    let refused =
        config::refuse_by_policy(&site, &a.allowed_methods, &a.allowed_ports, &a.denied_ports);
    if !refused.is_empty() {
        return Err(Rejection::Invalid(refused));
    }
    if !api.settings.api.allow_private_targets {
        targets::refuse_private(&site.url)
            .await
            .map_err(|message| {
                Rejection::Invalid(vec![FieldError {
                    field: "url".into(),
                    message,
                }])
            })?;
    }
    let now = Utc::now();
    let req = CheckRequest {
        origin: Origin::OnDemand,
        public_only: !api.settings.api.allow_private_targets,
        requested_by: Some(caller.token_id().to_owned()),
        site: on_demand_key(&site.url),
        deadline: now
            + chrono::Duration::from_std(site.timeout + QUEUE_ALLOWANCE).unwrap_or_default(),
        ..site.request(uuid::Uuid::new_v4(), now)
    };
    api.publisher
        .send(
            &api.settings.kafka.topics.created,
            req.site.as_bytes(),
            &model::encode(&req),
            None,
        )
        .await
        .map_err(|e| Rejection::Unavailable(format!("cannot queue the check: {e}")))?;
    Ok(req)
}

/// The `site` an on-demand result is stored under: `on-demand:<host>`. A
/// configured site's name cannot hold a `:`, so an on-demand check of a
/// configured site's host (or of a URL whose host is a site's name) never
/// feeds that site's status, uptime, rollups or incidents.
pub fn on_demand_key(url: &url::Url) -> String {
    format!("on-demand:{}", url.host_str().unwrap_or("unknown"))
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

fn invalid(errors: Vec<FieldError>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

async fn create_check(
    State(api): State<PublicApi>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<WaitQuery>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return invalid(vec![FieldError {
                field: String::new(),
                message: format!("not JSON: {e}"),
            }])
        }
    };
    let wait = match q.wait.as_deref().map(config::parse_duration).transpose() {
        Ok(w) => w.map(|w| w.min(api.settings.api.max_wait)),
        Err(e) => {
            return invalid(vec![FieldError {
                field: "wait".into(),
                message: e,
            }])
        }
    };
    // Listen before publishing, so a fast outcome is not missed.
    let mut outcomes = api.outcomes.subscribe();
    let req = match queue(&api, &body, &caller).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let id = req.check_id;
    if let Some(wait) = wait {
        let found = tokio::time::timeout(wait, async {
            loop {
                match outcomes.recv().await {
                    Ok(o) if o.check_id == id => return Some(o),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        })
        .await;
        if let Ok(Some(o)) = found {
            return (
                StatusCode::OK,
                Json(json!({ "check_id": id, "status": "done", "outcome": &*o })),
            )
                .into_response();
        }
    }
    let location = format!("/v1/checks/{id}");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location.clone())],
        Json(json!({ "check_id": id, "status": "pending", "location": location })),
    )
        .into_response()
}

/// A scheduled check's result for any token; an on-demand one only for the
/// token that asked for it (404 for the others, as if it did not exist).
async fn get_check(
    State(api): State<PublicApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return error(StatusCode::BAD_REQUEST, "not a check id (UUID)");
    };
    let client = match api.pool.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    // A time-leading id carries its slot: one partition's index, not one
    // probe per daily partition.
    let found = match crate::model::slot_of(id) {
        Some(slot) => {
            client
                .query_opt(
                    "SELECT to_jsonb(r) - 'requested_by' FROM check_results r
                     WHERE check_id = $1 AND scheduled_at = $3
                       AND (origin = 'scheduled' OR requested_by = $2)",
                    &[&id, &caller.token_id(), &slot],
                )
                .await
        }
        None => {
            client
                .query_opt(
                    "SELECT to_jsonb(r) - 'requested_by' FROM check_results r
                     WHERE check_id = $1 AND (origin = 'scheduled' OR requested_by = $2)",
                    &[&id, &caller.token_id()],
                )
                .await
        }
    };
    match found {
        Ok(Some(row)) => {
            Json(json!({ "check_id": id, "status": "done", "result": row.get::<_, Value>(0) }))
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no result for this check (yet)"),
        Err(e) => unavailable(e),
    }
}

async fn list_sites(State(api): State<PublicApi>) -> Response {
    json_query(
        &api.pool,
        "SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.site), '[]') FROM site_status s",
        &[],
    )
    .await
}

async fn get_site(State(api): State<PublicApi>, Path(name): Path<String>) -> Response {
    json_query(
        &api.pool,
        "SELECT to_jsonb(s) || jsonb_build_object('uptime',
                    (SELECT coalesce(jsonb_agg(to_jsonb(u)), '[]') FROM site_uptime u WHERE u.site = s.site))
         FROM site_status s WHERE s.site = $1",
        &[&name],
    )
    .await
}

#[derive(Deserialize)]
struct Page {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

async fn site_results(
    State(api): State<PublicApi>,
    Path(name): Path<String>,
    Query(p): Query<Page>,
) -> Response {
    // Newest first; the next page is `until` = the oldest `scheduled_at` seen.
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    json_query(
        &api.pool,
        "SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.scheduled_at DESC), '[]') FROM (
             SELECT * FROM check_results
             WHERE site = $1 AND origin = 'scheduled'
               AND ($2::timestamptz IS NULL OR scheduled_at >= $2)
               AND ($3::timestamptz IS NULL OR scheduled_at < $3)
             ORDER BY scheduled_at DESC LIMIT $4) r",
        &[&name, &p.since, &p.until, &limit],
    )
    .await
}

/// Runs a query returning one JSON value; 404 when it returns no row.
async fn json_query(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Response {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    match client.query_opt(sql, params).await {
        Ok(Some(row)) => Json(row.get::<_, Value>(0)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such site"),
        Err(e) => unavailable(e),
    }
}

/// The OpenAPI document; a test calls every path it lists.
pub fn openapi() -> Value {
    let bearer = json!([{ "bearer": [] }]);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "sitewatch", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "CheckSpec": {
                    "type": "object", "required": ["url"], "additionalProperties": false,
                    "properties": {
                        "url": { "type": "string" }, "regex": { "type": "string" },
                        "timeout": { "type": "string", "example": "5s" },
                        "method": { "type": "string" },
                        "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                        "expect_status": {},
                        "forbidden_regex": { "type": "string" },
                        "degraded_after": { "type": "string", "example": "1500ms" },
                        "expect_headers": { "type": "array", "items": { "type": "object",
                            "required": ["name"], "additionalProperties": false,
                            "properties": { "name": { "type": "string" }, "matches": { "type": "string" },
                                            "absent": { "type": "boolean" } } } },
                        "json": { "type": "array", "items": { "type": "object",
                            "required": ["path"], "minProperties": 2, "maxProperties": 2,
                            "properties": { "path": { "type": "string", "example": "$.status" },
                                            "equals": {}, "not_equals": {},
                                            "at_least": { "type": "number" }, "at_most": { "type": "number" },
                                            "greater_than": { "type": "number" }, "less_than": { "type": "number" },
                                            "matches": { "type": "string" },
                                            "present": { "const": true }, "absent": { "const": true } },
                            "additionalProperties": false } },
                        "body_min_bytes": { "type": "integer", "minimum": 0 },
                        "body_max_bytes": { "type": "integer", "minimum": 0 },
                        "min_cert_days": { "type": "integer", "minimum": 0 },
                        "follow_redirects": { "type": "boolean" },
                        "max_redirects": { "type": "integer", "minimum": 0, "maximum": 30 },
                        "body": { "type": "string" },
                        "send": { "type": "string", "description": "tcp:// only" },
                        "expect": { "type": "string", "description": "tcp:// only: a regex" },
                        "expect_answer": { "description": "dns:// only: a string or a list of strings" },
                        "starttls": { "type": "string", "enum": ["smtp", "imap"], "description": "tls:// only" },
                        "server_name": { "type": "string", "description": "tls:// only: SNI and the name verified" },
                        "expect_rcode": { "type": "string", "description": "dns:// only, default NOERROR" },
                        "verify_tls": { "type": "boolean" },
                        "ip_family": { "type": "string",
                            "enum": ["any", "prefer_ipv4", "prefer_ipv6", "ipv4", "ipv6"] }
                    }
                },
                "Errors": { "type": "object", "properties": { "errors": { "type": "array", "items": {
                    "type": "object", "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } } } }
            }
        },
        "security": bearer,
        "paths": {
            "/v1/checks": { "post": {
                "summary": "Check a URL now",
                "parameters": [{ "name": "wait", "in": "query", "schema": { "type": "string" },
                                 "description": "wait up to this long (e.g. 5s) for the outcome" }],
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/CheckSpec" } } } },
                "responses": {
                    "200": { "description": "the outcome arrived within wait" },
                    "202": { "description": "queued; fetch the result from Location later" },
                    "400": { "description": "invalid request", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Errors" } } } },
                    "401": { "description": "no valid token" },
                    "429": { "description": "rate or concurrency limit" } } } },
            "/v1/checks/{id}": { "get": {
                "summary": "A check's persisted result",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }],
                "responses": { "200": { "description": "the result" }, "404": { "description": "not persisted (yet)" } } } },
            "/v1/sites": { "get": { "summary": "Every site with its latest status",
                "responses": { "200": { "description": "sites" } } } },
            "/v1/sites/{name}": { "get": { "summary": "One site: status and uptime",
                "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "the site" }, "404": { "description": "no such site" } } } },
            "/v1/sites/{name}/results": { "get": { "summary": "A site's results, newest first",
                "parameters": [
                    { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "since", "in": "query", "schema": { "type": "string", "format": "date-time" } },
                    { "name": "until", "in": "query", "schema": { "type": "string", "format": "date-time" },
                      "description": "exclusive; pass the oldest scheduled_at of a page for the next" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 1000 } }],
                "responses": { "200": { "description": "results" } } } },
            "/v1/openapi.json": { "get": { "summary": "This document",
                "responses": { "200": { "description": "OpenAPI 3" } } } }
        }
    })
}
