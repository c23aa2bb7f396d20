//! The routes of the HTTP API and their handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Router, extract::DefaultBodyLimit};
use caxton_core::{AgentId, DeploymentId, Digest, SessionId};
use caxton_host::{
    Delivery, DeployRequest, Host, HostEvent, ModuleSource, PromoteMode, RolloutSpec,
};
use futures::{Stream, StreamExt, stream};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::views::{
    CreateDeployment, DeploymentView, EmptyBody, EventsQuery, ListQuery, PromoteBody, RollbackBody,
    RollbackView, audit_view,
};

/// The session a message belongs to.
pub const SESSION_HEADER: &str = "caxton-session";
/// Which deployment answered a message.
pub const DEPLOYMENT_HEADER: &str = "caxton-deployment";

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) host: Arc<Host>,
    pub(crate) only_agent: Option<AgentId>,
    pub(crate) prometheus: Option<PrometheusHandle>,
    /// Turns `true` when the server shuts down: event streams end so that the graceful
    /// shutdown, which waits for open responses, is not held up by them.
    pub(crate) shutdown: watch::Receiver<bool>,
}

type Shared = Arc<AppState>;

impl AppState {
    /// The agent a path names; one this server does not serve is unknown.
    fn agent(&self, raw: &str) -> Result<AgentId, ApiError> {
        let agent = AgentId::new(raw).map_err(|_| ApiError::unknown_agent(raw))?;
        if self.only_agent.as_ref().is_some_and(|only| only != &agent) {
            return Err(ApiError::unknown_agent(raw));
        }
        Ok(agent)
    }
}

fn deployment_id(agent: &AgentId, raw: &str) -> Result<DeploymentId, ApiError> {
    DeploymentId::new(raw).map_err(|_| not_found(agent, raw))
}

fn not_found(agent: &AgentId, raw: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("deployment `{raw}` of agent `{agent}` not found"),
    )
}

/// Path parameters, refused in the API's error format.
pub(crate) struct ApiPath<T>(T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| {
                ApiError::new(rejection.status(), "invalid_path", rejection.body_text())
            })
    }
}

/// A query string, refused in the API's error format.
pub(crate) struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// A request body that could not be read: 413 when it is over the limit.
fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "payload_too_large",
            "the request body is larger than this route accepts",
        )
    } else {
        ApiError::new(status, "invalid_body", rejection.body_text())
    }
}

/// A JSON body; an empty one reads as `{}`. A wrong field is named by its path.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        let message = error.inner().to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.clone(), |(head, _)| head.to_owned());
        ApiError::invalid(field, message)
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::invalid("body", "trailing characters after the JSON value"))?;
    Ok(value)
}

/// The routes, with every (method, path) pair recorded so that the OpenAPI document can
/// be checked against what is really served.
pub(crate) struct RouteTable {
    router: Router<Shared>,
    routes: Vec<(Method, &'static str)>,
}

impl RouteTable {
    fn new() -> Self {
        RouteTable {
            router: Router::new(),
            routes: Vec::new(),
        }
    }

    fn add(mut self, method: Method, path: &'static str, handler: MethodRouter<Shared>) -> Self {
        self.router = self.router.route(path, handler);
        self.routes.push((method, path));
        self
    }

    /// The recorded (method, path) pairs.
    pub(crate) fn routes(&self) -> &[(Method, &'static str)] {
        &self.routes
    }
}

/// The `/v1` routes (the ones the token guards).
pub(crate) fn api_routes(module_limit: usize) -> RouteTable {
    RouteTable::new()
        .add(
            Method::PUT,
            "/v1/artifacts",
            put(put_artifact).layer(DefaultBodyLimit::max(module_limit)),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments",
            post(create_deployment),
        )
        .add(
            Method::GET,
            "/v1/agents/{agent}/deployments",
            get(list_deployments),
        )
        .add(
            Method::GET,
            "/v1/agents/{agent}/deployments/{id}",
            get(get_deployment),
        )
        .add(
            Method::DELETE,
            "/v1/agents/{agent}/deployments/{id}",
            delete(delete_deployment),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments/{id}/promote",
            post(promote),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments/{id}/rollback",
            post(rollback),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments/{id}/pause",
            post(pause),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments/{id}/resume",
            post(resume),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments/{id}/abort",
            post(abort),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/deployments/{id}/messages",
            post(preview),
        )
        .add(
            Method::POST,
            "/v1/agents/{agent}/messages",
            post(send_message),
        )
        .add(
            Method::DELETE,
            "/v1/agents/{agent}/sessions/{session}",
            delete(end_session),
        )
        .add(Method::GET, "/v1/agents/{agent}", get(status))
        .add(Method::GET, "/v1/agents/{agent}/history", get(history))
        .add(Method::GET, "/v1/agents/{agent}/events", get(events))
        .add(Method::GET, "/v1/deployments/{id}", get(find_deployment))
}

/// The open routes: probes, metrics and the API's description.
pub(crate) fn open_routes() -> RouteTable {
    RouteTable::new()
        .add(Method::GET, "/healthz", get(healthz))
        .add(Method::GET, "/readyz", get(readyz))
        .add(Method::GET, "/metrics", get(prometheus))
        .add(Method::GET, "/openapi.json", get(openapi))
}

impl RouteTable {
    /// The axum router, for merging.
    pub(crate) fn into_router(self) -> Router<Shared> {
        self.router
    }
}

/// Any path no route serves.
pub(crate) async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {method} {}", uri.path()),
    )
}

/// A known path with a method it does not take.
pub(crate) async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

async fn put_artifact(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    if body.is_empty() {
        return Err(ApiError::invalid("body", "a module cannot be empty"));
    }
    let stored = state.host.put_artifact(&body).await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"digest": stored.digest.to_string(), "size": stored.size})),
    )
        .into_response())
}

/// The host's request for a create body.
pub(crate) fn deploy_request(
    agent: AgentId,
    body: CreateDeployment,
) -> Result<DeployRequest, ApiError> {
    let digest: Digest = body
        .module
        .parse()
        .map_err(|error| ApiError::invalid("module", error))?;
    let mut request = DeployRequest::builder(agent, ModuleSource::Artifact(digest));
    if let Some(label) = body.label {
        request = request.label(label);
    }
    if let Some(model) = body.model {
        request = request.model(model.into());
    }
    if let Some(prompt) = body.prompt {
        request = request.prompt(prompt);
    }
    if let Some(tools) = body.tools {
        request = request.tools_json(tools.to_string());
    }
    for (key, value) in body.config {
        request = request.config(key, value);
    }
    for name in body.secrets {
        request = request.secret(name);
    }
    if let Some(mode) = body.sessions {
        request = request.sessions(mode);
    }
    if let Some(metadata) = body.metadata {
        if let Some(commit) = metadata.commit {
            request = request.commit(commit);
        }
        if let Some(author) = metadata.author {
            request = request.author(author);
        }
        for (key, value) in metadata.labels {
            request = request.metadata(key, value);
        }
    }
    if let Some(rollout) = body.rollout {
        let text = json!({ "deployment": rollout }).to_string();
        let spec = RolloutSpec::from_json(&text).map_err(|error| {
            ApiError::invalid(
                "rollout",
                error.to_string().replace("deployment.", "rollout."),
            )
        })?;
        request = request.rollout(spec);
    }
    Ok(request.build())
}

async fn create_deployment(
    State(state): State<Shared>,
    ApiPath(agent): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let agent = state.agent(&agent)?;
    let body: CreateDeployment = parse_json(&body.map_err(body_error)?)?;
    let request = deploy_request(agent.clone(), body)?;
    let deployed = state.host.deploy(request).await?;
    let location = format!("/v1/agents/{agent}/deployments/{}", deployed.deployment.id);
    let mut response = (
        StatusCode::CREATED,
        Json(DeploymentView::from(&deployed.deployment)),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn list_deployments(
    State(state): State<Shared>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<DeploymentView>>, ApiError> {
    let agent = state.agent(&agent)?;
    let deployments = state.host.list(&agent, query.include_deleted).await?;
    if deployments.is_empty() {
        return Err(ApiError::unknown_agent(agent.as_str()));
    }
    Ok(Json(deployments.iter().map(DeploymentView::from).collect()))
}

async fn get_deployment(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
) -> Result<Json<DeploymentView>, ApiError> {
    let agent = state.agent(&agent)?;
    let id = deployment_id(&agent, &id)?;
    let deployment = state.host.get(&agent, &id).await?;
    Ok(Json((&deployment).into()))
}

async fn find_deployment(
    State(state): State<Shared>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeploymentView>, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no deployment `{id}`"),
        )
    };
    let deployment_id = DeploymentId::new(&id).map_err(|_| missing())?;
    let agents = state
        .host
        .store()
        .agents()
        .await
        .map_err(|error| ApiError::from(caxton_host::HostError::from(error)))?;
    for agent in agents {
        if state.only_agent.as_ref().is_some_and(|only| only != &agent) {
            continue;
        }
        match state.host.get(&agent, &deployment_id).await {
            Ok(deployment) => return Ok(Json((&deployment).into())),
            Err(error) if error.is_not_found() => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(missing())
}

async fn delete_deployment(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
) -> Result<Json<DeploymentView>, ApiError> {
    let agent = state.agent(&agent)?;
    let id = deployment_id(&agent, &id)?;
    let deployment = state.host.delete(&agent, &id).await?;
    Ok(Json((&deployment).into()))
}

async fn promote(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeploymentView>, ApiError> {
    let agent = state.agent(&agent)?;
    let id = deployment_id(&agent, &id)?;
    let body: PromoteBody = parse_json(&body.map_err(body_error)?)?;
    let mode = if body.full {
        PromoteMode::Full
    } else {
        PromoteMode::Step
    };
    let deployment = state.host.promote(&agent, &id, mode).await?;
    Ok(Json((&deployment).into()))
}

async fn rollback(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RollbackView>, ApiError> {
    let agent = state.agent(&agent)?;
    let id = deployment_id(&agent, &id)?;
    let body: RollbackBody = parse_json(&body.map_err(body_error)?)?;
    let to = match &body.to {
        Some(to) => Some(deployment_id(&agent, to)?),
        None => None,
    };
    let outcome = state.host.rollback(&agent, &id, to.as_ref()).await?;
    Ok(Json((&outcome).into()))
}

/// The operator commands on a rollout.
#[derive(Clone, Copy)]
enum Operator {
    Pause,
    Resume,
    Abort,
}

async fn operate(
    state: &AppState,
    agent: &str,
    id: &str,
    body: Result<Bytes, BytesRejection>,
    command: Operator,
) -> Result<Json<DeploymentView>, ApiError> {
    let agent = state.agent(agent)?;
    let id = deployment_id(&agent, id)?;
    let _: EmptyBody = parse_json(&body.map_err(body_error)?)?;
    match command {
        Operator::Pause => state.host.pause(&agent, &id).await?,
        Operator::Resume => state.host.resume(&agent, &id).await?,
        Operator::Abort => {
            state
                .host
                .abort(&agent, &id, "aborted by an operator through the API")
                .await?
        }
    }
    let deployment = state.host.get(&agent, &id).await?;
    Ok(Json((&deployment).into()))
}

async fn pause(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeploymentView>, ApiError> {
    operate(&state, &agent, &id, body, Operator::Pause).await
}

async fn resume(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeploymentView>, ApiError> {
    operate(&state, &agent, &id, body, Operator::Resume).await
}

async fn abort(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeploymentView>, ApiError> {
    operate(&state, &agent, &id, body, Operator::Abort).await
}

fn session_of(headers: &HeaderMap) -> Result<Option<SessionId>, ApiError> {
    match headers.get(SESSION_HEADER) {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid("Caxton-Session", "not visible ASCII"))?;
            SessionId::new(text)
                .map(Some)
                .map_err(|error| ApiError::invalid("Caxton-Session", error))
        }
    }
}

/// Runs an agent on this thread. On a multi-threaded runtime the worker's other tasks
/// move to another worker meanwhile; on a current-thread runtime the message runs inline
/// (agents are bounded by their fuel and deadline).
fn run_agent<T>(work: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

fn reply(delivery: Delivery) -> Response {
    let mut response = (StatusCode::OK, delivery.reply).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(delivery.deployment.as_str()) {
        headers.insert(DEPLOYMENT_HEADER, value);
    }
    response
}

async fn send_message(
    State(state): State<Shared>,
    ApiPath(agent): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let agent = state.agent(&agent)?;
    let session = session_of(&headers)?;
    let body = body.map_err(body_error)?;
    let delivery = run_agent(|| state.host.send(&agent, session.as_ref(), &body))?;
    Ok(reply(delivery))
}

async fn preview(
    State(state): State<Shared>,
    ApiPath((agent, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let agent = state.agent(&agent)?;
    let id = deployment_id(&agent, &id)?;
    let session = session_of(&headers)?;
    let body = body.map_err(body_error)?;
    let delivery = state
        .host
        .preview(&agent, &id, session.as_ref(), &body)
        .await?;
    Ok(reply(delivery))
}

async fn end_session(
    State(state): State<Shared>,
    ApiPath((agent, session)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let agent = state.agent(&agent)?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            format!("agent `{agent}` has no session `{session}`"),
        )
    };
    let id = SessionId::new(&session).map_err(|_| unknown())?;
    if state.host.end_session(&agent, &id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown())
    }
}

async fn status(
    State(state): State<Shared>,
    ApiPath(agent): ApiPath<String>,
) -> Result<Response, ApiError> {
    let agent = state.agent(&agent)?;
    let status = state.host.status(&agent).await?;
    Ok(Json(status).into_response())
}

async fn history(
    State(state): State<Shared>,
    ApiPath(agent): ApiPath<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let agent = state.agent(&agent)?;
    let history = state.host.history(&agent).await?;
    if history.is_empty() {
        return Err(ApiError::unknown_agent(agent.as_str()));
    }
    Ok(Json(history.iter().map(audit_view).collect()))
}

async fn events(
    State(state): State<Shared>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let agent = state.agent(&agent)?;
    if state.host.list(&agent, true).await?.is_empty() {
        return Err(ApiError::unknown_agent(agent.as_str()));
    }
    let deployment = match &query.deployment {
        Some(id) => Some(deployment_id(&agent, id)?),
        None => None,
    };
    // Subscribe before reading what was kept, so nothing falls between the two; what
    // arrives in both is sent once.
    let live = state.host.events();
    let recent = if query.replay.unwrap_or(true) {
        state.host.recent_events(&agent)
    } else {
        Vec::new()
    };
    // The replay, while live events may still repeat it; `None` once one did not.
    let mut overlap: Option<Vec<HostEvent>> = Some(recent.clone());
    let keep = {
        let agent = agent.clone();
        move |event: &HostEvent| {
            event.event.agent_id == agent
                && deployment
                    .as_ref()
                    .is_none_or(|id| &event.event.deployment_id == id)
        }
    };
    let replayed: Vec<HostEvent> = recent.into_iter().filter(|e| keep(e)).collect();
    let live = live.filter(move |event| {
        // Only the first live events can repeat the replay.
        let repeat = overlap.as_ref().is_some_and(|seen| seen.contains(event));
        if !repeat {
            overlap = None;
        }
        std::future::ready(!repeat && keep(event))
    });
    let mut shutdown = state.shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|stopped| *stopped).await;
    };
    let stream = stream::iter(replayed)
        .chain(live)
        .take_until(Box::pin(stopped))
        .map(|event| Ok(sse_event(&event)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(event: &HostEvent) -> Event {
    Event::default()
        .event(event.event.kind.name())
        .data(serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned()))
}

async fn healthz(State(state): State<Shared>) -> Response {
    let health = state.host.health().await;
    let status = if health.live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"live": health.live}))).into_response()
}

async fn readyz(State(state): State<Shared>) -> Response {
    // The registry answers, and every production is loaded, warm and live.
    if let Err(error) = state.host.store().agents().await {
        let body = json!({"ready": false, "registry": error.to_string()});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let health = state.host.health().await;
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

async fn prometheus(State(state): State<Shared>) -> Result<Response, ApiError> {
    let Some(handle) = &state.prometheus else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "this server was started without a Prometheus recorder",
        ));
    };
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_field_is_named_by_its_path() {
        let error = parse_json::<CreateDeployment>(br#"{"module": "sha256:00", "sesions": 1}"#)
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(
            error.message().starts_with("sesions:"),
            "{}",
            error.message()
        );
        let error = parse_json::<CreateDeployment>(br#"{"module": 7}"#).unwrap_err();
        assert!(
            error.message().starts_with("module:"),
            "{}",
            error.message()
        );
        let error = parse_json::<CreateDeployment>(br#"{"module": "x", "model": {"name": 1}}"#)
            .unwrap_err();
        assert!(
            error.message().starts_with("model.name:"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn malformed_json_names_the_body() {
        let error = parse_json::<PromoteBody>(b"{\"full\": tru").unwrap_err();
        assert_eq!(error.code(), "invalid_request");
        let error = parse_json::<PromoteBody>(b"{} {}").unwrap_err();
        assert!(error.message().contains("trailing"), "{}", error.message());
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        assert!(!parse_json::<PromoteBody>(b"").unwrap().full);
        assert!(parse_json::<RollbackBody>(b"  ").unwrap().to.is_none());
    }

    #[test]
    fn a_bad_rollout_spec_names_its_field() {
        let agent = AgentId::new("processor").unwrap();
        let body: CreateDeployment = parse_json(
            br#"{"module": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                 "rollout": {"strategy": "canary", "stages": [{"canary": {"weight": "500%"}}]}}"#,
        )
        .unwrap();
        let error = deploy_request(agent, body).unwrap_err();
        assert!(
            error.message().starts_with("rollout:"),
            "{}",
            error.message()
        );
        assert!(error.message().contains("weight"), "{}", error.message());
    }

    #[test]
    fn a_module_that_is_not_a_digest_is_refused() {
        let agent = AgentId::new("processor").unwrap();
        let body: CreateDeployment = parse_json(br#"{"module": "processor.wasm"}"#).unwrap();
        let error = deploy_request(agent, body).unwrap_err();
        assert!(
            error.message().starts_with("module:"),
            "{}",
            error.message()
        );
    }
}
