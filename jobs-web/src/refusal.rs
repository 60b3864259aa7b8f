//! Why a request is refused: a status and a sentence, as an HTML page for
//! the pages and as JSON (`{"error": ...}`) for `/api/...`.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

/// A refusal: its status, what to tell, and whether a script asked (JSON).
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    json: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into(), json: false }
    }

    /// The refusal of a request to `path` (as the router sees it): JSON under `/api/`.
    pub(crate) fn for_path(path: &str, status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { json: is_api(path), ..Refusal::new(status, message) }
    }

    /// The same refusal as JSON.
    pub(crate) fn json(mut self) -> Self {
        self.json = true;
        self
    }

    /// A broker error, as the refusal that says it.
    pub(crate) fn broker(err: &jobs_core::Error) -> Self {
        Refusal::new(StatusCode::BAD_GATEWAY, jobs_core::report(err))
    }
}

/// Whether `path` (as the router sees it, without a mount prefix) is the JSON API's.
pub(crate) fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.json {
            (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
        } else {
            error_page(self.status, &self.message).into_response()
        }
    }
}

/// A page that says what went wrong, with its status.
pub(crate) fn error_page(status: StatusCode, message: &str) -> (StatusCode, Html<String>) {
    #[derive(Template)]
    #[template(path = "error.html")]
    struct ErrorPage<'a> {
        status: String,
        message: &'a str,
    }
    let page = ErrorPage { status: status.to_string(), message };
    (status, Html(page.render().unwrap_or_else(|_| message.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_answered_in_json() {
        assert!(is_api("/api/dead/q") && is_api("/api"));
        assert!(!is_api("/apiary") && !is_api("/dead/api"));
        let refusal = Refusal::for_path("/api/x", StatusCode::BAD_REQUEST, "no");
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(kind.starts_with("application/json"), "{kind}");
    }
}
