//! The answer path of one call, for instruction counts under `valgrind --tool=callgrind`:
//! `tree` as ferrolite did it before answers passed as bytes (the upstream's answer parsed into
//! a `serde_json::Value`, the usage read from the tree, `model` set, the tree serialised again)
//! against `bytes` (checked once, usage read from the bytes, `model` spliced in).
//!
//! ```text
//! cargo build --release -p ferrolite-router --example answer_path
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/answer_path bytes 2k 1000
//! ```
//!
//! Arguments: `tree` or `bytes`; `2k`, `20k` (a whole chat completion of about that size) or
//! `chunk` (one streamed chunk: the gateway also drops its `usage`); the number of calls (0
//! gives the process's own cost, to subtract).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use bytes::Bytes;
use ferrolite_router::Body;
use ferrolite_types::Usage;

/// A chat completion whose content is about `size` bytes.
fn answer(size: usize) -> String {
    let sentence = "The quick brown fox \u{e9}t\u{e9} jumps over the lazy dog; \"quoted\"\n";
    let mut content = String::new();
    while content.len() < size {
        content.push_str(sentence);
    }
    let content = serde_json::to_string(&content).unwrap();
    format!(
        "{{\"id\":\"chatcmpl-AbC123xyz\",\"object\":\"chat.completion\",\"created\":1767225600,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{content},\"refusal\":null,\"annotations\":[]}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":523,\"completion_tokens\":412,\"total_tokens\":935,\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f33640a400\"}}"
    )
}

const CHUNK: &str = "{\"id\":\"chatcmpl-AbC123xyz\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f33640a400\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" jumps\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}";

/// The usage as the tree-based path read it.
fn usage_of(body: &serde_json::Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    if usage.is_null() {
        return None;
    }
    let count = |name: &str| usage.get(name).and_then(|v| v.as_u64());
    let mut out = Usage::new(
        count("prompt_tokens").unwrap_or(0),
        count("completion_tokens").unwrap_or(0),
    );
    if let Some(total) = count("total_tokens") {
        out.total_tokens = total;
    }
    Some(out)
}

/// Before: parse, read usage, set `model`, serialise (a stream chunk also loses `usage`).
fn tree(bytes: &[u8], chunk: bool) -> Vec<u8> {
    let mut body: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    black_box(usage_of(&body));
    if let Some(object) = body.as_object_mut() {
        object.insert("model".into(), "gpt-4o".into());
        if chunk {
            object.remove("usage");
        }
    }
    if chunk {
        format!("data: {body}\n\n").into_bytes()
    } else {
        serde_json::to_vec(&body).unwrap()
    }
}

/// After: check, read usage from the bytes, splice `model` in (and for a chunk drop `usage`).
fn spliced(bytes: Bytes, chunk: bool, model: &serde_json::value::RawValue) -> Bytes {
    let body = Body::parse(bytes).unwrap();
    black_box(body.usage());
    if chunk {
        let mut out = Vec::with_capacity(body.len() + 32);
        out.extend_from_slice(b"data: ");
        body.write_edited(&[("model", Some(model)), ("usage", None)], &mut out);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    } else {
        body.with_model("gpt-4o")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("bytes", String::as_str);
    let size = args.get(2).map_or("2k", String::as_str);
    let n: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (text, chunk) = match size {
        "20k" => (answer(20 * 1024 - 700), false),
        "chunk" => (CHUNK.to_string(), true),
        _ => (answer(2 * 1024 - 700), false),
    };
    let model = serde_json::value::RawValue::from_string("\"gpt-4o\"".into()).unwrap();
    let received = Bytes::from(text);
    let mut total = 0;
    for _ in 0..n {
        // Each call's answer arrives in its own buffer, as from the network.
        let incoming = Bytes::copy_from_slice(black_box(&received));
        total += match mode {
            "tree" => tree(&incoming, chunk).len(),
            _ => spliced(incoming, chunk, &model).len(),
        };
    }
    println!(
        "{mode} {size}: {} bytes in, {total} bytes out over {n} calls",
        received.len()
    );
}
