//! The dashboard (`GET /ui`) in a real browser: headless Chromium driven through ChromeDriver
//! (W3C WebDriver over HTTP), against two `ferrolite serve` replicas sharing one Redis. The
//! page signs in with the master key, shows the numbers `/router/state` answers, and a cooldown
//! set through one replica shows on the page served by the other within 2 s.
//!
//! Needs `chromium` and `chromedriver` (`cargo xtask ci` installs them, or names them in
//! `FERROLITE_CHROMIUM` / `FERROLITE_CHROMEDRIVER`); skipped without them unless
//! `FERROLITE_REQUIRE_BROWSER=1`. Screenshots (laptop and phone widths) are left in the target
//! directory's test tmp dir for a person to look at.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{exchange, spawn_serve};
use serde_json::{Value, json};

const MASTER: &str = "sk-dashboard-test";

/// Chromium and ChromeDriver: their paths, or `None` (skip) when they are not installed.
fn browser() -> Option<(String, String)> {
    let which = |name: &str| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
                .map(|p| p.display().to_string())
        })
    };
    let chromium = std::env::var("FERROLITE_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| which("chromium"));
    let driver = std::env::var("FERROLITE_CHROMEDRIVER")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| which("chromedriver"));
    match chromium.zip(driver) {
        Some(found) => Some(found),
        None if std::env::var("FERROLITE_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("FERROLITE_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed")
        }
        None => {
            eprintln!("skipping: no chromium/chromedriver (run `cargo xtask ci`)");
            None
        }
    }
}

/// A ChromeDriver process and one headless Chromium session of it, ended on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start(chromium: &str, chromedriver: &str) -> Browser {
        let port = ferrolite_cache::testing::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, body) = driver_exchange(port, "GET", "/status", "");
                if status == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let answer = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000"]
                }
            }}}),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        browser
    }

    /// One WebDriver command: its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, answer) = driver_exchange(self.port, method, path, &body);
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {answer}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.at("/url"), json!({"url": url}));
    }

    /// Runs `script` in the page (a function body; `return` its result).
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            &self.at("/element"),
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/value")),
            json!({"text": text}),
        );
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/click")),
            json!({}),
        );
    }

    fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.at("/window/rect"),
            json!({"width": width, "height": height}),
        );
    }

    /// A screenshot of the window, saved as `name` in the test tmp dir: its path.
    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.call("GET", &self.at("/screenshot"), Value::Null);
        let bytes = base64_decode(png.as_str().expect("a base64 PNG"));
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = driver_exchange(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                "",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 exchange with ChromeDriver, which keeps connections open whatever the
/// request says: the body is read by its `Content-Length`. The status and the body.
fn driver_exchange(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let (status_line, answer) = common::read_message(&mut reader).expect("ChromeDriver answers");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// A replica of the test's cluster, killed on drop.
struct Replica {
    child: Child,
    port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state(port: u16) -> Value {
    let (status, _, body) = exchange(port, "GET", "/router/state", Some(MASTER), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn deployment<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["deployments"].as_array().into_iter().flatten())
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no deployment {id} in {state}"))
}

/// What the page shows of a deployment's row: `{state, rpm, tpm, leases, errors, cooldown}`
/// as text, or null when the row is not there.
const ROWS: &str = r#"
const rows = {};
for (const tr of document.querySelectorAll("tr[data-id]")) {
  const text = (k) => { const n = tr.querySelector(`[data-k="${k}"]`); return n ? n.textContent : null; };
  rows[tr.dataset.id] = { state: text("state"), rpm: text("rpm"), tpm: text("tpm"),
    leases: text("leases"), errors: text("errors"), cooldown: text("cooldown") };
}
return rows;
"#;

/// The text the page shows for `used / limit` (numbers in en-US grouping).
fn used_of(pair: &Value) -> String {
    let n = |v: &Value| match v.as_u64() {
        Some(n) => {
            let digits = n.to_string();
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            grouped
        }
        None => "–".to_owned(),
    };
    format!("{} / {}", n(&pair["used"]), n(&pair["limit"]))
}

fn chat(port: u16, group: &str) -> u16 {
    let body = json!({"model": group, "messages": [{"role": "user", "content": "hi"}]});
    exchange(
        port,
        "POST",
        "/v1/chat/completions",
        Some(MASTER),
        &body.to_string(),
    )
    .0
}

#[test]
fn the_dashboard_shows_the_cluster_state_and_a_cooldown_from_another_replica_within_2s() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ferrolite-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o, rpm: 600, tpm: 100000, mock_response: fine}}
    model_info: {{id: steady}}
  - model_name: flaky
    litellm_params: {{model: openai/gpt-4o-mini, rpm: 60, order: 1, mock_response: litellm.RateLimitError}}
    model_info: {{id: flaky}}
  - model_name: flaky
    litellm_params: {{model: openai/gpt-4o-mini, order: 2, mock_response: spare}}
    model_info: {{id: spare}}
router_settings:
  num_retries: 0
  allowed_fails: 0
  cooldown_time: 60
  redis_url: {url}
general_settings:
  master_key: {MASTER}
ferrolite_settings:
  redis_key_prefix: "dashboard-{}:"
"#,
            std::process::id()
        ),
    )
    .unwrap();
    let start = || {
        let (child, port) = spawn_serve(&config, &[], Stdio::null(), Stdio::null());
        Replica { child, port }
    };
    let a = start();
    let b = start();
    // The rpm window is the clock's minute, and a minute turned weighs the last one's calls
    // down: the ten calls and the comparison below (at most 20 s) stay in one minute.
    let into_minute = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 60_000
    };
    if into_minute() > 25_000 {
        std::thread::sleep(Duration::from_millis((60_000 - into_minute()) as u64 + 50));
    }
    for _ in 0..5 {
        assert_eq!(chat(a.port, "chat"), 200);
        assert_eq!(chat(b.port, "chat"), 200);
    }

    let browser = Browser::start(&chromium, &chromedriver);
    // Without a session the page is the sign-in form; a wrong key is refused on it.
    browser.go(&format!("http://127.0.0.1:{}/ui", b.port));
    browser.type_into("#key", "sk-not-the-master");
    browser.click("button[type=submit]");
    // The click's navigation may still be under way: wait for the answer's form.
    let started = Instant::now();
    let refused = loop {
        let refused = browser.eval("return document.querySelector('.failed')?.textContent ?? null");
        if !refused.is_null() || started.elapsed() > Duration::from_secs(10) {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused, "That is not the master key.");
    browser.type_into("#key", MASTER);
    browser.click("button[type=submit]");

    // The page shows both deployments with the numbers /router/state answers: compared when
    // two reads of the state around the page's agree (the window may turn meanwhile).
    let started = Instant::now();
    loop {
        let before = state(b.port);
        std::thread::sleep(Duration::from_millis(1200));
        let rows = browser.eval(ROWS);
        let after = state(b.port);
        let steady = deployment(&after, "steady");
        let settled = deployment(&before, "steady")["rpm"] == steady["rpm"]
            && deployment(&before, "steady")["tpm"] == steady["tpm"];
        if settled && rows.get("steady").is_some() {
            let row = &rows["steady"];
            assert_eq!(row["state"], steady["state"], "{row}");
            assert_eq!(row["state"], "healthy");
            assert_eq!(row["rpm"], used_of(&steady["rpm"]), "{row} vs {steady}");
            assert_eq!(row["tpm"], used_of(&steady["tpm"]), "{row} vs {steady}");
            assert_eq!(
                steady["rpm"]["used"], 10,
                "both replicas' calls counted: {steady}"
            );
            assert_eq!(rows["flaky"]["state"], "healthy");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the page never matched /router/state: {rows}"
        );
    }
    let replicas = browser.eval("return document.querySelectorAll('tr[data-replica]').length");
    assert_eq!(replicas, 2, "both replicas listed");
    let laptop = browser.screenshot("dashboard-laptop.png");

    // A cooldown set through replica A shows on replica B's page within 2 s (`order` sends
    // the call to `flaky` first; a group of one deployment is never cooled down, as LiteLLM).
    chat(a.port, "flaky");
    let set = Instant::now();
    loop {
        let rows = browser.eval(ROWS);
        if rows["flaky"]["state"] == "cooldown" {
            let why = rows["flaky"]["cooldown"].as_str().unwrap_or_default();
            assert!(why.contains("429"), "the cause shows: {why}");
            break;
        }
        assert!(
            set.elapsed() < Duration::from_secs(2),
            "the cooldown did not show on the other replica's page within 2 s: {rows}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(set.elapsed() < Duration::from_secs(2));

    // Readable on a phone: nothing wider than the screen.
    browser.resize(390, 844);
    std::thread::sleep(Duration::from_millis(1200));
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(
        overflow.as_i64().unwrap_or(i64::MAX) <= 0,
        "wider than a phone by {overflow} px"
    );
    let clipped = browser.eval(
        "return Array.from(document.querySelectorAll('table')).filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length",
    );
    assert_eq!(clipped, 0, "a table wider than its card on a phone");
    let phone = browser.screenshot("dashboard-phone.png");
    eprintln!("screenshots: {} {}", laptop.display(), phone.display());
    drop(browser);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_dashboard_needs_the_master_key_and_its_assets_carry_a_strict_policy() {
    let dir = std::env::temp_dir().join(format!("ferrolite-dashboard-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
model_list:
  - model_name: chat
    litellm_params: {{model: openai/gpt-4o, mock_response: fine}}
general_settings:
  master_key: {MASTER}
ferrolite_settings:
  api_keys:
    - name: app
      key: sk-app-key
"#
        ),
    )
    .unwrap();
    let (child, port) = spawn_serve(&config, &[], Stdio::null(), Stdio::null());
    let replica = Replica { child, port };
    // No key: the sign-in form, never the dashboard.
    let (status, head, body) = exchange(replica.port, "GET", "/ui", None, "");
    assert_eq!(status, 200);
    assert!(body.contains("action=\"/ui/login\""), "{body}");
    assert!(!body.contains("/ui/app.js"), "{body}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    // An API key that is not the master key: 403.
    let (status, _, _) = exchange(replica.port, "GET", "/ui", Some("sk-app-key"), "");
    assert_eq!(status, 403);
    // The master key in a header: the dashboard.
    let (status, _, body) = exchange(replica.port, "GET", "/ui", Some(MASTER), "");
    assert_eq!(status, 200);
    assert!(body.contains("/ui/app.js"), "{body}");
    // Signing in with the master key sets an HttpOnly, SameSite=Strict session cookie that
    // opens the dashboard and /router/state, and nothing that needs an API key.
    let form = format!("key={MASTER}");
    let response = common::exchange_raw(replica.port, "POST", "/ui/login", None, &form);
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    let cookie = response
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(MASTER),
        "the cookie does not carry the key: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |method: &str, path: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", replica.port)).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {session}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    let page = with_cookie("GET", "/ui");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("/ui/app.js"),
        "{page}"
    );
    let state = with_cookie("GET", "/router/state");
    assert!(state.starts_with("HTTP/1.1 200"), "{state}");
    let call = with_cookie("POST", "/v1/chat/completions");
    assert!(
        call.starts_with("HTTP/1.1 401"),
        "the cookie is no API key: {call}"
    );
    // A wrong key at the form: 401, the form again.
    let response = common::exchange_raw(replica.port, "POST", "/ui/login", None, "key=nope");
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("set-cookie"),
        "{response}"
    );
    drop(replica);
    let _ = std::fs::remove_dir_all(dir);
}
