//! Every refusal the API can give, and its one JSON shape:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use hyper::header::{HeaderValue, ALLOW, RETRY_AFTER};
use hyper::StatusCode;
use serde::Serialize;

use crate::http_server::{json_response, HttpResponse};

/// A refusal of the ingest API; answered as
/// `{"error": {"code", "message", "field"}}` with its status and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// 400, 401, 404, 405, 413, 415, 429 or 503.
    pub status: StatusCode,
    /// Stable reason clients branch on, e.g. `rate_limited` or `invalid_length`.
    pub code: &'static str,
    /// What went wrong, for people; names the field and the rule when there is one.
    pub message: String,
    /// The field at fault, e.g. `text`, or `[3].bot_id` in a batch.
    pub field: Option<String>,
    /// Position in a batch of the first bad message.
    pub index: Option<usize>,
    /// Seconds for `Retry-After`, on 429 and 503.
    pub retry_after_secs: Option<u32>,
    /// Methods for `Allow`, on 405.
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            index: None,
            retry_after_secs: None,
            allow: None,
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn invalid_field(
        field: &str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let mut err = Self::bad_request(code, format!("{field}: {}", message.into()));
        err.field = Some(field.to_owned());
        err
    }

    /// Re-labels a field error with the batch position it came from.
    pub fn at_index(mut self, index: usize) -> Self {
        self.field = Some(match &self.field {
            Some(f) => format!("[{index}].{f}"),
            None => format!("[{index}]"),
        });
        self.message = format!("message {index}: {}", self.message);
        self.index = Some(index);
        self
    }

    pub(crate) fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub(crate) fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub(crate) fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        )
    }

    pub(crate) fn too_many_requests(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u32,
    ) -> Self {
        let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        err.retry_after_secs = Some(retry_after);
        err
    }

    pub(crate) fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: u32,
    ) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        err.retry_after_secs = Some(retry_after);
        err
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route only accepts {allow}"),
        );
        err.allow = Some(allow);
        err
    }

    pub(crate) fn into_response(self) -> HttpResponse {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                index: self.index,
            },
        };
        let mut response = json_response(self.status, &body);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: HttpResponse) -> serde_json::Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn error_body_has_the_fixed_shape() {
        let response =
            ApiError::invalid_field("bot_id", "invalid_length", "too long").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "invalid_length");
        assert_eq!(body["error"]["field"], "bot_id");
        assert_eq!(body["error"]["message"], "bot_id: too long");
    }

    #[tokio::test]
    async fn batch_errors_name_the_index() {
        let err = ApiError::invalid_field("text", "missing_field", "is required").at_index(3);
        let body = body_json(err.into_response()).await;
        assert_eq!(body["error"]["field"], "[3].text");
        assert_eq!(body["error"]["index"], 3);
        assert!(body["error"]["message"]
            .as_str()
            .expect("str")
            .starts_with("message 3:"));
    }

    #[test]
    fn overload_carries_retry_after() {
        let response = ApiError::too_many_requests("overloaded", "busy", 2).into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "2");
    }
}
