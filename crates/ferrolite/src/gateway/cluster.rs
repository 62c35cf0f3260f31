//! `GET /router/state` (master key only, or the dashboard's session cookie): the cluster's routing state as the router reads it
//! ([`ferrolite_router::RouterState`], field by field in docs/operations.md), answered as this
//! gateway's replica. `?history=false` leaves out each deployment's 15-minute history (most of
//! the answer's size), for a client that polls often (the dashboard reads the histories once
//! per 10-second bucket, the rest every second).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use ferrolite_router::StateOptions;

use super::state::Gateway;

/// `GET /router/state`.
pub(super) async fn router_state(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let settings = gateway.settings.load_full();
    // The master key in a header, or the dashboard's session cookie (`/ui`).
    if let Err(refused) =
        Gateway::operator(&settings, &headers, "/router/state", gateway.now_secs())
    {
        return refused.into_response();
    }
    let history = !matches!(
        query.get("history").map(String::as_str),
        Some("false" | "0" | "no")
    );
    let router = gateway.router.load_full();
    let state = router
        .state_with(&gateway.replicas, StateOptions { history })
        .await;
    // Sized for the answer at once (about 0.6 KB a deployment, 1.4 KB with its history): a
    // buffer grown by doubling would copy a large state several times.
    let deployments: usize = state.groups.iter().map(|g| g.deployments.len()).sum();
    let mut body = JsonBuf(Vec::with_capacity(
        1024 + deployments * if history { 1536 } else { 640 },
    ));
    match serde_json::to_writer(&mut body, &state) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body.0).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode the router state");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The answer's buffer, as serde_json writes into it: most of what it writes are single bytes
/// (a comma, a bracket, a quote, the digit of a history's many zeros), which a `Vec<u8>` would
/// copy with a call to `memmove` each (a tenth of the answer's time at 1,000 deployments).
struct JsonBuf(Vec<u8>);

impl std::io::Write for JsonBuf {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match bytes {
            [byte] => self.0.push(*byte),
            _ => self.0.extend_from_slice(bytes),
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
