//! What handlers take from a request besides the state: the path the
//! dashboard is mounted under, and query parameters (a bad one is a 400,
//! never a panic).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::refusal::Refusal;

/// The path the dashboard is mounted under (`""` at the root), for links.
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let original = parts.extensions.get::<axum::extract::OriginalUri>().map(|o| o.0.path().to_owned());
        let inner = parts.uri.path();
        let base = original.as_deref().and_then(|o| o.strip_suffix(inner)).unwrap_or("");
        Ok(Base(base.trim_end_matches('/').to_owned()))
    }
}

/// Query parameters of type `T`.
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri).map(|q| Params(q.0)).map_err(|e| {
            let message = format!("bad query parameters: {}", e.body_text());
            Refusal::for_path(parts.uri.path(), StatusCode::BAD_REQUEST, message)
        })
    }
}
