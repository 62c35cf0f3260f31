//! No request body makes the gateway panic: arbitrary bytes and arbitrary JSON-ish bodies go
//! through the gateway's routes in process (tower's `oneshot`), and every answer is a status
//! with an OpenAI-shaped body.
#![cfg(feature = "gateway")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::http::Request as HttpRequest;
use ferrolite::Router;
use ferrolite::gateway::{GatewaySettings, app};
use ferrolite::mock::{MockBackend, MockSpec};
use ferrolite::types::Deployment;
use proptest::prelude::*;
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn router() -> Router {
    Router::builder()
        .deployment(Deployment::new("g", "openai/gpt-4o"))
        .backend(MockBackend::new(MockSpec::reply("ok")))
        .build()
        .await
        .unwrap()
}

/// Posts `body` to `path`; the status and the body.
async fn post(router: Router, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let app = app(router, GatewaySettings::default());
    let request = HttpRequest::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, body)
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("g")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_string()),
                    Just("messages".to_string()),
                    Just("stream".to_string()),
                    Just("max_tokens".to_string()),
                    Just("priority".to_string()),
                    Just("fallbacks".to_string()),
                    Just("input".to_string()),
                    Just("prompt".to_string()),
                    ".{0,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn arbitrary_bytes_get_an_answer_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let rt = runtime();
        let (status, body) = rt.block_on(async { post(router().await, "/v1/chat/completions", bytes).await });
        prop_assert!(status == 400 || status == 200, "{status}");
        if status == 400 {
            prop_assert!(body["error"]["message"].is_string(), "{body}");
        }
    }

    #[test]
    fn arbitrary_json_bodies_get_an_answer_not_a_panic(value in json_value()) {
        let rt = runtime();
        let bytes = serde_json::to_vec(&value).unwrap();
        let (status, body) = rt.block_on(async { post(router().await, "/v1/chat/completions", bytes).await });
        prop_assert!([200, 400, 429].contains(&status), "{status}: {body}");
        if status != 200 {
            prop_assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
}
