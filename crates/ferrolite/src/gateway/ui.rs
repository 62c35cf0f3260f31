//! The dashboard: `GET /ui`, a self-contained page (no network assets) that reads
//! `GET /router/state` every second and draws it, for the master key's holder.
//!
//! A browser cannot send `Authorization: Bearer`, so the page has a sign-in form
//! (`POST /ui/login`, the master key) that sets a session cookie, `ferrolite_ui`: the time it
//! was issued and an HMAC-SHA256 of it under the master key. Any replica with the same master
//! key accepts it (no session store), a new master key ends every session, and a session lasts
//! [`SESSION`]. The cookie is `HttpOnly` and `SameSite=Strict`, and only the operator's
//! read-only endpoints accept it ([`Gateway::operator`]): the API endpoints still need a key in
//! a header. The page's script and style are served beside it (`/ui/app.js`, `/ui/app.css`)
//! under a content security policy that allows nothing else.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrolite_types::Secret;

use super::auth::Caller;
use super::errors::GatewayError;
use super::state::{Gateway, GatewaySettings};

const INDEX: &str = include_str!("ui/index.html");
const LOGIN: &str = include_str!("ui/login.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The session cookie's name.
const COOKIE: &str = "ferrolite_ui";

/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);

/// How far in the future a session's issue time may be (clocks of replicas differ a little).
const SKEW: Duration = Duration::from_secs(60);

/// The largest sign-in form read.
const MAX_FORM_BYTES: usize = 4096;

/// What the page may load: its own script and style, and `/router/state`.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl Gateway {
    /// Whether the caller may read the operator's views (`/ui`, `/router/state`): the master
    /// key in a header, a session cookie valid at `now_secs` (Unix seconds), or anyone when the
    /// gateway has no key at all. An API key gets 403.
    pub(super) fn operator(
        settings: &GatewaySettings,
        headers: &HeaderMap,
        path: &'static str,
        now_secs: u64,
    ) -> Result<(), GatewayError> {
        match Gateway::caller(settings, headers) {
            Ok(Caller::Anyone | Caller::Master) => Ok(()),
            Ok(Caller::Key(key)) => Err(GatewayError::NeedsMaster {
                key: key.name.clone(),
                path,
            }),
            Err(GatewayError::NoKey) => match &settings.master_key {
                Some(master) if session_valid(master, headers, now_secs) => Ok(()),
                _ => Err(GatewayError::NoKey),
            },
            Err(refused) => Err(refused),
        }
    }
}

/// `GET /ui`: the dashboard for the operator, else the sign-in form.
pub(super) async fn page(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let settings = gateway.settings.load_full();
    match Gateway::operator(&settings, &headers, "/ui", gateway.now_secs()) {
        Ok(()) => html(StatusCode::OK, INDEX.to_owned()),
        Err(refused @ GatewayError::NeedsMaster { .. }) => refused.into_response(),
        Err(_) => login_page(StatusCode::OK, None),
    }
}

/// `POST /ui/login`: the sign-in form's `key`; the master key sets the session cookie and goes
/// to `/ui`, anything else shows the form again with why (never the key given).
pub(super) async fn login(State(gateway): State<Arc<Gateway>>, body: Bytes) -> Response {
    let settings = gateway.settings.load_full();
    let Some(master) = &settings.master_key else {
        if settings.api_keys.is_empty() {
            // An open gateway: the page needs no session.
            return see_other("/ui", None);
        }
        return login_page(
            StatusCode::FORBIDDEN,
            Some("This gateway has no master key: the dashboard is not available."),
        );
    };
    if body.len() > MAX_FORM_BYTES {
        return login_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("The form is too large."),
        );
    }
    let given = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value);
    match given {
        Some(given) if keys_equal(given.as_bytes(), master.expose().as_bytes()) => {
            let cookie = session_cookie(master, gateway.now_secs());
            see_other("/ui", HeaderValue::from_str(&cookie).ok())
        }
        Some(_) => login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the master key."),
        ),
        None => login_page(StatusCode::BAD_REQUEST, Some("Enter the master key.")),
    }
}

/// `POST /ui/logout`: ends the browser's session (the cookie is cleared) and shows the form.
pub(super) async fn logout() -> Response {
    let clear =
        HeaderValue::from_static("ferrolite_ui=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    see_other("/ui", Some(clear))
}

/// `GET /ui/app.js`.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    harden(response.headers_mut());
    response
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    harden(response.headers_mut());
    response
}

/// The headers every page and asset of the dashboard carries.
fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The sign-in form, with `message` (fixed text of this module's) above it.
fn login_page(status: StatusCode, message: Option<&'static str>) -> Response {
    let body = match message {
        Some(message) => LOGIN.replace(
            "<!--message-->",
            &format!("<p class=\"failed\" role=\"alert\">{message}</p>"),
        ),
        None => LOGIN.to_owned(),
    };
    html(status, body)
}

fn see_other(location: &'static str, cookie: Option<HeaderValue>) -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

impl Gateway {
    /// The time now in Unix seconds, by the router's clock (paused in tests).
    pub(super) fn now_secs(&self) -> u64 {
        self.router.load().cache().clock().now_ms() / 1000
    }
}

/// A session cookie issued at `issued` (Unix seconds): `ferrolite_ui=v1.<issued>.<hex HMAC>`.
fn session_cookie(master: &Secret, issued: u64) -> String {
    format!(
        "{COOKIE}=v1.{issued}.{}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
        hex(&sign(master, issued)),
        SESSION.as_secs()
    )
}

/// Whether `headers` carry a session cookie signed with `master` and issued less than
/// [`SESSION`] before `now` (Unix seconds).
fn session_valid(master: &Secret, headers: &HeaderMap, now: u64) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|value| {
            let mut parts = value.splitn(3, '.');
            let (Some("v1"), Some(issued), Some(mac)) = (parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            let Ok(issued) = issued.parse::<u64>() else {
                return false;
            };
            let fresh = issued <= now.saturating_add(SKEW.as_secs())
                && now.saturating_sub(issued) < SESSION.as_secs();
            fresh && keys_equal(mac.as_bytes(), hex(&sign(master, issued)).as_bytes())
        })
}

/// HMAC-SHA256 under the master key of what a session of `issued` signs.
fn sign(master: &Secret, issued: u64) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, master.expose().as_bytes());
    let tag = ring::hmac::sign(&key, format!("ferrolite ui session v1 {issued}").as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Compares without stopping at the first difference.
fn keys_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn cookie_value(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn a_session_is_valid_for_its_master_key_and_its_lifetime_only() {
        let master = Secret::new("sk-master".to_owned());
        let issued = 1_800_000_000;
        let cookie = cookie_value(&session_cookie(&master, issued));
        let headers = with_cookie(&format!("other=1; {cookie}"));
        assert!(session_valid(&master, &headers, issued));
        assert!(session_valid(
            &master,
            &headers,
            issued + SESSION.as_secs() - 1
        ));
        assert!(!session_valid(
            &master,
            &headers,
            issued + SESSION.as_secs()
        ));
        assert!(!session_valid(
            &master,
            &headers,
            issued - SKEW.as_secs() - 1
        ));
        let other = Secret::new("sk-other".to_owned());
        assert!(!session_valid(&other, &headers, issued));
    }

    #[test]
    fn a_forged_or_altered_session_is_refused() {
        let master = Secret::new("sk-master".to_owned());
        let issued = 1_800_000_000;
        let cookie = cookie_value(&session_cookie(&master, issued));
        // Moving the issue time forward keeps the old signature: refused.
        let later = cookie.replace("1800000000", "1800040000");
        assert!(!session_valid(
            &master,
            &with_cookie(&later),
            issued + SESSION.as_secs()
        ));
        for forged in [
            "ferrolite_ui=v1.1800000000.",
            "ferrolite_ui=v1.x.00",
            "ferrolite_ui=v2.1800000000.00",
            "ferrolite_ui=",
            "ferrolite_uix=whatever",
        ] {
            assert!(
                !session_valid(&master, &with_cookie(forged), issued),
                "{forged}"
            );
        }
    }
}
