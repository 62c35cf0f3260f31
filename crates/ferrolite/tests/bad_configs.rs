//! The bad-config corpus: every file under tests/bad_configs/ starts with `# expect: ` and the
//! exact error the file must give — path, message with the value, and position.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrolite::{Config, build_from_config};

/// The file's error: from loading, else from building the router it describes.
async fn error_of(text: &str) -> String {
    match Config::from_yaml(text) {
        Err(e) => e.to_string(),
        Ok(config) => match build_from_config(config, None).await {
            Err(e) => e.to_string(),
            Ok(_) => "(no error)".to_string(),
        },
    }
}

#[tokio::test]
async fn every_bad_config_gives_its_exact_error() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_configs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "{} bad configs", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or("(no expectation)");
        let got = error_of(&text).await;
        if got != expected {
            wrong.push(format!(
                "{}\n  expected: {expected}\n  got:      {got}",
                file.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
