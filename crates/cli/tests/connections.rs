//! `ferrolite serve` applies `ferrolite_settings.server` from its config, and only a restart
//! changes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: hi}
ferrolite_settings:
  server: {keep_alive_timeout: 0.3}
";

/// How long the gateway keeps a connection that sends nothing (up to 5 s).
fn idle_close_after(port: u16) -> Option<Duration> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let opened = Instant::now();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => Some(opened.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(opened.elapsed()),
        _ => None,
    }
}

#[test]
fn serve_closes_idle_connections_after_the_configured_keep_alive_timeout_and_a_reload_cannot_change_it()
 {
    let dir = std::env::temp_dir().join(format!("ferrolite-conn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (mut child, port) = common::spawn_serve(&config, &[], Stdio::piped(), Stdio::piped());
    let after = idle_close_after(port).expect("the idle connection still open after 5 s");
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(2),
        "{after:?}"
    );

    // A reload that changes the server's settings is refused; the running ones stay.
    std::fs::write(&config, CONFIG.replace("0.3", "30")).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let after = idle_close_after(port).expect("a refused reload changed keep_alive_timeout");
    assert!(after < Duration::from_secs(2), "{after:?}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("ferrolite_settings.server changed, and only a restart applies it"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
