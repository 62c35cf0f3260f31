//! Step 4, route: the router calls (or streams) the request; the answer is step 5
//! ([`super::answer`], [`super::sse`]).

use axum::response::Response;
use ferrolite_router::{Request, Router};

use super::answer;
use super::errors::GatewayError;
use super::sse::sse;

/// Routes `request` and answers it as the client asked: JSON, or server-sent events for
/// `"stream": true` (with usage when `include_usage`); `model` is the name the client gave.
pub(super) async fn route(
    router: &Router,
    request: Request,
    model: String,
    include_usage: bool,
    span: &tracing::Span,
) -> Result<Response, GatewayError> {
    if request.stream {
        let stream = router.stream(request).await?;
        super::trace::streaming(span, &stream);
        return Ok(sse(stream, model, include_usage, span.clone()));
    }
    let answer = router.call(request).await?;
    super::trace::answered(span, &answer);
    Ok(answer::json(answer, model))
}
