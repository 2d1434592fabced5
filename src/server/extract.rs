//! Reading requests defensively: bounded bodies, strict content types,
//! form and JSON parsing that fail with the native error shape, and client
//! authentication (HTTP Basic or form parameters, RFC 6749 §2.3.1).

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Read the whole body, refusing more than `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
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

/// Is the media type of the request `want` (lower case), whatever its
/// parameters and letter case?
pub fn is_media_type(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(want))
}

pub fn require_media_type(headers: &HeaderMap, want: &'static str) -> Result<(), ApiError> {
    if is_media_type(headers, want) {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            format!("Content-Type must be {want}"),
        ))
    }
}

/// A form component, percent-decoded (`+` is a space). Tokens, ids and
/// grant types are mostly plain: those are borrowed, not copied.
fn decode_component(s: &str) -> Result<Cow<'_, str>, ApiError> {
    if memchr::memchr2(b'+', b'%', s.as_bytes()).is_none() {
        return Ok(Cow::Borrowed(s));
    }
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|c| Cow::Owned(c.into_owned()))
        .map_err(|_| ApiError::invalid_request("form parameters must be valid UTF-8"))
}

/// Most parameters one form may carry; the requests of every API here
/// have fewer than 20.
const MAX_FORM_PARAMETERS: usize = 100;

/// Where a parameter's name or value is: in the body, or decoded.
#[derive(Debug)]
enum Part {
    Raw(std::ops::Range<usize>),
    Decoded(String),
}

/// An `application/x-www-form-urlencoded` body. Repeated parameters are an
/// error (RFC 6749 §3.1), as is anything that is not UTF-8. Plain names and
/// values point into the body; only percent-encoded ones are copied.
#[derive(Debug, Default)]
pub struct Form {
    text: Bytes,
    pairs: Vec<(Part, Part)>,
}

impl Form {
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        Self::from_bytes(Bytes::copy_from_slice(bytes))
    }

    fn from_bytes(body: Bytes) -> Result<Self, ApiError> {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::invalid_request("form body must be valid UTF-8"))?;
        // A component of `text` at `range`: plain ones stay where they are.
        let part = |range: std::ops::Range<usize>| -> Result<Part, ApiError> {
            Ok(match decode_component(&text[range.clone()])? {
                Cow::Borrowed(_) => Part::Raw(range),
                Cow::Owned(o) => Part::Decoded(o),
            })
        };
        let mut form = Form {
            text: Bytes::new(),
            pairs: Vec::new(),
        };
        let mut start = 0;
        while start <= text.len() {
            let end =
                memchr::memchr(b'&', &text.as_bytes()[start..]).map_or(text.len(), |i| start + i);
            let pair = start..end;
            start = end + 1;
            if pair.is_empty() {
                continue;
            }
            let (k, v) = match memchr::memchr(b'=', &text.as_bytes()[pair.clone()]) {
                Some(i) => (pair.start..pair.start + i, pair.start + i + 1..pair.end),
                None => (pair.clone(), pair.end..pair.end),
            };
            let (k, v) = (part(k)?, part(v)?);
            if form.pairs.len() == MAX_FORM_PARAMETERS {
                return Err(ApiError::invalid_request(format!(
                    "more than {MAX_FORM_PARAMETERS} parameters"
                )));
            }
            let name = form.resolve_in(text, &k);
            if form
                .pairs
                .iter()
                .any(|(seen, _)| form.resolve_in(text, seen) == name)
            {
                return Err(ApiError::invalid_request(format!(
                    "parameter {name:?} is repeated"
                )));
            }
            form.pairs.push((k, v));
        }
        form.text = body;
        Ok(form)
    }

    fn resolve_in<'a>(&'a self, text: &'a str, p: &'a Part) -> &'a str {
        match p {
            Part::Raw(r) => &text[r.clone()],
            Part::Decoded(s) => s,
        }
    }

    fn resolve<'a>(&'a self, p: &'a Part) -> &'a str {
        match p {
            // Checked to be UTF-8 in `from_bytes`, and split at ASCII bytes.
            Part::Raw(r) => std::str::from_utf8(&self.text[r.clone()]).unwrap_or_default(),
            Part::Decoded(s) => s,
        }
    }

    /// Read and parse a form body, checking the content type first.
    pub async fn from_request(
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<Self, ApiError> {
        if !is_media_type(headers, "application/x-www-form-urlencoded") {
            return Err(ApiError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        Self::from_bytes(read_body(body, limit).await?)
    }

    /// A parameter, treating an empty value as absent.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(name, _)| self.resolve(name) == k)
            .map(|(_, v)| self.resolve(v))
            .filter(|v| !v.is_empty())
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
        client_id: id.into_owned(),
        client_secret: secret.into_owned(),
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
        // Names are compared decoded.
        assert!(Form::parse(b"a=1&%61=2").is_err());
        assert_eq!(Form::parse(b"x%3Dy=1").unwrap().get("x=y"), Some("1"));
        let many: Vec<String> = (0..=MAX_FORM_PARAMETERS)
            .map(|i| format!("p{i}=v"))
            .collect();
        assert!(Form::parse(many.join("&").as_bytes()).is_err());
        assert!(Form::parse(many[1..].join("&").as_bytes()).is_ok());
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
