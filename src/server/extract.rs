//! Reading requests defensively: bounded bodies, strict content types,
//! form and JSON parsing that fail with the native error shape, and client
//! authentication (HTTP Basic or form parameters, RFC 6749 §2.3.1).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Read the whole body, refusing more than `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::invalid_request(
                "request body could not be read (malformed transfer encoding?)",
            )
        }
    })
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The media type of the request, lower-cased, without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

pub fn require_media_type(headers: &HeaderMap, want: &'static str) -> Result<(), ApiError> {
    if media_type(headers).as_deref() == Some(want) {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            format!("Content-Type must be {want}"),
        ))
    }
}

fn decode_component(s: &str) -> Result<String, ApiError> {
    // Tokens, ids and grant types are mostly plain: one copy, no decoding.
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return Ok(s.to_owned());
    }
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::invalid_request("form parameters must be valid UTF-8"))
}

/// An `application/x-www-form-urlencoded` body. Repeated parameters are an
/// error (RFC 6749 §3.1), as is anything that is not UTF-8.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::invalid_request("form body must be valid UTF-8"))?;
        let mut map = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode_component(k)?, decode_component(v)?);
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid_request(format!(
                    "parameter {k:?} is repeated"
                )));
            }
        }
        Ok(Self(map))
    }

    /// Read and parse a form body, checking the content type first.
    pub async fn from_request(
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<Self, ApiError> {
        if media_type(headers).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(ApiError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        Self::parse(&read_body(body, limit).await?)
    }

    /// A parameter, treating an empty value as absent.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn require(&self, k: &'static str) -> Result<&str, ApiError> {
        self.get(k)
            .ok_or_else(|| ApiError::invalid_request(format!("missing parameter {k:?}")))
    }
}

/// Parse a JSON body into `T`, checking the content type first.
pub async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    require_media_type(headers, "application/json")?;
    let bytes = read_body(body, limit).await?;
    // Derived `Deserialize` also accepts a JSON array (fields by position);
    // every body of this API is an object, so say so instead.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_request("JSON body must be an object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        // serde's message says what and where, never echoing secrets back
        // beyond the offending token.
        ApiError::invalid_request(format!("invalid JSON body: {e}"))
    })
}

/// Credentials a client presented.
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

/// The credentials in an `Authorization: Basic` header, if that is the
/// scheme used. `Err` if the header is present but unusable.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<ClientCredentials>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::invalid_client())?;
    let Some((scheme, rest)) = value.trim().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .map_err(|_| ApiError::invalid_client())?;
    let text = String::from_utf8(decoded).map_err(|_| ApiError::invalid_client())?;
    let (id, secret) = text.split_once(':').ok_or_else(ApiError::invalid_client)?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before encoding.
    let id = decode_component(id).map_err(|_| ApiError::invalid_client())?;
    let secret = decode_component(secret).map_err(|_| ApiError::invalid_client())?;
    Ok(Some(ClientCredentials {
        client_id: id,
        client_secret: secret,
    }))
}

/// Client credentials from Basic auth or from the form, never both.
pub fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials, ApiError> {
    let basic = basic_credentials(headers)?;
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(ApiError::invalid_request(
            "use one client authentication method, not both Basic and client_secret",
        )),
        (Some(c), None) => {
            if form.get("client_id").is_some_and(|id| id != c.client_id) {
                return Err(ApiError::invalid_request(
                    "client_id does not match the Basic credentials",
                ));
            }
            Ok(c)
        }
        (None, Some(secret)) => Ok(ClientCredentials {
            client_id: form
                .get("client_id")
                .ok_or_else(ApiError::invalid_client)?
                .to_owned(),
            client_secret: secret.to_owned(),
        }),
        (None, None) => Err(ApiError::invalid_client()),
    }
}

/// One path segment, percent-decoded; a bad one is a 400 in the native shape.
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| PathParam(s))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

/// A typed query string; a bad one is a 400 in the native shape.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        // axum decodes queries lossily (bad UTF-8 becomes U+FFFD); refuse instead.
        Form::parse(parts.uri.query().unwrap_or("").as_bytes())?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryParams(q))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parsing() {
        let f = Form::parse(b"a=1&b=x+y%21&c=").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), Some("x y!"));
        assert_eq!(f.get("c"), None);
        assert!(Form::parse(b"a=1&a=2").is_err());
        assert!(Form::parse(b"a=%ff").is_err());
        assert!(Form::parse(&[0x61, 0x3d, 0xff]).is_err());
    }

    #[test]
    fn basic_auth() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("my%3Aid:s%2Bcret"));
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        let c = basic_credentials(&h).unwrap().unwrap();
        assert_eq!(c.client_id, "my:id");
        assert_eq!(c.client_secret, "s+cret");
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(basic_credentials(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(basic_credentials(&h).unwrap().is_none());
    }
}
