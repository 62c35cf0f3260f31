//! `GET /router/state` across `ferrolite serve` processes on one Redis, and `ferrolite status`
//! reading it: a cooldown set through one gateway shows with its cause in another's state,
//! every gateway is listed as a replica (one serving another config flagged), a gateway that
//! stops leaves the list, and the endpoint needs the master key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::process::{Command, Stdio};

use common::{exchange, spawn_serve};

const KEY: &str = "sk-status-test";

fn config(url: &str, prefix: &str, retries: u32) -> String {
    format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/a, mock_response: litellm.RateLimitError, rpm: 600}}
    model_info: {{id: limited}}
  - model_name: g
    litellm_params: {{model: openai/b, mock_response: ok, max_parallel_requests: 10}}
    model_info: {{id: fine}}
router_settings:
  num_retries: {retries}
  cooldown_time: 60
  redis_url: {url}
general_settings:
  master_key: {KEY}
ferrolite_settings:
  redis_key_prefix: "{prefix}"
  api_keys:
    - {{name: team, key: sk-team-key, models: [g]}}
"#
    )
}

fn state(port: u16) -> serde_json::Value {
    let (status, head, body) = exchange(port, "GET", "/router/state", Some(KEY), "");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).unwrap()
}

fn stop(child: &mut std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn replica_ids(state: &serde_json::Value) -> Vec<String> {
    state["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn gateways_on_one_redis_share_their_state_and_list_each_other() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ferrolite-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("status-{}-{}:", std::process::id(), rand_suffix());
    let same = dir.join("same.yaml");
    let other = dir.join("other.yaml");
    std::fs::write(&same, config(&url, &prefix, 3)).unwrap();
    std::fs::write(&other, config(&url, &prefix, 2)).unwrap();
    let (mut a, port_a) = spawn_serve(&same, &[], Stdio::null(), Stdio::null());
    let (mut b, port_b) = spawn_serve(&same, &[], Stdio::null(), Stdio::null());
    let (mut c, port_c) = spawn_serve(&other, &[], Stdio::null(), Stdio::null());

    // Without the key: 401.
    let (status, _, _) = exchange(port_b, "GET", "/router/state", None, "");
    assert_eq!(status, 401);
    let (status, _, _) = exchange(port_b, "GET", "/router/state", Some("sk-wrong"), "");
    assert_eq!(status, 401);
    // An API key is not the master key: 403.
    let (status, _, _) = exchange(port_b, "GET", "/router/state", Some("sk-team-key"), "");
    assert_eq!(status, 403);

    // Through a, until the rate-limited deployment has been met (and cooled down).
    let body = r#"{"model": "g", "messages": [{"role": "user", "content": "hi"}]}"#;
    let mut met = false;
    for _ in 0..30 {
        let (status, head, _) = exchange(port_a, "POST", "/v1/chat/completions", Some(KEY), body);
        assert_eq!(status, 200, "{head}");
        if head.contains("x-litellm-attempted-retries: 1") {
            met = true;
            break;
        }
    }
    assert!(met, "gateway a never picked the rate-limited deployment");
    // b reads the cooldown and a's counts back with its next syncs (every 100 ms; a pushes
    // its counts with its own).
    let mut seen = serde_json::Value::Null;
    // The cause is written beside the deadline, a moment after it: wait for both.
    for _ in 0..250 {
        seen = state(port_b);
        let deployments = &seen["groups"][0]["deployments"];
        if deployments[0]["state"] == "cooldown"
            && deployments[0]["cooldown"]["class"] == "rate_limited"
            && deployments[1]["rpm"]["used"].as_u64().unwrap_or(0) >= 1
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let limited = &seen["groups"][0]["deployments"][0];
    assert_eq!(limited["id"], "limited");
    assert_eq!(limited["state"], "cooldown", "{seen:#}");
    assert_eq!(limited["cooldown"]["class"], "rate_limited");
    assert_eq!(limited["cooldown"]["status"], 429);
    assert!(limited["cooldown"]["message"].is_string());
    let fine = &seen["groups"][0]["deployments"][1];
    assert_eq!(fine["leases"]["max"], 10);
    assert_eq!(fine["rpm"]["limit"], serde_json::Value::Null);
    assert!(fine["rpm"]["used"].as_u64().unwrap() >= 1, "{fine:#}");

    // Every gateway is a replica; c serves another config.
    let ids = replica_ids(&seen);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(seen["replica"], ids[0].as_str());
    let flagged: Vec<&serde_json::Value> = seen["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["same_config"] == false)
        .collect();
    assert_eq!(flagged.len(), 1);
    let c_id = state(port_c)["replica"].as_str().unwrap().to_string();
    assert_eq!(flagged[0]["id"], c_id.as_str());

    // `ferrolite status` shows the same, as tables.
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args([
            "status",
            "--url",
            &format!("http://127.0.0.1:{port_b}"),
            "--key",
            KEY,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("state shared through Redis"), "{text}");
    assert!(
        text.contains("Replicas (3, 1 with a different config)"),
        "{text}"
    );
    assert!(text.contains(&c_id), "{text}");
    assert!(text.contains("(different config)"), "{text}");
    let limited_row = text
        .lines()
        .find(|l| l.contains("limited") && l.contains("openai/a"))
        .unwrap();
    assert!(limited_row.contains("cooldown"), "{limited_row}");
    assert!(limited_row.contains("/600"), "{limited_row}");
    let cooldown_row = text
        .lines()
        .skip_while(|l| !l.starts_with("Cooldowns (1)"))
        .find(|l| l.contains("limited"))
        .unwrap();
    assert!(cooldown_row.contains("rate_limited"), "{cooldown_row}");
    assert!(cooldown_row.contains("429"), "{cooldown_row}");
    // Without the key, the command says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args(["status", "--url", &format!("http://127.0.0.1:{port_b}")])
        .env_remove("FERROLITE_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("401") && err.contains("--key"), "{err}");

    // c stops: it leaves the list at once.
    stop(&mut c);
    let ids = replica_ids(&state(port_b));
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&c_id));
    for child in [&mut a, &mut b] {
        stop(child);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A few random hex digits, so two runs never share a key prefix.
fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let n = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:06x}", n & 0xff_ffff)
}
