//! Protocol translation on a call's path (target: <= 5 µs added to a call for a 2 KB request):
//! a 2 KB request translated from the caller's protocol to the canonical chat form and from it
//! to each upstream protocol, and a canonical answer translated back to the caller's protocol.
//!
//! Run: `cargo bench -p ferrolite-benches --bench translate`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite::protocols::{anthropic, converse, gemini, responses};
use serde_json::{Value, json};

/// A ~2 KB conversation: a system prompt, three turns, a tool and a tool call with its result.
fn chat_request() -> Value {
    json!({
        "model": "claude",
        "max_tokens": 512,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a careful assistant. ".repeat(16)},
            {"role": "user", "content": "Where is the weather worse today, Paris or Berlin? ".repeat(9)},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Paris: rain, 9 C, wind 30 km/h. ".repeat(4)},
            {"role": "user", "content": "And what should I wear there? ".repeat(14)},
        ],
        "tools": [{"type": "function", "function": {
            "name": "weather", "description": "The weather in a city today.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    })
}

/// A canonical answer of ~600 bytes.
fn chat_answer() -> Value {
    json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_767_225_600,
        "model": "claude-sonnet-4-5",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "word ".repeat(80)}}],
        "usage": {"prompt_tokens": 500, "completion_tokens": 80, "total_tokens": 580},
    })
}

fn translate(c: &mut Criterion) {
    let chat = chat_request();
    assert!(
        chat.to_string().len() >= 2_000,
        "{}",
        chat.to_string().len()
    );
    let messages = anthropic::upstream::request_from_chat(&chat, "claude").expect("to Messages");
    let answer = chat_answer();
    let native_answer = anthropic::client::answer_from_chat(&answer).expect("to Messages");
    let responses_request = json!({
        "model": "claude",
        "instructions": "You are a careful assistant. ".repeat(16),
        "input": [
            {"role": "user", "content": "Where is the weather worse today, Paris or Berlin? ".repeat(9)},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Paris: rain, 9 C, wind 30 km/h. ".repeat(4)},
            {"role": "user", "content": "And what should I wear there? ".repeat(14)},
        ],
        "tools": [{"type": "function", "name": "weather", "description": "The weather in a city today.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "max_output_tokens": 512,
    });

    let mut group = c.benchmark_group("translate_2kb");
    group.bench_function("messages_in_request_to_chat", |b| {
        b.iter(|| anthropic::client::request_to_chat(black_box(&messages)))
    });
    group.bench_function("responses_in_request_to_chat", |b| {
        b.iter(|| responses::request_to_chat(black_box(&responses_request)))
    });
    group.bench_function("chat_to_anthropic_request", |b| {
        b.iter(|| anthropic::upstream::request_from_chat(black_box(&chat), "claude-sonnet-4-5"))
    });
    group.bench_function("chat_to_converse_request", |b| {
        b.iter(|| converse::request_from_chat(black_box(&chat)))
    });
    group.bench_function("chat_to_gemini_request", |b| {
        b.iter(|| gemini::request_from_chat(black_box(&chat)))
    });
    group.bench_function("anthropic_answer_to_chat", |b| {
        b.iter(|| anthropic::upstream::answer_to_chat(black_box(&native_answer), "claude"))
    });
    group.bench_function("chat_answer_to_messages", |b| {
        b.iter(|| anthropic::client::answer_from_chat(black_box(&answer)))
    });
    group.bench_function("chat_answer_to_responses", |b| {
        b.iter(|| responses::answer_from_chat(black_box(&answer), black_box(&responses_request)))
    });
    // A Messages client to a Bedrock deployment: in, out, and the answer back (the answer's
    // own protocol side measured by the Anthropic pair above).
    group.bench_function("messages_to_converse_round", |b| {
        b.iter(|| {
            let chat = anthropic::client::request_to_chat(black_box(&messages)).expect("in");
            let out = converse::request_from_chat(&chat).expect("out");
            let back = anthropic::client::answer_from_chat(black_box(&answer)).expect("back");
            (out, back)
        })
    });
    group.finish();
}

criterion_group!(benches, translate);
criterion_main!(benches);
