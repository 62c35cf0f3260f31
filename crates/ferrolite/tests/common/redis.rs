//! The Redis the tests share.

/// The Redis the tests share, or `None` to skip (a panic when `FERROLITE_REQUIRE_REDIS=1`).
pub fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let address = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    if std::net::TcpStream::connect(&address).is_ok() {
        return Some(url);
    }
    assert!(
        std::env::var("FERROLITE_REQUIRE_REDIS").as_deref() != Ok("1"),
        "FERROLITE_REQUIRE_REDIS=1 but no Redis answers at {address}"
    );
    eprintln!("skipping: no Redis at {address}");
    None
}
