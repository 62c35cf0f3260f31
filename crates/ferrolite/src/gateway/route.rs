//! Step 4, route: the router calls (or streams) the request, and the API key's tpm is settled
//! to the tokens the provider used; the answer is step 5 ([`super::answer`], [`super::sse`]).

use axum::response::Response;
use ferrolite_router::{Request, Router};
use ferrolite_types::Usage;

use super::answer;
use super::errors::GatewayError;
use super::keys::KeyAdmission;
use super::sse::sse;

/// Routes `request` and answers it as the client asked: JSON, or server-sent events for
/// `"stream": true` (with usage when `include_usage`); `model` is the name the client gave.
pub(super) async fn route(
    router: &Router,
    request: Request,
    model: String,
    include_usage: bool,
    admitted: Option<KeyAdmission>,
) -> Result<Response, GatewayError> {
    // A key's tpm is settled to the tokens the provider used: none for a failure or a cache
    // hit; a stream's once it has ended.
    let settle = move |tokens: Option<u64>| {
        if let Some(admitted) = admitted {
            admitted.settle(tokens);
        }
    };
    if request.stream {
        return match router.stream(request).await {
            Ok(stream) => {
                let hit = stream.cache_hit;
                Ok(sse(
                    stream,
                    model,
                    include_usage,
                    move |usage: Option<Usage>| {
                        settle(if hit {
                            Some(0)
                        } else {
                            usage.map(|u| u.total_tokens)
                        });
                    },
                ))
            }
            Err(e) => {
                settle(Some(0));
                Err(e.into())
            }
        };
    }
    match router.call(request).await {
        Ok(answer) => {
            settle(match answer.cache_hit {
                true => Some(0),
                false => answer.usage.map(|u| u.total_tokens),
            });
            Ok(answer::json(answer, model))
        }
        Err(e) => {
            settle(Some(0));
            Err(e.into())
        }
    }
}
