//! `GET /openapi.json`: an OpenAPI 3.1 description of every route, body and error.
//!
//! The operations are listed once, in `OPERATIONS`; a test checks them against the
//! routes the server really has, both ways.

use serde_json::{Map, Value, json};

/// One documented operation.
pub(crate) struct Operation {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// The request body: a component schema name, `"bytes"` for raw bytes, or none.
    body: Option<&'static str>,
    /// The success status and its body: a component schema name, `"bytes"`, `"text"`,
    /// `"events"` or `"none"`.
    ok: (u16, &'static str),
    /// Error statuses the operation answers with, besides 401 (every `/v1` route).
    errors: &'static [u16],
}

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    ok: (u16, &'static str),
    errors: &'static [u16],
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        body,
        ok,
        errors,
    }
}

/// Every operation the server offers.
pub(crate) const OPERATIONS: &[Operation] = &[
    op(
        "put",
        "/v1/artifacts",
        "putArtifact",
        "Store a module (idempotent; 201 when new, 200 when already stored)",
        Some("bytes"),
        (201, "Artifact"),
        &[400, 413],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments",
        "createDeployment",
        "Create a deployment: validate it, then roll it out with the request's strategy or the one the risk of its changes calls for",
        Some("CreateDeployment"),
        (201, "Deployment"),
        &[400, 404, 409, 413],
    ),
    op(
        "get",
        "/v1/agents/{agent}/deployments",
        "listDeployments",
        "The agent's deployments, newest first",
        None,
        (200, "DeploymentList"),
        &[400, 404],
    ),
    op(
        "get",
        "/v1/agents/{agent}/deployments/{id}",
        "getDeployment",
        "One deployment of the agent",
        None,
        (200, "Deployment"),
        &[404],
    ),
    op(
        "delete",
        "/v1/agents/{agent}/deployments/{id}",
        "deleteDeployment",
        "Soft-delete a deployment (not the production)",
        None,
        (200, "Deployment"),
        &[404, 409],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments/{id}/promote",
        "promoteDeployment",
        "Promote the rollout of `id` one step, or fully; cut a staged version over",
        Some("Promote"),
        (200, "Deployment"),
        &[400, 404, 409],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments/{id}/rollback",
        "rollbackDeployment",
        "Take `id` out of service and restore the previous known-good version, or `to`",
        Some("Rollback"),
        (200, "RollbackOutcome"),
        &[400, 404, 409],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments/{id}/pause",
        "pauseRollout",
        "Pause the rollout of `id`",
        Some("Empty"),
        (200, "Deployment"),
        &[400, 404, 409],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments/{id}/resume",
        "resumeRollout",
        "Resume the rollout of `id`",
        Some("Empty"),
        (200, "Deployment"),
        &[400, 404, 409],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments/{id}/abort",
        "abortRollout",
        "Abort the rollout of `id`: back to the baseline",
        Some("Empty"),
        (200, "Deployment"),
        &[400, 404, 409],
    ),
    op(
        "post",
        "/v1/agents/{agent}/deployments/{id}/messages",
        "previewMessage",
        "Send one message to that deployment, whatever the split",
        Some("bytes"),
        (200, "bytes"),
        &[400, 404, 409, 413, 502],
    ),
    op(
        "post",
        "/v1/agents/{agent}/messages",
        "sendMessage",
        "Send a message to the agent; the reply is the body, `Caxton-Deployment` names who answered",
        Some("bytes"),
        (200, "bytes"),
        &[400, 404, 413, 502, 503],
    ),
    op(
        "delete",
        "/v1/agents/{agent}/sessions/{session}",
        "endSession",
        "End a session: its pin and its instance are released",
        None,
        (204, "none"),
        &[404],
    ),
    op(
        "get",
        "/v1/agents/{agent}",
        "agentStatus",
        "The agent's status: production, the running rollout, every deployment's role",
        None,
        (200, "AgentStatus"),
        &[404],
    ),
    op(
        "get",
        "/v1/agents/{agent}/history",
        "agentHistory",
        "The agent's audit history, oldest first",
        None,
        (200, "History"),
        &[404],
    ),
    op(
        "get",
        "/v1/agents/{agent}/events",
        "agentEvents",
        "Rollout events as server-sent events: the kept ones first (unless `replay=false`), then live ones",
        None,
        (200, "events"),
        &[400, 404],
    ),
    op(
        "get",
        "/v1/deployments/{id}",
        "findDeployment",
        "Find a deployment by its id alone",
        None,
        (200, "Deployment"),
        &[404],
    ),
    op(
        "get",
        "/healthz",
        "healthz",
        "Liveness",
        None,
        (200, "Health"),
        &[503],
    ),
    op(
        "get",
        "/readyz",
        "readyz",
        "Readiness: the registry answers and every production is loaded, warm and live",
        None,
        (200, "Readiness"),
        &[503],
    ),
    op(
        "get",
        "/metrics",
        "metrics",
        "Prometheus text exposition",
        None,
        (200, "text"),
        &[404],
    ),
    op(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        None,
        (200, "object"),
        &[],
    ),
];

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No content",
        400 => "Invalid request: the message names the field",
        401 => "Missing or wrong bearer token",
        404 => {
            "Unknown agent, deployment, session or artifact (another agent's deployment is unknown too)"
        }
        409 => {
            "Conflicts with the current state (a rollout in progress, the production, nothing to roll back to)"
        }
        413 => "The body is larger than the route accepts",
        502 => "The agent failed (trap, limit)",
        503 => "Not available: no production, not ready, or shutting down",
        _ => "Error",
    }
}

fn content(kind: &str) -> Value {
    match kind {
        "bytes" => {
            json!({"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}})
        }
        "text" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "events" => {
            json!({"text/event-stream": {"schema": {"type": "string", "description": "`event: <kind>` and `data: <RolloutEvent JSON>` per event"}}})
        }
        "object" => json!({"application/json": {"schema": {"type": "object"}}}),
        schema => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
        }
    }
}

fn parameters(operation: &Operation) -> Vec<Value> {
    let mut parameters: Vec<Value> = operation
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    match operation.id {
        "listDeployments" => parameters
            .push(json!({"name": "include_deleted", "in": "query", "schema": {"type": "boolean"}})),
        "agentEvents" => {
            parameters
                .push(json!({"name": "deployment", "in": "query", "schema": {"type": "string"}}));
            parameters
                .push(json!({"name": "replay", "in": "query", "schema": {"type": "boolean"}}));
        }
        "sendMessage" | "previewMessage" => parameters
            .push(json!({"name": "Caxton-Session", "in": "header", "schema": {"type": "string"}})),
        _ => {}
    }
    parameters
}

fn operation_object(operation: &Operation) -> Value {
    let mut responses = Map::new();
    let (ok, kind) = operation.ok;
    let mut success = json!({"description": reason(ok)});
    if kind != "none" {
        success["content"] = content(kind);
    }
    if operation.id == "sendMessage" || operation.id == "previewMessage" {
        success["headers"] = json!({"Caxton-Deployment": {"description": "The deployment that answered", "schema": {"type": "string"}}});
    }
    responses.insert(ok.to_string(), success);
    let guarded = operation.path.starts_with("/v1/");
    let errors = operation
        .errors
        .iter()
        .copied()
        .chain(guarded.then_some(401));
    for status in errors {
        responses.insert(
            status.to_string(),
            json!({"description": reason(status), "content": content("Error")}),
        );
    }
    let mut object = json!({
        "operationId": operation.id,
        "summary": operation.summary,
        "parameters": parameters(operation),
        "responses": responses,
    });
    if let Some(body) = operation.body {
        object["requestBody"] = json!({"required": body == "bytes", "content": content(body)});
    }
    if !guarded {
        object["security"] = json!([]);
    }
    object
}

fn schemas() -> Value {
    let deployment_state = json!({"type": "string", "enum": ["pending", "validating", "deploying", "running", "draining", "retired", "failed", "rolled_back"]});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string", "description": "snake_case, stable"}, "message": {"type": "string"}}}}},
        "Artifact": {"type": "object", "required": ["digest", "size"], "properties": {"digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}, "size": {"type": "integer", "minimum": 1}}},
        "CreateDeployment": {"type": "object", "additionalProperties": false, "required": ["module"], "properties": {
            "module": {"type": "string", "description": "A digest from PUT /v1/artifacts"},
            "label": {"type": "string"},
            "model": {"type": "object", "additionalProperties": false, "required": ["provider", "name", "revision"], "properties": {"provider": {"type": "string"}, "name": {"type": "string"}, "revision": {"type": "string"}}},
            "prompt": {"type": "string"},
            "tools": {"description": "The tools layer: a JSON document of definitions"},
            "config": {"type": "object", "additionalProperties": {"type": "string"}},
            "secrets": {"type": "array", "items": {"type": "string"}},
            "sessions": {"type": "string", "enum": ["stateless", "sessions"]},
            "metadata": {"type": "object", "additionalProperties": false, "properties": {"commit": {"type": "string"}, "author": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "rollout": {"type": "object", "description": "The rollout spec's `deployment` object, e.g. {\"strategy\": \"canary\", \"stages\": [...], \"rollback_on\": [...]}"}
        }},
        "Deployment": {"type": "object", "required": ["id", "agent", "label", "version", "state", "is_production", "strategy", "created_at", "metadata"], "properties": {
            "id": {"type": "string"}, "agent": {"type": "string"}, "label": {"type": "string"},
            "version": {"type": "object", "required": ["code", "model", "prompt", "tools", "fingerprint"], "properties": {"code": {"type": "object"}, "model": {"type": "object"}, "prompt": {"type": "object"}, "tools": {"type": "object"}, "fingerprint": {"type": "string"}}},
            "state": deployment_state,
            "is_production": {"type": "boolean"}, "strategy": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "promoted_at": {"type": ["string", "null"], "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "metadata": {"type": "object"}
        }},
        "DeploymentList": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}},
        "Promote": {"type": "object", "additionalProperties": false, "properties": {"full": {"type": "boolean"}}},
        "Rollback": {"type": "object", "additionalProperties": false, "properties": {"to": {"type": "string"}}},
        "Empty": {"type": "object", "additionalProperties": false},
        "RollbackOutcome": {"type": "object", "required": ["rolled_back", "restored", "reloaded_from_artifact", "took_ms"], "properties": {
            "rolled_back": {"$ref": "#/components/schemas/Deployment"},
            "restored": {"$ref": "#/components/schemas/Deployment"},
            "reloaded_from_artifact": {"type": "boolean"},
            "took_ms": {"type": "number"}
        }},
        "AgentStatus": {"type": "object", "required": ["agent", "sessions", "production", "rollout", "deployments"], "properties": {
            "agent": {"type": "string"},
            "sessions": {"type": "string", "enum": ["stateless", "sessions"]},
            "production": {"type": ["string", "null"]},
            "driven_by": {"type": "string", "description": "The host that drives the agent's rollout, when another host on the registry does: ask that host for the rollout's progress. Absent otherwise."},
            "rollout": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["deployment", "strategy", "phase", "step", "steps", "weight_set", "weight_actual", "judge"], "properties": {
                "deployment": {"type": "string"}, "strategy": {"type": "string"},
                "phase": {"type": "string", "enum": ["progressing", "paused", "finishing"]},
                "stage": {"type": ["string", "null"]},
                "step": {"type": "integer"}, "steps": {"type": "integer"},
                "weight_set": {"type": "number"}, "weight_actual": {"type": ["number", "null"]},
                "judge": {"type": "object", "properties": {"passed": {"type": "integer"}, "failed": {"type": "integer"}, "inconclusive": {"type": "integer"}}}
            }}]},
            "deployments": {"type": "array", "items": {"type": "object", "required": ["id", "label", "role", "state", "weight", "in_flight", "pinned_sessions"], "properties": {
                "id": {"type": "string"}, "label": {"type": "string"},
                "role": {"type": "string", "enum": ["production", "candidate", "shadow", "preview", "draining", "idle"]},
                "state": deployment_state,
                "weight": {"type": "number"}, "in_flight": {"type": "integer"}, "pinned_sessions": {"type": "integer"}
            }}}
        }},
        "History": {"type": "array", "items": {"type": "object", "required": ["seq", "at", "agent", "deployment", "action", "reason"], "properties": {
            "seq": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
            "agent": {"type": "string"}, "deployment": {"type": "string"},
            "action": {"type": "string"}, "reason": {"type": "string"}
        }}},
        "Health": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Readiness": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}, "live": {"type": "boolean"}, "agents": {"type": "array", "items": {"type": "object"}}}}
    })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let item = paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| json!({}));
        item[operation.method] = operation_object(operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Caxton",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Host AI agents compiled to WebAssembly and ship new versions of them safely. Every /v1 route needs `Authorization: Bearer <token>` when the server has a token."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}]
    })
}
