//! What every request goes through: authentication (when configured), the
//! CSRF token (a cookie, and the same value in every form: a POST must bring
//! both), and headers that keep pages from being framed or running scripts
//! of others.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::Auth;
use crate::refusal::Refusal;
use crate::Dashboard;

/// The CSRF token of a request: its cookie's, or a new one.
#[derive(Debug, Clone)]
pub(crate) struct Csrf(pub(crate) String);

const COOKIE: &str = "jobs_csrf";

/// The Content-Security-Policy: scripts and styles from the dashboard only,
/// no inline script, no framing.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                              connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // The OS's generator; should it fail, a token from the time and a counter
    // is still unique, and the cookie's SameSite=Strict keeps other sites out.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality, for secrets.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let basic =
        given.strip_prefix("Basic ").and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok());
    let basic = basic.as_deref().and_then(|b| std::str::from_utf8(b).ok()).and_then(|b| b.split_once(':'));
    match auth {
        Auth::None => true,
        // A token as a bearer token, or as the password of basic auth (what a browser can send).
        Auth::Token(token) => {
            let bearer = given.strip_prefix("Bearer ").map(str::trim);
            bearer
                .or(basic.map(|(_, password)| password))
                .is_some_and(|t| same(t.as_bytes(), token.expose().as_bytes()))
        }
        Auth::Basic(user, password) => basic.is_some_and(|(u, p)| {
            same(u.as_bytes(), user.as_bytes()) & same(p.as_bytes(), password.expose().as_bytes())
        }),
    }
}

/// Authenticates, hands the handlers the CSRF token, and sets the headers
/// (on refusals too); a refusal under `/api/` is JSON.
pub(crate) async fn guard(State(dashboard): State<Arc<Dashboard>>, mut request: Request, next: Next) -> Response {
    let existing = cookie(request.headers(), COOKIE);
    let token = existing.clone().unwrap_or_else(new_token);
    let mut response = match refused(&dashboard, &request) {
        Some((status, message)) => {
            let mut response = Refusal::for_path(request.uri().path(), status, message).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"jobs\""));
            }
            response
        }
        None => {
            request.extensions_mut().insert(Csrf(token.clone()));
            next.run(request).await
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if existing.is_none() {
        let value = format!("{COOKIE}={token}; Path=/; SameSite=Strict; HttpOnly");
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Why a request is refused before any handler sees it, if it is.
fn refused(dashboard: &Dashboard, request: &Request) -> Option<(StatusCode, &'static str)> {
    if dashboard.auth == Auth::None && !loopback_host(request.headers(), &dashboard.web.allowed_hosts) {
        let message = "this dashboard has no authentication and answers only to localhost and loopback addresses \
                       (or the names in web.allowed_hosts)";
        return Some((StatusCode::MISDIRECTED_REQUEST, message));
    }
    if !authorized(&dashboard.auth, request.headers()) {
        return Some((StatusCode::UNAUTHORIZED, "authentication required"));
    }
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return Some((StatusCode::FORBIDDEN, "cross-site request refused"));
    }
    None
}

/// Whether the request's `Host` is `localhost`, a loopback address or one of
/// `allowed`. A dashboard without authentication answers nothing else: a page
/// that points a name of its own at 127.0.0.1 (DNS rebinding) would otherwise
/// read it as same-origin.
fn loopback_host(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST) else { return true };
    let Ok(host) = host.to_str() else { return false };
    // `name`, `name:port`, `[::1]`, `[::1]:port`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// A POST from a page of another origin is refused (browsers send `Origin`).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

/// Whether a form's token is the request's cookie token.
pub(crate) fn csrf_ok(headers: &HeaderMap, form_token: &str) -> bool {
    cookie(headers, COOKIE).is_some_and(|c| same(c.as_bytes(), form_token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn tokens_and_passwords_are_checked() {
        let token = Auth::Token("s3cret".into());
        assert!(authorized(&token, &headers(&[("authorization", "Bearer s3cret")])));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret");
        assert!(authorized(&token, &headers(&[("authorization", &format!("Basic {basic}"))])));
        assert!(!authorized(&token, &headers(&[("authorization", "Bearer nope")])));
        assert!(!authorized(&token, &headers(&[])));
        let user = Auth::Basic("ops".into(), "pw".into());
        let good = base64::engine::general_purpose::STANDARD.encode("ops:pw");
        let bad = base64::engine::general_purpose::STANDARD.encode("ops:px");
        assert!(authorized(&user, &headers(&[("authorization", &format!("Basic {good}"))])));
        assert!(!authorized(&user, &headers(&[("authorization", &format!("Basic {bad}"))])));
        assert!(authorized(&Auth::None, &headers(&[])));
    }

    #[test]
    fn the_form_token_must_match_the_cookie() {
        let t = new_token();
        assert_eq!(t.len(), 32);
        let h = headers(&[("cookie", &format!("other=1; {COOKIE}={t}"))]);
        assert!(csrf_ok(&h, &t));
        assert!(!csrf_ok(&h, &new_token()));
        assert!(!csrf_ok(&headers(&[]), &t));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9180"), ("origin", "http://127.0.0.1:9180")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:9180"), ("origin", "http://evil.example")])));
    }

    #[test]
    fn without_authentication_only_loopback_hosts_are_answered() {
        let host = |h: &str| headers(&[("host", h)]);
        for good in ["127.0.0.1:9180", "localhost:9180", "LOCALHOST", "[::1]:9180", "127.0.0.2", "[::1]"] {
            assert!(loopback_host(&host(good), &[]), "{good}");
        }
        for bad in ["evil.example", "evil.example:9180", "10.0.0.1:9180", "[2001:db8::1]:80"] {
            assert!(!loopback_host(&host(bad), &[]), "{bad}");
        }
        assert!(loopback_host(&host("jobs.internal:8080"), &["jobs.internal".into()]));
    }
}
