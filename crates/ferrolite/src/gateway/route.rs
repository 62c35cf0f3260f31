//! Step 4, route: the router calls (or streams) the request; the answer is step 5
//! ([`super::answer`], [`super::sse`]).

use axum::response::Response;
use ferrolite_router::{Request, RouteSlot, Router, RouterError};

use super::answer;
use super::errors::GatewayError;
use super::sse::sse;

/// Routes `request` and answers it as the client asked: JSON, or server-sent events for
/// `"stream": true` (with usage when `include_usage`); `model` is the name the client gave.
pub(super) async fn route(
    router: &Router,
    mut request: Request,
    model: String,
    include_usage: bool,
    span: &super::trace::Traced,
) -> Result<Response, GatewayError> {
    let slot = failure_slot(&mut request);
    let failed = |e| explained(e, slot.as_ref());
    if request.stream {
        let stream = router.stream(request).await.map_err(failed)?;
        super::trace::streaming(span, &stream);
        return Ok(sse(stream, model, include_usage, span.clone()));
    }
    let answer = router.call(request).await.map_err(failed)?;
    super::trace::answered(span, &answer);
    Ok(answer::json(answer, model))
}

/// The slot a failed request's explanation is left in, when the request asks for one.
pub(super) fn failure_slot(request: &mut Request) -> Option<RouteSlot> {
    let slot = request.explain.then(RouteSlot::new)?;
    request.failed_route = Some(slot.clone());
    Some(slot)
}

/// The router's `error`, with the route its request left in `slot` (when it asked for one):
/// the error answer then explains how the request was routed before it failed.
pub(super) fn explained(error: RouterError, slot: Option<&RouteSlot>) -> GatewayError {
    match slot.and_then(RouteSlot::take) {
        Some(route) => GatewayError::Explained(Box::new(GatewayError::Router(error)), route),
        None => GatewayError::Router(error),
    }
}
