//! Anthropic's Messages API both ways: a canonical request or answer of what Messages can
//! express survives the trip to Messages and back (property tests), each mapping LiteLLM makes
//! holds, and what Messages (or the chat form) cannot express is refused naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ferrolite_protocols::anthropic::{client, upstream};
use ferrolite_protocols::sse::SseEvent;
use ferrolite_types::ErrorClass;
use proptest::prelude::*;
use serde_json::{Value, json};

// ---- generators: the canonical requests Messages can express ----

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,7}"
}

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9 ,.!?]{0,30}"
}

fn cache_control() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!({"type": "ephemeral"}))),
        Just(Some(json!({"type": "ephemeral", "ttl": "1h"}))),
    ]
}

fn with_cache(mut part: Value, cache: Option<Value>) -> Value {
    if let Some(cache) = cache {
        part["cache_control"] = cache;
    }
    part
}

fn user_part() -> impl Strategy<Value = Value> {
    prop_oneof![
        (text(), cache_control()).prop_map(|(t, c)| with_cache(json!({"type": "text", "text": t}), c)),
        (
            prop_oneof![Just("image/png"), Just("image/jpeg"), Just("image/webp")],
            "[A-Za-z0-9+/]{4,40}={0,2}",
            cache_control()
        )
            .prop_map(|(media, data, c)| with_cache(
                json!({"type": "image_url", "image_url": {"url": format!("data:{media};base64,{data}")}}),
                c
            )),
        (word(), cache_control()).prop_map(|(w, c)| with_cache(
            json!({"type": "image_url", "image_url": {"url": format!("https://img.example/{w}.png")}}),
            c
        )),
    ]
}

fn user_message() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"role": "user", "content": t})),
        prop::collection::vec(user_part(), 1..4)
            .prop_map(|parts| json!({"role": "user", "content": parts})),
    ]
}

fn arguments() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        word(),
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            text().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()).to_string())
}

fn tool_call() -> impl Strategy<Value = Value> {
    ("[a-zA-Z0-9]{6,12}", word(), arguments(), cache_control()).prop_map(|(id, name, args, c)| {
        with_cache(
            json!({"id": format!("toolu_{id}"), "type": "function",
                   "function": {"name": format!("fn_{name}"), "arguments": args}}),
            c,
        )
    })
}

/// An assistant message, and the tool messages answering its calls.
fn assistant_round() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        text().prop_map(|t| vec![json!({"role": "assistant", "content": t})]),
        (text(), prop_oneof![Just(json!({"type": "ephemeral"}))]).prop_map(|(t, c)| vec![
            json!({"role": "assistant", "content": [{"type": "text", "text": t, "cache_control": c}]})
        ]),
        (
            prop::option::of(text()),
            prop::collection::vec(tool_call(), 1..3),
            prop::collection::vec((prop_oneof![
                text().prop_map(Value::from),
                prop::collection::vec(
                    (text(), cache_control()).prop_map(|(t, c)| with_cache(json!({"type": "text", "text": t}), c)),
                    1..3
                ).prop_map(Value::from),
            ], cache_control()), 2),
            text(),
        )
            .prop_map(|(content, calls, results, after)| {
                let mut round = vec![json!({
                    "role": "assistant",
                    "content": content.map_or(Value::Null, Value::from),
                    "tool_calls": calls,
                })];
                for (call, (result, cache)) in calls.iter().zip(results.iter().cycle()) {
                    round.push(with_cache(
                        json!({"role": "tool", "tool_call_id": call["id"], "content": result}),
                        cache.clone(),
                    ));
                }
                round.push(json!({"role": "assistant", "content": after}));
                round
            }),
    ]
}

fn tool() -> impl Strategy<Value = Value> {
    (
        word(),
        prop::option::of(text()),
        prop::collection::vec(word(), 0..3),
        cache_control(),
    )
        .prop_map(|(name, description, props, c)| {
            let properties: serde_json::Map<String, Value> = props
                .into_iter()
                .map(|p| (p, json!({"type": "string"})))
                .collect();
            let mut function = json!({"name": format!("fn_{name}"),
                "parameters": {"type": "object", "properties": properties}});
            if let Some(d) = description {
                function["description"] = d.into();
            }
            with_cache(json!({"type": "function", "function": function}), c)
        })
}

fn canonical_request() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            prop_oneof![
                text().prop_map(|t| json!({"role": "system", "content": t})),
                text().prop_map(|t| json!({"role": "system", "content": [
                    {"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}]})),
            ],
            0..3,
        ),
        // Rounds of a user message and the assistant's answer; the last may be unanswered.
        (
            prop::collection::vec((user_message(), assistant_round()), 0..3),
            user_message(),
            any::<bool>(),
        ),
        prop::collection::vec(tool(), 0..3),
        prop::option::of((
            prop_oneof![
                Just(json!("auto")),
                Just(json!("none")),
                Just(json!("required")),
                word().prop_map(
                    |w| json!({"type": "function", "function": {"name": format!("fn_{w}")}})
                ),
            ],
            prop::option::of(any::<bool>()),
        )),
        (
            1u64..8192,
            prop::option::of(prop::collection::vec(text(), 1..3)),
            prop::option::of(prop_oneof![Just(0.0), Just(0.5), Just(1.0)]),
            prop::option::of(prop_oneof![Just(0.25), Just(0.9)]),
            prop::option::of(1u64..100),
            prop::option::of("[a-z][a-z0-9-]{2,12}"),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(system, rounds, tools, choice, (max, stop, temp, top_p, top_k, user, stream))| {
                let mut messages = system;
                let (rounds, last, answered) = rounds;
                for (user, assistant) in rounds {
                    messages.push(user);
                    messages.extend(assistant);
                }
                if answered || messages.iter().all(|m| m["role"] == "system") {
                    messages.push(last);
                }
                let mut tools = tools;
                if tools.is_empty() && messages.iter().any(|m| m["role"] == "tool") {
                    // Anthropic wants the tools declared when the messages hold tool calls.
                    tools.push(json!({"type": "function", "function": {"name": "fn_lookup",
                        "parameters": {"type": "object", "properties": {}}}}));
                }
                let mut request =
                    json!({"model": "claude-test", "messages": messages, "max_tokens": max});
                if !tools.is_empty() {
                    request["tools"] = tools.into();
                }
                if let Some((choice, parallel)) = choice {
                    let none = choice == json!("none");
                    request["tool_choice"] = choice;
                    if let (Some(parallel), false) = (parallel, none) {
                        request["parallel_tool_calls"] = parallel.into();
                    }
                }
                if let Some(stop) = stop {
                    request["stop"] = stop.into();
                }
                if let Some(t) = temp {
                    request["temperature"] = t.into();
                }
                if let Some(p) = top_p {
                    request["top_p"] = p.into();
                }
                if let Some(k) = top_k {
                    request["top_k"] = k.into();
                }
                if let Some(user) = user {
                    request["user"] = user.into();
                }
                if stream {
                    request["stream"] = true.into();
                }
                request
            },
        )
}

fn canonical_answer() -> impl Strategy<Value = Value> {
    (
        "[a-zA-Z0-9]{8,16}",
        prop_oneof![
            text().prop_map(|t| (Value::from(t), Vec::new())),
            Just((Value::from(""), Vec::new())),
            Just((Value::Null, Vec::new())),
            (
                prop::option::of(text()),
                prop::collection::vec(tool_call(), 1..3)
            )
                .prop_map(|(t, calls)| {
                    let calls = calls
                        .into_iter()
                        .map(|mut c| {
                            c.as_object_mut().unwrap().remove("cache_control");
                            c
                        })
                        .collect();
                    (t.map_or(Value::Null, Value::from), calls)
                }),
        ],
        prop_oneof![
            Just("stop"),
            Just("length"),
            Just("tool_calls"),
            Just("content_filter")
        ],
        (0u64..5000, 0u64..5000, 0u64..5000, 0u64..5000),
    )
        .prop_map(
            |(id, (content, calls), finish, (input, read, created, output))| {
                let mut message = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    message["tool_calls"] = calls.into();
                }
                let prompt = input + read + created;
                json!({
                    "id": format!("msg_{id}"),
                    "object": "chat.completion",
                    "created": 1_700_000_000u64,
                    "model": "claude-test",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": output,
                        "total_tokens": prompt + output,
                        "prompt_tokens_details": {"cached_tokens": read},
                        "cache_read_input_tokens": read,
                        "cache_creation_input_tokens": created,
                    },
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_request_messages_can_express_survives_the_trip_to_messages_and_back(request in canonical_request()) {
        let messages = upstream::request_from_chat(&request, "claude-test").unwrap();
        // Anthropic's rules hold on the way out: roles alternate, max_tokens is set.
        let turns = messages["messages"].as_array().unwrap();
        for pair in turns.windows(2) {
            prop_assert_ne!(&pair[0]["role"], &pair[1]["role"]);
        }
        prop_assert!(messages["max_tokens"].as_u64().unwrap() > 0);
        // The bytes the backend sends are that request, with `stream` as the call is.
        for stream in [false, true] {
            let bytes = upstream::request_bytes_from_chat(&request, "claude-test", stream).unwrap();
            let mut expected = messages.clone();
            if stream {
                expected["stream"] = json!(true);
            } else {
                expected.as_object_mut().unwrap().remove("stream");
            }
            prop_assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
        }
        let back = client::request_to_chat(&messages).unwrap();
        prop_assert_eq!(back, request);
    }

    #[test]
    fn an_answer_messages_can_express_survives_the_trip_to_messages_and_back(answer in canonical_answer()) {
        let messages = client::answer_from_chat(&answer).unwrap();
        let mut back = upstream::answer_to_chat(&messages, "claude-test").unwrap();
        // The bytes the gateway and the backend send are those answers.
        let bytes = client::answer_bytes_from_chat(&answer, "asked").unwrap();
        let mut expected = messages.clone();
        expected["model"] = json!("asked");
        prop_assert_eq!(&serde_json::from_slice::<Value>(&bytes).unwrap(), &expected);
        // And from the canonical answer's bytes, as the gateway reads it: the same answer.
        let answer_bytes = serde_json::to_vec(&answer).unwrap();
        let bytes = client::answer_bytes_from_chat_bytes(&answer_bytes, "asked").unwrap();
        prop_assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);
        let bytes = upstream::answer_bytes_to_chat(&messages, "claude-test").unwrap();
        let mut written: Value = serde_json::from_slice(&bytes).unwrap();
        written["created"] = back["created"].clone();
        prop_assert_eq!(&written, &back);
        // Read from the Messages answer's bytes, as the backend reads it: the same answer.
        let messages_bytes = serde_json::to_vec(&messages).unwrap();
        let bytes = upstream::answer_bytes_to_chat_bytes(&messages_bytes, "claude-test").unwrap();
        let mut written: Value = serde_json::from_slice(&bytes).unwrap();
        written["created"] = back["created"].clone();
        prop_assert_eq!(&written, &back);
        back["created"] = answer["created"].clone();
        prop_assert_eq!(back, answer);
    }
}

// ---- the mappings, one by one ----

fn refused_field(result: Result<Value, ferrolite_protocols::TranslateError>) -> String {
    result.expect_err("refused").field
}

fn chat(extra: Value) -> Value {
    let mut request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    request
}

#[test]
fn max_tokens_defaults_to_litellms_default_and_max_completion_tokens_wins() {
    let out = upstream::request_from_chat(&chat(json!({})), "m").unwrap();
    assert_eq!(out["max_tokens"], upstream::DEFAULT_MAX_TOKENS);
    assert_eq!(out["max_tokens"], 4096);
    let out = upstream::request_from_chat(
        &chat(json!({"max_tokens": 10, "max_completion_tokens": 20})),
        "m",
    )
    .unwrap();
    assert_eq!(out["max_tokens"], 20);
}

#[test]
fn with_thinking_on_and_no_max_tokens_max_tokens_leaves_room_above_the_budget() {
    let out = upstream::request_from_chat(&chat(json!({"reasoning_effort": "high"})), "m").unwrap();
    assert_eq!(out["thinking"]["budget_tokens"], 4096);
    assert_eq!(out["max_tokens"], 4096 + 256);
    let out = upstream::request_from_chat(
        &chat(json!({"thinking": {"type": "enabled", "budget_tokens": 10000}})),
        "m",
    )
    .unwrap();
    assert_eq!(out["thinking"]["budget_tokens"], 10000);
    assert_eq!(out["max_tokens"], 10256);
    let out = upstream::request_from_chat(&chat(json!({"reasoning_effort": "none"})), "m").unwrap();
    assert!(out.get("thinking").is_none());
    assert_eq!(out["max_tokens"], 4096);
}

#[test]
fn tool_choice_and_parallel_tool_calls_map_as_litellm_maps_them() {
    let out = upstream::request_from_chat(&chat(json!({"tool_choice": "required"})), "m").unwrap();
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
    let out =
        upstream::request_from_chat(&chat(json!({"parallel_tool_calls": false})), "m").unwrap();
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let out = upstream::request_from_chat(
        &chat(json!({"tool_choice": {"type": "function", "function": {"name": "f"}}})),
        "m",
    )
    .unwrap();
    assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "f"}));
}

#[test]
fn consecutive_tool_results_are_one_user_turn_and_a_following_user_message_joins_it() {
    let request = json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"x\"}"}},
            {"id": "b", "type": "function", "function": {"name": "w", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "a", "content": "sun"},
        {"role": "tool", "tool_call_id": "b", "content": "rain"},
        {"role": "user", "content": "thanks"},
    ], "tools": [{"type": "function", "function": {"name": "w"}}]});
    let out = upstream::request_from_chat(&request, "m").unwrap();
    let turns = out["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1]["content"][0]["input"], json!({"c": "x"}));
    assert_eq!(turns[1]["content"][1]["input"], json!({}));
    assert_eq!(
        turns[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "sun"},
            {"type": "tool_result", "tool_use_id": "b", "content": "rain"},
            {"type": "text", "text": "thanks"},
        ]})
    );
}

#[test]
fn system_messages_become_system_blocks_and_message_cache_control_lands_on_the_last_block() {
    let request = json!({"model": "m", "messages": [
        {"role": "system", "content": "be brief", "cache_control": {"type": "ephemeral"}},
        {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}},
    ]});
    let out = upstream::request_from_chat(&request, "m").unwrap();
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        out["messages"][0]["content"],
        json!([{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}])
    );
}

#[test]
fn response_format_is_a_forced_tool_and_its_call_comes_back_as_content() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let out = upstream::request_from_chat(
        &chat(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": schema}}})),
        "m",
    )
    .unwrap();
    assert_eq!(out["tools"][0]["name"], upstream::RESPONSE_FORMAT_TOOL);
    assert_eq!(out["tools"][0]["input_schema"], schema);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "json_tool_call"})
    );
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "tool_use", "id": "t", "name": "json_tool_call", "input": {"a": 1}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2}});
    let back = upstream::answer_to_chat(&answer, "m").unwrap();
    assert_eq!(back["choices"][0]["message"]["content"], "{\"a\":1}");
    assert!(back["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(back["choices"][0]["finish_reason"], "stop");
}

#[test]
fn reasoning_effort_is_a_thinking_budget_and_thinking_comes_back_as_reasoning() {
    let out =
        upstream::request_from_chat(&chat(json!({"reasoning_effort": "medium"})), "m").unwrap();
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    let back = client::request_to_chat(&json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "enabled", "budget_tokens": 12000}}))
    .unwrap();
    assert_eq!(back["reasoning_effort"], "high");
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "4"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}});
    let back = upstream::answer_to_chat(&answer, "m").unwrap();
    assert_eq!(back["choices"][0]["message"]["reasoning_content"], "hmm");
    assert_eq!(back["choices"][0]["message"]["content"], "4");
}

#[test]
fn usage_counts_cache_reads_and_writes_in_the_prompt_as_litellm_does() {
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 1000, "output_tokens": 7}});
    let usage = &upstream::answer_to_chat(&answer, "m").unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 1110);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(usage["completion_tokens"], 7);
    assert_eq!(usage["total_tokens"], 1117);
}

#[test]
fn a_user_that_anthropic_would_refuse_as_user_id_is_not_sent() {
    let out = upstream::request_from_chat(&chat(json!({"user": "ada@example.com"})), "m").unwrap();
    assert!(out.get("metadata").is_none());
    let out = upstream::request_from_chat(&chat(json!({"user": "user-7"})), "m").unwrap();
    assert_eq!(out["metadata"], json!({"user_id": "user-7"}));
}

// ---- refusals, each naming its field ----

#[test]
fn what_messages_cannot_express_is_refused_naming_the_field() {
    let cases = [
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"logit_bias": {"1": 2}}), "logit_bias"),
        (json!({"presence_penalty": 0.5}), "presence_penalty"),
        (json!({"seed": 3}), "seed"),
        (json!({"reasoning_effort": "ultra"}), "reasoning_effort"),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function",
                "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
    ];
    for (extra, field) in cases {
        assert_eq!(
            refused_field(upstream::request_from_chat(&chat(extra.clone()), "m")),
            field,
            "{extra}"
        );
    }
    assert_eq!(
        refused_field(upstream::request_from_chat(&json!({"model": "m"}), "m")),
        "messages"
    );
    let calls_without_tools = json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "r"}]});
    assert_eq!(
        refused_field(upstream::request_from_chat(&calls_without_tools, "m")),
        "tools"
    );
}

#[test]
fn what_the_chat_form_cannot_express_is_refused_naming_the_field() {
    let base = |extra: Value| {
        let mut request = json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        request
    };
    let cases = [
        (
            json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools[0].type",
        ),
        (json!({"container": "c1"}), "container"),
        (
            json!({"metadata": {"user_id": "u", "team": "t"}}),
            "metadata.team",
        ),
        (json!({"thinking": {"type": "sometimes"}}), "thinking.type"),
        (
            json!({"tool_choice": {"type": "maybe"}}),
            "tool_choice.type",
        ),
        (
            json!({"system": [{"type": "image", "source": {}}]}),
            "system[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}),
            "messages[0].content[0].source",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "search_result"}]}]}),
            "messages[0].content[0].type",
        ),
    ];
    for (extra, field) in cases {
        assert_eq!(
            refused_field(client::request_to_chat(&base(extra.clone()))),
            field,
            "{extra}"
        );
    }
    let bad_arguments = json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{"}}]}}]});
    assert_eq!(
        refused_field(client::answer_from_chat(&bad_arguments)),
        "choices[0].message.tool_calls[0].function.arguments"
    );
}

// ---- streams ----

fn event(data: Value) -> SseEvent {
    SseEvent {
        event: data["type"].as_str().map(str::to_string),
        data: data.to_string(),
    }
}

/// A Messages stream as Anthropic sends it: a text block, then a tool call in pieces.
fn anthropic_stream() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_9", "type": "message", "role": "assistant",
            "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn a_messages_stream_becomes_chunks_ending_with_the_usage() {
    let mut chunks = upstream::ChatChunks::new("fallback-name");
    let mut out = Vec::new();
    for data in anthropic_stream() {
        out.extend(chunks.push(&event(data)).unwrap());
    }
    assert!(chunks.is_done());
    assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        out.iter()
            .all(|c| c["model"] == "claude-x" && c["id"] == "msg_9")
    );
    let text: String = out
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    let arguments: String = out
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"city\": \"Paris\"}");
    let finish: Vec<&Value> = out
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let last = out.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 25);
    assert_eq!(last["usage"]["completion_tokens"], 15);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
}

#[test]
fn an_error_event_is_an_error_naming_error_and_classified_by_its_type() {
    let mut chunks = upstream::ChatChunks::new("m");
    let data =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let error = chunks.push(&event(data.clone())).unwrap_err();
    assert_eq!(error.field, "error");
    assert_eq!(
        upstream::error_class(200, None, &data.to_string()),
        ErrorClass::ServerError { status: 529 }
    );
}

#[test]
fn chunks_become_a_messages_stream_and_back_without_losing_text_tools_or_usage() {
    // Messages events -> canonical chunks -> Messages events again.
    let mut chunks = upstream::ChatChunks::new("m");
    let mut events = client::EventsFromChat::new("claude-x");
    let mut out = Vec::new();
    for data in anthropic_stream() {
        for chunk in chunks.push(&event(data)).unwrap() {
            out.extend(events.push(&chunk).unwrap());
        }
    }
    out.extend(events.finish());
    let kinds: Vec<&str> = out.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(out[1]["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(
        out[5]["content_block"],
        json!({"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}})
    );
    assert_eq!(out[9]["delta"]["stop_reason"], "tool_use");
    assert_eq!(out[9]["usage"]["output_tokens"], 15);
    assert_eq!(out[9]["usage"]["input_tokens"], 20);
    assert_eq!(out[9]["usage"]["cache_read_input_tokens"], 5);
    // The events re-read by the upstream translator give the same chunks' content.
    let mut again = upstream::ChatChunks::new("m");
    let mut text = String::new();
    for data in &out {
        for chunk in again.push(&event(data.clone())).unwrap() {
            text.push_str(
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or(""),
            );
        }
    }
    assert_eq!(text, "Let me check.");
}

#[test]
fn a_stream_that_ends_without_a_finish_reason_is_closed_by_finish() {
    let mut events = client::EventsFromChat::new("m");
    let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"}, "finish_reason": null}]});
    let out = events.push(&chunk).unwrap();
    assert_eq!(out[0]["type"], "message_start");
    assert_eq!(out[0]["message"]["id"], "msg_1");
    let end = events.finish();
    let kinds: Vec<&str> = end.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(end[1]["delta"]["stop_reason"], "end_turn");
    assert!(events.finish().is_empty(), "finish gives its events once");
}

#[test]
fn finish_without_any_chunk_gives_nothing() {
    // A stream passed through in Messages form never reaches the translator; the gateway still
    // calls finish at its end.
    assert!(client::EventsFromChat::new("m").finish().is_empty());
}

// ---- errors ----

#[test]
fn anthropic_errors_are_classified_as_litellm_classes_them() {
    let body = |kind: &str, message: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
    };
    assert_eq!(
        upstream::error_class(
            400,
            None,
            &body(
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum"
            )
        ),
        ErrorClass::ContextWindowExceeded
    );
    assert_eq!(
        upstream::error_class(529, None, &body("overloaded_error", "Overloaded")),
        ErrorClass::ServerError { status: 529 }
    );
    assert_eq!(
        upstream::error_class(
            429,
            Some(Duration::from_secs(7)),
            &body("rate_limit_error", "slow down")
        ),
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        upstream::error_class(
            401,
            None,
            &body("authentication_error", "invalid x-api-key")
        ),
        ErrorClass::Authentication
    );
    assert_eq!(
        upstream::error_class(
            400,
            None,
            &body(
                "invalid_request_error",
                "Output blocked by content filtering policy"
            )
        ),
        ErrorClass::ContentPolicy
    );
    assert_eq!(
        upstream::error_class(
            400,
            None,
            &body(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API."
            )
        ),
        ErrorClass::RateLimited { retry_after: None }
    );
    assert_eq!(
        upstream::error_class(
            400,
            None,
            &body("invalid_request_error", "messages: roles must alternate")
        ),
        ErrorClass::BadRequest { status: 400 }
    );
}

#[test]
fn error_bodies_use_anthropics_error_type_for_each_status() {
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ] {
        let body = client::error_body(status, "nope");
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": kind, "message": "nope"}})
        );
        if status != 503 {
            assert_eq!(upstream::status_of_error_type(kind), status, "{kind}");
        }
    }
}

/// Regression: a canonical stream from Bedrock carries a thinking block's signature (and
/// redacted thinking) in `delta.thinking_blocks`; a Messages client must get them as
/// `signature_delta` and a `redacted_thinking` block, or its next turn sends `signature: ""`
/// back and Bedrock refuses it. The signature's block goes back to Converse with it, and an
/// empty signature goes as none.
#[test]
fn a_streamed_thinking_signature_reaches_a_messages_client_and_goes_back_upstream() {
    let chunk = |delta: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    };
    let mut events = client::EventsFromChat::new("claude");
    let mut out = Vec::new();
    out.extend(
        events
            .push(&chunk(
                json!({"role": "assistant", "reasoning_content": "Let me think."}),
            ))
            .unwrap(),
    );
    out.extend(
        events
            .push(&chunk(json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig-1"}]})))
            .unwrap(),
    );
    out.extend(
        events
            .push(&chunk(
                json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]}),
            ))
            .unwrap(),
    );
    out.extend(events.push(&chunk(json!({"content": "Answer."}))).unwrap());
    out.extend(events.finish());
    let signature = out
        .iter()
        .find(|e| e["delta"]["type"] == "signature_delta")
        .expect("a signature_delta");
    assert_eq!(signature["delta"]["signature"], "sig-1");
    let thinking_index = out
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "thinking")
        .unwrap()["index"]
        .clone();
    assert_eq!(
        signature["index"], thinking_index,
        "the signature closes the thinking block"
    );
    assert!(
        out.iter().any(|e| e["type"] == "content_block_start"
            && e["content_block"] == json!({"type": "redacted_thinking", "data": "opaque"})),
        "{out:?}"
    );
    // Indices of the blocks started are 0, 1, 2 in order (thinking, redacted, text).
    let starts: Vec<u64> = out
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![0, 1, 2]);

    // Back to Bedrock: a signed thinking block keeps its signature, an empty one has none.
    let next = |signature: &str| {
        json!({"model": "m", "max_tokens": 64, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Answer.", "thinking_blocks": [
                {"type": "thinking", "thinking": "Let me think.", "signature": signature}]},
            {"role": "user", "content": "and?"},
        ]})
    };
    let converse = ferrolite_protocols::converse::request_from_chat(&next("sig-1")).unwrap();
    let reasoning = &converse["messages"][1]["content"][0]["reasoningContent"]["reasoningText"];
    assert_eq!(reasoning["signature"], "sig-1", "{converse}");
    let converse = ferrolite_protocols::converse::request_from_chat(&next("")).unwrap();
    let reasoning = &converse["messages"][1]["content"][0]["reasoningContent"]["reasoningText"];
    assert!(reasoning.get("signature").is_none(), "{converse}");
}

/// The gateway reads a canonical answer from its bytes (`answer_bytes_from_chat_bytes`): for
/// the parts the property test's answers leave out (thinking blocks passed through, content as
/// a list of parts, escaped text, a tool call without arguments), the same Messages answer as
/// from the `Value`.
#[test]
fn an_answer_read_from_its_bytes_is_the_answer_read_from_its_value() {
    let answers = [
        json!({
            "id": "chatcmpl-1", "model": "m", "created": 1,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "a \"quoted\"\nline"}, {"type": "text", "text": "é😀"}],
                "thinking_blocks": [{"type": "thinking", "thinking": "hmm\t", "signature": "s\\1"},
                                    {"type": "redacted_thinking", "data": "xyz"}],
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{\"a\": [1, 2.5, null]}"}},
                ],
            }}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "cache_creation_input_tokens": 3,
                      "prompt_tokens_details": {"cached_tokens": 4}},
        }),
        json!({
            "id": "x", "choices": [{"message": {"content": "", "reasoning_content": "why"},
                                    "finish_reason": "length"}],
        }),
    ];
    for answer in answers {
        let from_value = client::answer_bytes_from_chat(&answer, "asked").unwrap();
        let bytes = serde_json::to_vec(&answer).unwrap();
        let from_bytes = client::answer_bytes_from_chat_bytes(&bytes, "asked").unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&from_bytes).unwrap(),
            serde_json::from_slice::<Value>(&from_value).unwrap(),
        );
    }
    // Not JSON, or not an answer: an error, as from the `Value`.
    assert!(client::answer_bytes_from_chat_bytes(b"{\"choices\": ", "asked").is_err());
    assert!(client::answer_bytes_from_chat_bytes(b"{\"choices\": []}", "asked").is_err());
}
