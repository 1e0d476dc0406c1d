//! The admin listener's routes: the page, `/metrics`, and the JSON API. Every route that
//! changes something is POST; errors are JSON `{"error": "…"}` with a fitting status.

use super::snapshot::Snapshot;
use super::{Override, State};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State as Ctx};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use switchyard_core::{clock, Backend, Cluster};

/// The status page: one file, no build step, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");
/// Most bytes of a request body.
const MAX_BODY: usize = 64 << 10;

type Shared = Arc<State>;

/// An API error: a status and what is wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Every route, behind the token check.
pub(super) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/overview", get(overview))
        .route("/api/listeners", get(listeners))
        .route("/api/clusters", get(clusters))
        .route("/api/backends", get(backends))
        .route("/api/sessions/{key}", get(session))
        .route("/api/backends/{name}/drain", post(drain))
        .route("/api/backends/{name}/undrain", post(undrain))
        .route("/api/backends/{name}/weight", post(weight))
        .route("/api/reload", post(reload))
        .route("/api/reloads", get(reloads))
        .route("/api/config", get(config))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A request from elsewhere than this listener's own clients: on loopback, one whose
/// `Host` names another server (a DNS-rebinding page); anywhere, one sent by a browser
/// page of another origin (CSRF).
fn foreign(state: &State, headers: &axum::http::HeaderMap) -> Option<Response> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = header(header::HOST).unwrap_or("");
    if let Some(hosts) = &state.hosts {
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Some(
                ApiError(
                    StatusCode::FORBIDDEN,
                    format!("Host {host:?} is not this admin listener ({})", hosts[0]),
                )
                .into_response(),
            );
        }
    }
    let origin = header(header::ORIGIN)?;
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    (!own).then(|| {
        ApiError(
            StatusCode::FORBIDDEN,
            format!("a request from the page of {origin} is refused: only this listener's own page may call the API"),
        )
        .into_response()
    })
}

/// On loopback, `Host` must name this listener (a DNS-rebinding page names its own); a
/// request from a browser page of another origin is refused (CSRF); with a token
/// configured, every request but `GET /` must carry it.
async fn authorize(Ctx(state): Ctx<Shared>, req: Request, next: Next) -> Response {
    if let Some(refused) = foreign(&state, req.headers()) {
        return refused;
    }
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    if req.method() == Method::GET && req.uri().path() == "/" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let problem = match given {
        None => "missing token: send Authorization: Bearer TOKEN",
        Some(t) if same(t.trim().as_bytes(), token.as_bytes()) => return next.run(req).await,
        Some(_) => "wrong token",
    };
    let mut r = ApiError(StatusCode::UNAUTHORIZED, problem.into()).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn metrics(Ctx(state): Ctx<Shared>) -> ApiResult {
    let text = super::prom::encode(Snapshot::take(&state)).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn overview(Ctx(state): Ctx<Shared>) -> Response {
    Json(Snapshot::take(&state)).into_response()
}

async fn listeners(Ctx(state): Ctx<Shared>) -> Response {
    Json(Snapshot::take(&state).listeners).into_response()
}

async fn clusters(Ctx(state): Ctx<Shared>) -> Response {
    Json(Snapshot::take(&state).clusters).into_response()
}

async fn backends(Ctx(state): Ctx<Shared>) -> Response {
    Json(Snapshot::take(&state).backends).into_response()
}

async fn reloads(Ctx(state): Ctx<Shared>) -> Response {
    Json(state.reloads.recent()).into_response()
}

#[derive(Debug, Deserialize)]
struct Which {
    cluster: Option<String>,
    weight: Option<u32>,
    /// `hex`: the key is given as hex digits.
    encoding: Option<String>,
}

/// The query string, or a JSON error saying what is wrong with it.
fn query(q: Result<Query<Which>, QueryRejection>) -> Result<Which, ApiError> {
    q.map(|Query(w)| w)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

/// The byte forms `key` may stand for: its text, a decimal number's 8 big-endian bytes
/// (integer key fields), or with `encoding=hex` the bytes its hex digits spell.
fn key_forms(key: &str, encoding: Option<&str>) -> Result<Vec<(Vec<u8>, &'static str)>, ApiError> {
    match encoding {
        Some("hex") => {
            let digits = key.as_bytes();
            if digits.len() % 2 != 0 || !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "encoding=hex needs an even number of hex digits".into(),
                ));
            }
            let bytes = digits
                .chunks(2)
                .map(|p| {
                    u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0)
                })
                .collect();
            Ok(vec![(bytes, "hex")])
        }
        Some(other) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("encoding {other:?}: only \"hex\" is known"),
        )),
        None => {
            let mut forms = vec![(key.as_bytes().to_vec(), "text")];
            if let Ok(n) = key.parse::<u64>() {
                forms.push((n.to_be_bytes().to_vec(), "integer"));
            }
            Ok(forms)
        }
    }
}

/// Where `key` is pinned (or, for a key-hashing cluster without pins, where it hashes to).
async fn session(
    Ctx(state): Ctx<Shared>,
    Path(key): Path<String>,
    which: Result<Query<Which>, QueryRejection>,
) -> ApiResult {
    let which = query(which)?;
    let g = state.generations.borrow().clone();
    let forms = key_forms(&key, which.encoding.as_deref())?;
    let mut found = Vec::new();
    let mut considered = 0;
    for u in &g.upstreams {
        let c = &u.cluster;
        if which
            .cluster
            .as_ref()
            .is_some_and(|w| *w != c.settings.name)
        {
            continue;
        }
        considered += 1;
        for (bytes, read_as) in &forms {
            if let Some(store) = &c.sessions {
                let hash = switchyard_core::session::key_hash(c.hash_key(bytes));
                if let Some(pin) = store.lookup(hash) {
                    let b = c.index_of(pin.backend).map(|i| &c.backends[i]);
                    let now = super::unix_ms();
                    found.push(json!({
                        "cluster": c.settings.name,
                        "read_as": read_as,
                        "pinned": true,
                        "backend": b.map(|b| b.name.clone()),
                        "address": b.map(|b| b.address.to_string()),
                        "since_unix_ms": now.saturating_sub(pin.age_ms),
                        "age_seconds": pin.age_ms as f64 / 1e3,
                        "idle_seconds": pin.idle_ms as f64 / 1e3,
                        "hits": pin.hits,
                        "owner": (pin.owner != 0).then(|| crate::registry::conn_name(pin.owner)),
                    }));
                }
            } else if c.settings.policy.hashes_keys() && *read_as != "integer" {
                if let Some(b) = hashed_to(c, bytes) {
                    found.push(json!({
                        "cluster": c.settings.name,
                        "read_as": read_as,
                        "pinned": false,
                        "hashed_by": c.settings.policy.name(),
                        "backend": b.name,
                        "address": b.address.to_string(),
                    }));
                }
            }
        }
    }
    if considered == 0 {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no cluster {}", which.cluster.unwrap_or_default()),
        ));
    }
    if found.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("key {key:?} has no live pin"),
        ));
    }
    Ok(Json(json!({ "key": key, "clusters": found })).into_response())
}

/// Where a key-hashing cluster without pins places `key` now (no side effect: nothing is
/// pinned).
fn hashed_to<'c>(c: &'c Cluster, key: &[u8]) -> Option<&'c Arc<Backend>> {
    let mut picker = switchyard_core::balance::picker(c.settings.policy, c.backends.len(), 0);
    let up = |i: usize| c.backends[i].is_up();
    let routed = c.route_at(Some(key), &mut *picker, &up, clock::now_ms());
    routed.backend().map(|i| &c.backends[i])
}

/// A backend found by name, in the generation it was found in.
struct Found {
    number: u64,
    cluster: Arc<Cluster>,
    backend: Arc<Backend>,
}

/// The backend `name` (of `cluster`, needed when several clusters have one by that name).
fn find(state: &State, name: &str, cluster: Option<&str>) -> Result<Found, ApiError> {
    let g = state.generations.borrow().clone();
    let mut hits = g
        .upstreams
        .iter()
        .filter(|u| cluster.is_none_or(|c| c == u.cluster.settings.name))
        .flat_map(|u| {
            u.cluster
                .backends
                .iter()
                .filter(|b| b.name == name)
                .map(|b| (u.cluster.clone(), b.clone()))
        })
        .collect::<Vec<_>>();
    match hits.len() {
        0 => Err(ApiError(
            StatusCode::NOT_FOUND,
            match cluster {
                Some(c) => format!("cluster {c} has no backend {name}"),
                None => format!("no backend {name}"),
            },
        )),
        1 => {
            let (cluster, backend) = hits.remove(0);
            Ok(Found {
                number: g.number,
                cluster,
                backend,
            })
        }
        _ => Err(ApiError(
            StatusCode::CONFLICT,
            format!("several clusters have a backend {name}: add ?cluster=NAME"),
        )),
    }
}

/// A run-time change to the backend `name`: `apply` makes it (and says what it was),
/// `record` notes it as an override until the next reload. A reload applied meanwhile
/// wins: its settings are applied again to the backend (in case the change landed after
/// them), and the answer is 409.
fn change<T>(
    state: &State,
    name: &str,
    which: &Which,
    apply: impl FnOnce(&Backend) -> T,
    record: impl FnOnce(&mut Override),
) -> Result<(Found, T), ApiError> {
    let f = find(state, name, which.cluster.as_deref())?;
    let was = apply(&f.backend);
    let (cluster, b) = (&f.cluster.settings.name, &f.backend);
    state.set_override(f.number, (cluster.clone(), b.name.clone()), record);
    let g = state.generations.borrow().clone();
    if g.number == f.number {
        return Ok((f, was));
    }
    let settings = g
        .config
        .clusters
        .iter()
        .filter(|c| c.name() == cluster)
        .flat_map(|c| &c.balance.backends)
        .find(|s| s.name == b.name && s.address == b.address);
    if let Some(s) = settings {
        b.update(s);
    }
    Err(ApiError(
        StatusCode::CONFLICT,
        "a reload was applied meanwhile and its settings stand: try again".into(),
    ))
}

fn set_drain(state: &State, name: &str, which: &Which, drain: bool) -> ApiResult {
    let (f, was) = change(
        state,
        name,
        which,
        |b| b.set_draining(drain),
        |o| o.drain = Some(drain),
    )?;
    let (cluster, b) = (&f.cluster.settings.name, &f.backend);
    tracing::info!(%cluster, backend = %b.name, draining = drain, was, "admin API: backend {}", if drain { "drained" } else { "undrained" });
    Ok(Json(json!({
        "cluster": cluster,
        "backend": b.name,
        "draining": drain,
        "was_draining": was,
        "until": "the next reload",
    }))
    .into_response())
}

async fn drain(
    Ctx(state): Ctx<Shared>,
    Path(name): Path<String>,
    which: Result<Query<Which>, QueryRejection>,
) -> ApiResult {
    let which = query(which)?;
    set_drain(&state, &name, &which, true)
}

async fn undrain(
    Ctx(state): Ctx<Shared>,
    Path(name): Path<String>,
    which: Result<Query<Which>, QueryRejection>,
) -> ApiResult {
    let which = query(which)?;
    set_drain(&state, &name, &which, false)
}

/// `POST /api/backends/NAME/weight?weight=N`, or with a JSON body `{"weight": N}`.
async fn weight(
    Ctx(state): Ctx<Shared>,
    Path(name): Path<String>,
    which: Result<Query<Which>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    let which = query(which)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let from_body = if body.is_empty() {
        None
    } else {
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        Some(
            v.get("weight")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("the body needs \"weight\": a whole number".into()))?,
        )
    };
    let w = from_body
        .or(which.weight.map(u64::from))
        .ok_or_else(|| bad("give the weight: ?weight=N or {\"weight\": N}".into()))?;
    if !(1..=10_000).contains(&w) {
        return Err(bad(format!("weight must be 1 to 10000, got {w}")));
    }
    let w = w as u32;
    let (f, was) = change(
        &state,
        &name,
        &which,
        |b| {
            let was = b.weight();
            b.set_weight(w);
            was
        },
        |o| o.weight = Some(w),
    )?;
    let (cluster, b) = (&f.cluster.settings.name, &f.backend);
    tracing::info!(%cluster, backend = %b.name, weight = w, was, "admin API: backend weight set");
    Ok(Json(json!({
        "cluster": cluster,
        "backend": b.name,
        "weight": w,
        "was": was,
        "until": "the next reload",
        "note": if f.cluster.settings.policy.hashes_keys() { "this cluster places keys by hashing: its key map keeps the configured weights until a reload" } else { "" },
    }))
    .into_response())
}

async fn reload(Ctx(state): Ctx<Shared>) -> Response {
    // Reading the file, resolving its addresses and binding sockets block: off the control
    // thread's event loop, which also runs health checks and the pin purge.
    let job = tokio::task::spawn_blocking(move || (state.reload)("api"));
    let Ok(report) = job.await else {
        return ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the reload panicked".into(),
        )
        .into_response();
    };
    let status = if report.applied {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, Json(report)).into_response()
}

/// The effective config: every listener and cluster as validated, defaults filled in,
/// secrets (the admin token, backend passwords) redacted.
async fn config(Ctx(state): Ctx<Shared>) -> Response {
    Json(super::effective::config(&state)).into_response()
}
