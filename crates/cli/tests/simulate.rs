//! `ferrolite simulate` and `ferrolite check`, through the library and the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use ferrolite::Config;
use ferrolite_cli::simulate::Workload;
use ferrolite_cli::{EXAMPLE_CONFIG, run_blocking};

fn workload(requests: u64, concurrency: u32) -> Workload {
    Workload {
        requests,
        concurrency,
        rate: None,
        duration: None,
        tags: Vec::new(),
        groups: vec![("g".into(), 1.0)],
        prompt_tokens: 100,
        max_tokens: 50,
        stream_share: 0.3,
        repeat_share: 0.0,
        instances: 1,
        redis: None,
        seed: 3,
        explain: None,
    }
}

#[test]
fn the_example_config_runs_and_its_totals_equal_the_requests_sent() {
    let config = Config::from_yaml(EXAMPLE_CONFIG).unwrap();
    let mut w = ferrolite_cli::workload(
        &config,
        &ferrolite_cli::SimulateArgs {
            config: None,
            requests: Some(600),
            concurrency: None,
            rate: None,
            duration: None,
            stream_share: None,
            repeat_share: None,
            redis: None,
            instances: 1,
            seed: 1,
            json: false,
            report: None,
            compare: None,
            explain: None,
        },
    )
    .unwrap();
    w.requests = 600;
    let report = run_blocking(config, &w, &|_, _| {}).unwrap();
    assert_eq!(report.requests, 600);
    assert_eq!(report.succeeded + report.failed, 600);
    let by_group: u64 = report.groups.values().map(|g| g.requests).sum();
    assert_eq!(by_group, 600);
    let answered: u64 = report.deployments.iter().map(|d| d.successes).sum();
    assert_eq!(
        answered, report.succeeded,
        "every answer is some deployment's success"
    );
    assert!(!report.limit_exceeded, "{:?}", report.deployments);
    let text = ferrolite_cli::render(&report, &w);
    assert!(text.contains("600 requests"), "{text}");
    assert!(text.contains("azure-eu"), "{text}");
}

const FAILING: &str = r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/a, mock_latency_ms: 100}
    model_info: {id: a}
  - model_name: g
    litellm_params: {model: openai/b, mock_latency_ms: 100}
    model_info: {id: b}
  - model_name: backup
    litellm_params: {model: openai/c, mock_latency_ms: 100}
    model_info: {id: c}
router_settings:
  num_retries: 0
  allowed_fails: 1
  cooldown_time: 5
  fallbacks: [{"g": ["backup"]}]
simulation:
  failures:
    - {deployment: a, from_s: 0, to_s: 1000, error: InternalServerError}
    - {deployment: b, from_s: 0, to_s: 1000, error: RateLimitError}
"#;

#[test]
fn with_the_response_cache_on_repeated_prompts_are_answered_without_a_deployment() {
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/a, mock_latency_ms: 50}
    model_info: {id: a}
router_settings:
  cache_responses: true
"#,
    )
    .unwrap();
    let w = Workload {
        repeat_share: 0.5,
        ..workload(400, 1)
    };
    let report = run_blocking(config, &w, &|_, _| {}).unwrap();
    assert!(report.response_cache);
    // About half the requests recur among 16 prompts: all but each prompt's first are hits.
    assert!(
        (150..=200).contains(&report.cache_hits),
        "{} hits",
        report.cache_hits
    );
    let a = report.deployments.iter().find(|d| d.id == "a").unwrap();
    assert_eq!(
        a.requests + report.cache_hits,
        400,
        "a hit calls no deployment"
    );
    assert_eq!(report.succeeded, 400);
    let text = ferrolite_cli::render(&report, &w);
    assert!(
        text.contains(&format!(
            "response cache: {} of 400 requests",
            report.cache_hits
        )),
        "{text}"
    );
    let html = ferrolite_cli::report::html(&report, &w, "test");
    assert!(
        html.contains(&format!(
            "Response cache: {} of 400 requests",
            report.cache_hits
        )),
        "the HTML report says it too"
    );
}

#[test]
fn a_failure_window_shows_as_cooldowns_and_fallbacks() {
    let config = Config::from_yaml(FAILING).unwrap();
    let report = run_blocking(config, &workload(200, 4), &|_, _| {}).unwrap();
    let a = report.deployments.iter().find(|d| d.id == "a").unwrap();
    let b = report.deployments.iter().find(|d| d.id == "b").unwrap();
    let c = report.deployments.iter().find(|d| d.id == "c").unwrap();
    assert!(a.cooldowns > 0 && a.failures > 0, "{a:?}");
    assert!(b.rate_limited > 0, "{b:?}");
    assert_eq!(a.successes + b.successes, 0);
    assert!(c.successes > 0, "the fallback answered: {c:?}");
    assert!(report.groups["g"].fallbacks > 0, "{:?}", report.groups);
    assert_eq!(report.succeeded + report.failed, 200);
    assert!(!a.cooldown_spans.is_empty() && a.cooldown_spans[0].1 > a.cooldown_spans[0].0);
}

#[test]
fn three_instances_on_redis_in_strict_mode_never_exceed_an_rpm() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/a, rpm: 40, mock_latency_ms: 5}
    model_info: {id: a}
  - model_name: g
    litellm_params: {model: openai/b, rpm: 40, mock_latency_ms: 5}
    model_info: {id: b}
router_settings:
  num_retries: 0
ferrolite_settings:
  admission: strict
  window: fixed
  failure_mode: fail_closed
"#,
    )
    .unwrap();
    // fail_closed: a Redis reply later than the command timeout (250 ms; seen on a loaded CI
    // machine) refuses the call. Under fail_open it would be decided on the instance's local
    // view by design, and three instances deciding locally can pass the limit (peak 55 of 40
    // was seen once): that is the documented fail-open trade, not what this test checks.
    let mut w = workload(200, 12);
    w.instances = 3;
    w.redis = Some(url);
    w.seed = std::process::id() as u64; // a fresh key prefix per run
    let report = run_blocking(config, &w, &|_, _| {}).unwrap();
    for d in &report.deployments {
        assert!(d.peak_rpm <= 40.0, "{d:?}");
    }
    assert!(!report.limit_exceeded);
    assert!(
        report.failed > 0,
        "an overload of 200 against 80 a minute refuses some"
    );
    assert!(report.overhead_p50_us.is_some(), "measured in real time");
}

fn ferrolite(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_lists_the_groups_of_a_good_config_and_fails_on_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("ferrolite-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, EXAMPLE_CONFIG).unwrap();
    let out = ferrolite(&["check", "--config", good.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config OK: 5 deployments"), "{text}");
    assert!(text.contains("gpt-4o") && text.contains("claude"), "{text}");
    assert!(text.contains("fallbacks -> claude"), "{text}");

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/x\n      rpm: ten\n",
    )
    .unwrap();
    let out = ferrolite(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "model_list[0].litellm_params.rpm: expected a non-negative integer, got \"ten\""
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn simulate_prints_json_on_request_and_bad_flags_get_clap_errors() {
    let out = ferrolite(&["simulate", "--requests", "50", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["requests"], 50);
    let out = ferrolite(&["simulate", "--instances", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instances"));
    let out = ferrolite(&["simulate", "--requests", "many"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_report_is_one_self_contained_html_file_with_the_charts() {
    let dir = std::env::temp_dir().join(format!("ferrolite-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("failing.yaml");
    std::fs::write(&config, FAILING).unwrap();
    let report = dir.join("report.html");
    let out = ferrolite(&[
        "simulate",
        "--config",
        config.to_str().unwrap(),
        "--requests",
        "200",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&report).unwrap();
    for heading in [
        "Requests per deployment over time",
        "Latency percentiles over time",
        "Cooldowns",
        "rpm window per deployment against its limit",
        "Budget spend against limits",
    ] {
        assert!(page.contains(heading), "missing {heading}");
    }
    assert_eq!(
        page.matches("<svg").count(),
        4,
        "four charts; no budgets here"
    );
    assert!(
        page.contains("cooled down from"),
        "the failing deployment's cooldown band"
    );
    assert!(
        !page.contains("<script") && !page.contains("src=\"http"),
        "no script, no network"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_seed_replays_the_same_run() {
    let run = || {
        let config = Config::from_yaml(FAILING).unwrap();
        let report = run_blocking(config, &workload(300, 6), &|_, _| {}).unwrap();
        let deployments: Vec<(String, u64, u64, u64)> = report
            .deployments
            .iter()
            .map(|d| (d.id.clone(), d.requests, d.successes, d.cooldowns))
            .collect();
        (deployments, report.succeeded, report.duration_s)
    };
    assert_eq!(run(), run());
}

#[test]
fn compare_runs_the_same_workload_once_per_value_side_by_side() {
    let configs =
        ferrolite_cli::compare_configs(FAILING, "routing_strategy=simple-shuffle,least-busy")
            .unwrap();
    assert_eq!(configs.len(), 2);
    assert_eq!(
        configs[1].1.settings.routing_strategy,
        ferrolite::strategies::StrategyName::LeastBusy
    );
    let runs: Vec<_> = configs
        .into_iter()
        .map(|(label, config)| {
            (
                label,
                run_blocking(config, &workload(100, 4), &|_, _| {}).unwrap(),
            )
        })
        .collect();
    let text = ferrolite_cli::render_compare(&runs);
    assert!(text.contains("routing_strategy=simple-shuffle"), "{text}");
    assert!(text.contains("routing_strategy=least-busy"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("answered")), "{text}");
    // ferrolite's own keys are found in ferrolite_settings.
    let configs = ferrolite_cli::compare_configs(FAILING, "window=fixed,sliding").unwrap();
    assert_eq!(
        configs[0].1.settings.window,
        ferrolite::cache::Window::MINUTE_FIXED
    );
    // A bad value is the loader's error, naming the key.
    let err = ferrolite_cli::compare_configs(FAILING, "routing_strategy=bogus,least-busy")
        .err()
        .unwrap();
    assert!(err.contains("router_settings.routing_strategy"), "{err}");
    assert!(ferrolite_cli::compare_configs(FAILING, "routing_strategy=one").is_err());
}

#[test]
fn an_open_loop_rate_over_a_duration_sends_about_rate_times_duration() {
    let config = Config::from_yaml(FAILING).unwrap();
    let mut w = workload(u64::MAX, 1);
    w.rate = Some(20.0);
    w.duration = Some(std::time::Duration::from_secs(30));
    w.tags = vec![("free".into(), 0.5)];
    let report = run_blocking(config, &w, &|_, _| {}).unwrap();
    assert!(
        (480..=720).contains(&report.requests),
        "{} requests at 20/s for 30 s",
        report.requests
    );
    assert!(report.duration_s >= 30.0);
}

#[test]
fn check_shows_the_response_cache_when_it_is_on() {
    let dir = std::env::temp_dir().join(format!("ferrolite-check-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o, mock_response: hi}}
  - {model_name: b, litellm_params: {model: openai/gpt-4o-mini, mock_response: hi}}
router_settings:
  cache_responses: true
  caching_groups: [[a, b]]
ferrolite_settings:
  response_cache: {ttl: 60, memory_bytes: 1048576}
"#,
    )
    .unwrap();
    let text = ferrolite_cli::check_command(&path).unwrap();
    assert!(
        text.contains(
            "response cache: on, TTL 60 s, memory 1.0 MiB, this process only, caching groups [a, b]"
        ),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_reports_the_health_check_keys_of_general_settings_as_honoured() {
    let dir = std::env::temp_dir().join(format!("ferrolite-check-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/gpt-4o, api_key: sk-x}
    model_info: {health_check_timeout: 5}
general_settings:
  background_health_checks: true
  health_check_interval: 30
  enable_health_check_routing: true
"#,
    )
    .unwrap();
    let out = ferrolite(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "health checks: every 30 s under `ferrolite serve`; routing on their results: on"
        ),
        "{text}"
    );
    for key in [
        "background_health_checks",
        "health_check_interval",
        "enable_health_check_routing",
        "health_check_timeout",
    ] {
        assert!(!text.contains(key), "{key} reported: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_large_fleet_prints_the_telling_and_busiest_deployments_and_counts_the_rest() {
    use ferrolite_cli::simulate::{DeploymentReport, Report};
    let deployments: Vec<DeploymentReport> = (0..500u64)
        .map(|i| DeploymentReport {
            id: format!("d{i}"),
            group: "g".into(),
            requests: i % 97,
            successes: i % 97,
            // d7 failed and d300 was cooled down: both quiet, both printed.
            failures: u64::from(i == 7),
            cooldowns: u64::from(i == 300),
            ..DeploymentReport::default()
        })
        .collect();
    let total: u64 = deployments.iter().map(|d| d.requests).sum();
    let report = Report {
        requests: total,
        deployments,
        ..Report::default()
    };
    let text = ferrolite_cli::render(&report, &workload(total, 1));
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('d') && l[1..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 40, "{text}");
    assert!(rows.iter().any(|r| r.starts_with("d7 ")), "{text}");
    assert!(rows.iter().any(|r| r.starts_with("d300 ")), "{text}");
    // The busiest (96 requests: d96, d193, d290, d387, d484) are printed.
    assert!(rows.iter().any(|r| r.starts_with("d96 ")), "{text}");
    let shown: u64 = rows
        .iter()
        .map(|r| r.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    let line = format!(
        "... 460 more deployments with {} requests not shown",
        total - shown
    );
    assert!(text.contains(&line), "{line}\n{text}");
    // Rows keep the report's order.
    let ids: Vec<u64> = rows
        .iter()
        .map(|r| r.split_whitespace().next().unwrap()[1..].parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn simulate_explains_the_nth_request_in_the_terminal_and_in_json() {
    let dir = std::env::temp_dir().join(format!("ferrolite-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("failing.yaml");
    // Every request to `g`, whose deployments fail: they cool down, and `backup` answers.
    let yaml = FAILING.replace("simulation:\n", "simulation:\n  groups: {g: 1}\n");
    std::fs::write(&path, yaml).unwrap();
    let config = path.to_str().unwrap();
    let args = [
        "simulate",
        "--config",
        config,
        "--requests",
        "20",
        "--concurrency",
        "1",
        "--stream-share",
        "0",
        "--explain",
        "3",
    ];
    let out = ferrolite(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("request 3 (at "), "{text}");
    assert!(text.contains("model g, strategy simple-shuffle"), "{text}");
    assert!(text.contains("answered by c (backup)"), "{text}");
    assert!(text.contains("pick 1: g"), "{text}");
    assert!(text.contains("\nattempts\n"), "{text}");
    assert!(text.contains("g -> backup (fallback after "), "{text}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = ferrolite(&json_args);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let explained = &report["explained"];
    assert_eq!(explained["request"], 3);
    assert_eq!(explained["route"]["deployment"], "c");
    assert_eq!(explained["route"]["fallbacks"][0]["to"], "backup");

    let out = ferrolite(&["simulate", "--explain", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}
