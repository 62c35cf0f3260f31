//! Deployments ferrolite cannot call yet (a provider with a protocol of its own not implemented, a
//! `model_info.mode` the gateway does not serve): listed by the loader, refused for serving
//! unless `skip_unsupported_deployments` leaves them out of routing.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::{Config, Router, build_from_config};

/// A gateway on a free loopback port over `router`, with no key; its base URL.
async fn gateway(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, GatewaySettings::default()),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// A chat completion of `model` through the gateway: status and body.
async fn chat(base: &str, model: &str) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

const UNSUPPORTED: &str = r#"
model_list:
  - model_name: claude
    litellm_params: {model: sagemaker/my-endpoint}
  - model_name: command
    litellm_params: {model: cohere/command-r-plus}
  - model_name: dall-e
    litellm_params: {model: openai/dall-e-3}
    model_info: {mode: image_generation}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: hi}
  - model_name: mocked-bedrock
    litellm_params: {model: bedrock/x, mock_response: hi}
"#;

/// Regression (issue 16): a SageMaker, Vertex AI or image-generation deployment was sent
/// OpenAI's protocol.
#[tokio::test]
async fn deployments_ferrolite_cannot_call_are_refused_for_serving_or_left_out_when_asked() {
    let config = Config::from_yaml(UNSUPPORTED).unwrap();
    let reasons: Vec<(usize, &str)> = config
        .not_callable
        .iter()
        .map(|n| (n.index, n.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, "provider sagemaker is not implemented"),
            (1, "provider cohere is not implemented"),
            (2, "mode image_generation is not implemented"),
        ]
    );
    let error = config.for_serving().unwrap_err().to_string();
    assert!(
        error.starts_with(
            "model_list[0]: ferrolite cannot call 3 deployment(s) yet: model_list[0] (claude, id "
        ),
        "{error}"
    );
    assert!(
        error.contains("not callable: provider sagemaker is not implemented"),
        "{error}"
    );
    assert!(error.contains("model_list[2] (dall-e, id "), "{error}");
    assert!(
        error.contains("skip_unsupported_deployments: true"),
        "{error}"
    );

    let skipping = Config::from_yaml(&format!(
        "{UNSUPPORTED}ferrolite_settings: {{skip_unsupported_deployments: true}}\n"
    ))
    .unwrap()
    .for_serving()
    .unwrap();
    let groups: Vec<&str> = skipping
        .deployments
        .iter()
        .map(|d| d.model_name.as_str())
        .collect();
    assert_eq!(groups, vec!["gpt-4o", "mocked-bedrock"]);
    let base = gateway(build_from_config(skipping, None).await.unwrap()).await;
    assert_eq!(chat(&base, "gpt-4o").await.0, 200);
    let (status, body) = chat(&base, "claude").await;
    assert_ne!(status, 200, "left out of routing: {body}");
    assert!(body.to_string().contains("claude"), "{body}");
}

#[tokio::test]
async fn router_from_config_with_the_http_backend_refuses_them_too() {
    let dir = std::env::temp_dir().join(format!("ferrolite-unsupported-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, UNSUPPORTED).unwrap();
    let error = ferrolite::from_config(&path).await.unwrap_err().to_string();
    assert!(
        error.contains("not callable: provider sagemaker is not implemented"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A provider without a well-known endpoint and no `api_base` failed every call at run time
/// ("needs api_base"); now it is found when the config is loaded.
#[test]
fn a_provider_without_a_known_endpoint_and_no_api_base_is_not_callable() {
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: llama
    litellm_params: {model: hosted_vllm/meta-llama/Llama-3-8B}
  - model_name: llama
    litellm_params: {model: hosted_vllm/meta-llama/Llama-3-8B, api_base: "http://gpu-1:8000/v1"}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o}
  - model_name: "*"
    litellm_params: {model: "*"}
"#,
    )
    .unwrap();
    let reasons: Vec<(usize, &str)> = config
        .not_callable
        .iter()
        .map(|n| (n.index, n.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![(
            0,
            "provider hosted_vllm needs api_base (its OpenAI-compatible endpoint)"
        )]
    );
}
