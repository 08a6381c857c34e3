//! Small HTTP helpers shared by the gateway and admin routes: bounded body reads, JSON
//! responses and the error shape `{"error": {"code": …, "message": …}}`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

pub use crate::body::{Body, full, stream};

/// An error response: status, a stable code and a message that says what and where.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found() -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let mut r = json(
            self.status,
            &Outer {
                error: Inner {
                    code: self.code,
                    message: &self.message,
                },
            },
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
        }
        r
    }
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            with_type(status, "application/json", bytes)
        }
        Err(e) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot serialize the response: {e}\n").into_bytes(),
        ),
    }
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    with_type(status, content_type, body.into_bytes())
}

fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Read a whole body, at most `max` bytes, within `timeout` (a slow or stalled sender is
/// cut off rather than holding a connection slot).
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let body = Limited::new(req.into_body(), max);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Ok(Err(e)) => Err(HttpError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn too_large(max: usize) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is over the limit of {max} bytes"),
    )
}

/// The key of an `Authorization: Bearer <key>` header. A malformed header is an error, not
/// an absent credential: a client that tried to authenticate must not become anonymous.
pub fn bearer(req: &Request<Incoming>) -> Result<Option<&str>, HttpError> {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| HttpError::unauthorized("the Authorization header is not ASCII"))?;
    match v.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => {
            Ok(Some(key.trim()))
        }
        _ => Err(HttpError::unauthorized(
            "the Authorization header must be `Bearer <key>`",
        )),
    }
}

/// The value of query parameter `name`.
pub fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `?wait=N`: seconds to wait, capped at `max` (the approval timeout plus a margin for the
/// expiry to be recorded). Absent means 0.
pub fn wait_param(req: &Request<Incoming>, max: Duration) -> Result<Duration, HttpError> {
    match query_param(req, "wait") {
        None => Ok(Duration::ZERO),
        Some(v) => v
            .parse::<u64>()
            .map(|n| Duration::from_secs(n).min(max + Duration::from_secs(5)))
            .map_err(|_| {
                HttpError::bad_request(format!("wait={v:?} is not a whole number of seconds"))
            }),
    }
}
