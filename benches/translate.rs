//! Protocol translation on a call's path (target: <= 5 µs added to a call for a 2 KB request).
//!
//! Two groups:
//!
//! - `translate_2kb`: each translator alone, `Value` in and `Value` out (a 2 KB request from
//!   the caller's protocol to the canonical chat form and from it to each upstream protocol, a
//!   canonical answer back to the caller's protocol).
//! - `translate_2kb_call`: what a call does with its bodies, bytes in to bytes out, translated
//!   and not. A call whose caller and deployment speak one protocol parses the caller's JSON
//!   once and writes the canonical request to bytes for the upstream (`request_untranslated`),
//!   and checks the upstream's answer once and copies its bytes to the caller
//!   (`answer_untranslated`). A translated call does the same with a translation in between:
//!   the caller's bytes parsed, translated, the upstream's request written (the HTTP backends
//!   write it straight from the canonical request); the upstream's answer parsed, translated,
//!   written (the gateway reads a canonical answer for a client of another protocol from its
//!   bytes, `answer_bytes_from_chat_bytes`). **What translation adds to a call is a translated
//!   row less its untranslated one**: `request_*` rows less `request_untranslated`, `answer_*` rows less
//!   `answer_untranslated` (docs/benchmarks.md has the numbers).
//!
//! Run: `cargo bench -p ferrolite-benches --bench translate`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite::protocols::{anthropic, converse, gemini, responses};
use ferrolite::router::Body;
use serde_json::{Value, json};

/// The allocator the `ferrolite` binary ships with (`crates/cli/src/main.rs`): what a call
/// allocates costs here what it costs in `ferrolite serve`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

    let counting = counting();
    if counting.is_none() {
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
            b.iter(|| {
                responses::answer_from_chat(black_box(&answer), black_box(&responses_request))
            })
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

    // Bytes in to bytes out, as a call does it (see the module documentation).
    let chat_bytes = serde_json::to_vec(&chat).expect("chat bytes");
    let messages_bytes = serde_json::to_vec(&messages).expect("messages bytes");
    let responses_bytes = serde_json::to_vec(&responses_request).expect("responses bytes");
    let answer_bytes = serde_json::to_vec(&answer).expect("answer bytes");
    let native_answer_bytes = serde_json::to_vec(&native_answer).expect("native answer bytes");
    let converse_answer_bytes = serde_json::to_vec(&json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "word ".repeat(80)}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 500, "outputTokens": 80, "totalTokens": 580},
    }))
    .expect("converse answer bytes");
    let parse = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).expect("JSON");
    let mut group = c.benchmark_group("translate_2kb_call");
    row(&mut group, &counting, "request_untranslated", || {
        serde_json::to_vec(&parse(black_box(&chat_bytes))).expect("out")
    });
    row(&mut group, &counting, "request_messages_to_chat", || {
        let chat = anthropic::client::request_to_chat(&parse(black_box(&messages_bytes)));
        serde_json::to_vec(&chat.expect("in")).expect("out")
    });
    row(&mut group, &counting, "request_responses_to_chat", || {
        let chat = responses::request_to_chat(&parse(black_box(&responses_bytes)));
        serde_json::to_vec(&chat.expect("in")).expect("out")
    });
    row(&mut group, &counting, "request_chat_to_anthropic", || {
        let chat = parse(black_box(&chat_bytes));
        anthropic::upstream::request_bytes_from_chat(&chat, "claude-sonnet-4-5", false)
            .expect("out")
    });
    row(&mut group, &counting, "request_chat_to_converse", || {
        converse::request_bytes_from_chat(&parse(black_box(&chat_bytes))).expect("out")
    });
    row(&mut group, &counting, "request_chat_to_gemini", || {
        let chat = parse(black_box(&chat_bytes));
        gemini::request_bytes_from_chat(&chat, "gemini-2.5-flash").expect("out")
    });
    row(
        &mut group,
        &counting,
        "request_messages_to_converse",
        || {
            let chat = anthropic::client::request_to_chat(&parse(black_box(&messages_bytes)));
            converse::request_bytes_from_chat(&chat.expect("in")).expect("out")
        },
    );
    row(&mut group, &counting, "answer_untranslated", || {
        let body = Body::parse(black_box(answer_bytes.clone())).expect("answer");
        body.as_bytes().to_vec()
    });
    // As the Anthropic backend reads an answer: read borrowed from its bytes, written as the
    // canonical answer's bytes, which become the call's body.
    row(&mut group, &counting, "answer_anthropic_to_chat", || {
        let chat = anthropic::upstream::answer_bytes_to_chat_bytes(
            black_box(&native_answer_bytes),
            "claude",
        )
        .expect("answer");
        Body::parse(chat).expect("chat").as_bytes().to_vec()
    });
    row(&mut group, &counting, "answer_chat_to_messages", || {
        let body = Body::parse(black_box(answer_bytes.clone())).expect("answer");
        anthropic::client::answer_bytes_from_chat_bytes(body.as_bytes(), "claude").expect("out")
    });
    row(&mut group, &counting, "answer_chat_to_responses", || {
        let body = Body::parse(black_box(answer_bytes.clone())).expect("answer");
        responses::answer_bytes_from_chat_bytes(body.as_bytes(), &responses_request, "claude")
            .expect("out")
    });
    // A Messages client's answer from a Bedrock deployment: the Converse answer to the
    // canonical one (the backend), and that to a Messages answer (the gateway).
    row(&mut group, &counting, "answer_converse_to_messages", || {
        let chat = converse::answer_bytes_to_chat_bytes(
            black_box(&converse_answer_bytes),
            "anthropic.claude",
            false,
            "chatcmpl-1",
        )
        .expect("answer");
        let body = Body::parse(chat).expect("chat");
        anthropic::client::answer_bytes_from_chat_bytes(body.as_bytes(), "claude").expect("out")
    });
    group.finish();
}

/// `FERROLITE_BENCH_COUNT=row:N`: instead of timing, runs the `translate_2kb_call` row `row`
/// `N` times and exits, for a count of its instructions that a shared machine's noise does not
/// move (`perf stat -e instructions:u`, less the same with `N` = 0, over `N`).
struct Counting {
    row: String,
    times: u64,
}

fn counting() -> Option<Counting> {
    let spec = std::env::var("FERROLITE_BENCH_COUNT").ok()?;
    let (row, times) = spec.split_once(':').expect("FERROLITE_BENCH_COUNT=row:N");
    Some(Counting {
        row: row.to_string(),
        times: times.parse().expect("a number of runs"),
    })
}

/// A row of `group`: timed, or run as `counting` says.
fn row<R>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    counting: &Option<Counting>,
    name: &str,
    mut f: impl FnMut() -> R,
) {
    match counting {
        Some(counting) if counting.row == name => {
            for _ in 0..counting.times {
                black_box(f());
            }
        }
        Some(_) => {}
        None => {
            group.bench_function(name, |b| b.iter(&mut f));
        }
    }
}

criterion_group!(benches, translate);
criterion_main!(benches);
