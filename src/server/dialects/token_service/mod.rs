//! Token-service dialect (Wibmo style, protocols.md §3; walkthrough and
//! decisions in docs/token_service.md).
//!
//! Request and response bodies are JWE compact strings (`dir` + `A256GCM`)
//! under the calling client's payload key, sent as `text/plain`; the client
//! id is the `X-API-KEY`. A session is named by the caller's `referenceId`
//! (stored only as a keyed hash). Opening, renewing and ending are engine
//! calls; this module only translates.

mod error;
mod jwe;
mod wire;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use self::error::Failure;
use self::wire::{
    bad, caller, plaintext, reference, sealed, single_header, InvalidateReply, NewTokenReply,
    RenewReply, RenewedToken, Status,
};
use crate::core::engine::OpenSession;
use crate::core::ids::Subject;
use crate::core::model::{Actor, Client, EndReason, GrantType};
use crate::core::secrets::ct_eq;
use crate::server::AppState;

const DIALECT: &str = "token_service";
const API_TOKEN: HeaderName = HeaderName::from_static("x-api-token");
/// A user field naming the user; without it the session's subject is the
/// client itself (the reference is never stored in the clear).
const USER_ID: &str = "userId";
/// Same bound as the native session API's claims.
const MAX_CLAIMS_LEN: usize = 16 * 1024;

/// v1 answers with numeric codes, v2 with `TOK…` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    fn ok_code(self, v1: u16) -> Value {
        match self {
            Self::V1 => json!(v1),
            Self::V2 => json!("TOK200"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    New,
    Renew,
    Invalidate,
}

pub fn router() -> Router<Arc<AppState>> {
    use Op::*;
    use Version::*;
    let post = MethodFilter::POST;
    // The vendor documents GET for new/token too (a GET with a body).
    let get_post = MethodFilter::GET.or(MethodFilter::POST);
    Router::new()
        .route(
            "/token-service/client/server/new/token",
            endpoint(get_post, New, V1),
        )
        .route(
            "/token-service/client/server/new/v2/token",
            endpoint(get_post, New, V2),
        )
        .route(
            "/token-service/client/app/renew/token",
            endpoint(post, Renew, V1),
        )
        .route(
            "/token-service/client/app/renew/v2/token",
            endpoint(post, Renew, V2),
        )
        .route(
            "/token-service/client/server/invalidate/token",
            endpoint(post, Invalidate, V1),
        )
        .route(
            "/token-service/client/server/invalidate/v2/token",
            endpoint(post, Invalidate, V2),
        )
}

fn endpoint(methods: MethodFilter, op: Op, version: Version) -> MethodRouter<Arc<AppState>> {
    on(
        methods,
        move |State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body| async move {
            let span = tracing::info_span!(
                "token_service",
                ?op,
                ?version,
                client_id = tracing::field::Empty
            );
            match handle(&state, &headers, body, op, version)
                .instrument(span.clone())
                .await
            {
                Ok(resp) => resp,
                Err(failure) => {
                    span.in_scope(
                        || tracing::info!(reason = %failure, "token-service request refused"),
                    );
                    failure.into_response(version)
                }
            }
        },
    )
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    op: Op,
    version: Version,
) -> Result<Response, Failure> {
    let caller = caller(state, headers).await?;
    tracing::Span::current().record("client_id", caller.client.id.as_str());
    let req = plaintext(state, headers, body, &caller.key).await?;
    match op {
        Op::New => sealed(
            &caller,
            &new_token(state, &caller.client, req, version).await?,
        ),
        Op::Renew => sealed(
            &caller,
            &renew(state, headers, &caller.client, req, version).await?,
        ),
        Op::Invalidate => sealed(
            &caller,
            &invalidate(state, &caller.client, req, version).await?,
        ),
    }
}

/// `new/token`: open a session named by `referenceId`, replacing a live one
/// of this client with the same reference (a retry or a fresh login under
/// the same id: the newest wins, and a reference never names two sessions).
async fn new_token(
    state: &AppState,
    client: &Client,
    mut req: Map<String, Value>,
    version: Version,
) -> Result<NewTokenReply, Failure> {
    if !client.allows(GrantType::Session) {
        return Err(Failure::NotAllowed);
    }
    let reference = reference(&req, "referenceId")?;
    let echoed = req.remove("referenceId").unwrap_or(Value::Null);
    let subject = match req.get(USER_ID) {
        None | Some(Value::Null) => Subject::parse(client.id.as_str()),
        Some(Value::String(s)) => Subject::parse(s),
        Some(Value::Number(n)) => Subject::parse(&n.to_string()),
        Some(_) => return Err(bad("userId must be a string")),
    }
    .map_err(|e| Failure::BadRequest(e.to_string()))?;
    let claims_len = serde_json::to_vec(&req).map_or(usize::MAX, |b| b.len());
    if claims_len > MAX_CLAIMS_LEN {
        return Err(bad("the user fields must be at most 16 KiB of JSON"));
    }
    let mut open = OpenSession::new(subject, DIALECT);
    open.with_refresh = false;
    // Renewable for the engine's session lifetime; each token is short.
    open.lifetime = Some(state.engine.settings().session_lifetime);
    open.reference = Some(reference);
    open.claims = req;
    let issued = state.engine.open_session_replacing(client, open).await?;
    tracing::info!(session_id = %issued.session_id, "token-service session opened");
    Ok(NewTokenReply {
        res_code: version.ok_code(100),
        res_desc: "SUCCESS",
        reference_id: echoed,
        token: issued.access_token,
        expire_at: issued.expires_at * 1000,
    })
}

/// `renew/token`: a fresh access token for the session of a live token of
/// this client. The token comes in the encrypted body (`token`) and/or the
/// `X-API-TOKEN` header; if both are sent they must be the same.
async fn renew(
    state: &AppState,
    headers: &HeaderMap,
    client: &Client,
    req: Map<String, Value>,
    version: Version,
) -> Result<RenewReply, Failure> {
    let in_body = match req.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(_) => return Err(bad("token must be a non-empty string")),
    };
    let in_header =
        single_header(headers, &API_TOKEN).map_err(|()| bad("X-API-TOKEN is repeated"))?;
    let token = match (in_body, in_header) {
        (Some(b), Some(h)) if !ct_eq(b.as_bytes(), h.as_bytes()) => {
            return Err(bad("X-API-TOKEN and the token in the body differ"))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Err(bad("missing token")),
    };
    let claims = state
        .engine
        .check_access_token(token)
        .await?
        .map_err(|_| Failure::InvalidToken)?;
    if claims.client_id != client.id.as_str() {
        return Err(Failure::InvalidToken);
    }
    let issued = state
        .engine
        .reissue_access(client, &claims.sid, None)
        .await?;
    Ok(RenewReply {
        res_code: version.ok_code(100),
        res_desc: "SUCCESS",
        data: RenewedToken {
            token: issued.access_token,
            expiry_date: issued.expires_at * 1000,
        },
    })
}

/// `invalidate/token` (the seed): end the live session this client opened
/// with `tokenReferenceId`, and with it every token of that session. An
/// unknown, already ended or other client's reference ends nothing.
async fn invalidate(
    state: &AppState,
    client: &Client,
    req: Map<String, Value>,
    version: Version,
) -> Result<InvalidateReply, Failure> {
    let reference = reference(&req, "tokenReferenceId")?;
    let session = state
        .engine
        .session_by_reference(client, &reference)
        .await?
        .ok_or(Failure::InvalidToken)?;
    let by = Actor::Client(client.id.clone());
    let ended = state
        .engine
        .end_session(&session.id, EndReason::Logout, by, Some(&client.id))
        .await?;
    if !ended {
        // A concurrent invalidate won: this call ended nothing.
        return Err(Failure::InvalidToken);
    }
    tracing::info!(session_id = %session.id, "token-service session invalidated");
    Ok(InvalidateReply {
        res_code: version.ok_code(200),
        res_desc: "SUCCESS",
        data: Status {
            res_code: version.ok_code(100),
            res_desc: "Success",
        },
    })
}
