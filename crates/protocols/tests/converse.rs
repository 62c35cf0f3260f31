//! Property tests of the Converse translators: a canonical chat request of what Converse can
//! express keeps every field when translated (checked field by field in the Converse body),
//! and a Converse answer translated to a `chat.completion` keeps its content, tool calls,
//! finish reason and usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrolite_protocols::converse::{answer_to_chat, request_from_chat};
use proptest::prelude::*;
use serde_json::{Value, json};

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?]{1,16}"
}

fn base64() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/]{4,32}".prop_map(|s| {
        let pad = (4 - s.len() % 4) % 4;
        format!("{s}{}", "=".repeat(pad))
    })
}

/// A user message's content and the Converse blocks it must become.
fn user_content() -> impl Strategy<Value = (Value, Vec<Value>)> {
    let part = prop_oneof![
        text().prop_map(|t| (json!({"type": "text", "text": t}), json!({"text": t}))),
        (
            prop::sample::select(vec!["png", "jpeg", "gif", "webp"]),
            base64()
        )
            .prop_map(|(format, data)| (
                json!({"type": "image_url", "image_url": {"url": format!("data:image/{format};base64,{data}")}}),
                json!({"image": {"format": format, "source": {"bytes": data}}}),
            )),
    ];
    prop_oneof![
        text().prop_map(|t| (json!(t), vec![json!({"text": t})])),
        prop::collection::vec(part, 1..4).prop_map(|parts| {
            let (chat, converse): (Vec<Value>, Vec<Value>) = parts.into_iter().unzip();
            (Value::Array(chat), converse)
        }),
    ]
}

/// One turn of a conversation: its chat messages and the (role, blocks) each must become.
#[derive(Debug, Clone)]
struct Turn {
    messages: Vec<Value>,
    blocks: Vec<(&'static str, Vec<Value>)>,
}

fn user_turn() -> impl Strategy<Value = Turn> {
    prop::collection::vec(user_content(), 1..3).prop_map(|contents| {
        let mut turn = Turn {
            messages: Vec::new(),
            blocks: Vec::new(),
        };
        for (content, blocks) in contents {
            turn.messages
                .push(json!({"role": "user", "content": content}));
            turn.blocks.push(("user", blocks));
        }
        turn
    })
}

/// An assistant turn: text and/or tool calls, and the tool results that answer them.
fn assistant_turn(tool_names: Vec<String>) -> impl Strategy<Value = Turn> {
    let calls = if tool_names.is_empty() {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec(
            (
                "[a-z0-9]{6}",
                prop::sample::select(tool_names),
                text(),
                text(),
            ),
            0..3,
        )
        .boxed()
    };
    (proptest::option::of(text()), calls).prop_map(|(content, calls)| {
        let content = match (&content, calls.is_empty()) {
            (None, true) => Some("ok".to_string()),
            _ => content,
        };
        let mut blocks = Vec::new();
        if let Some(t) = &content {
            blocks.push(json!({"text": t}));
        }
        let mut tool_calls = Vec::new();
        let mut results = Vec::new();
        let mut result_blocks = Vec::new();
        for (k, (id, name, arg, answer)) in calls.iter().enumerate() {
            let id = format!("call_{k}_{id}");
            let input = json!({"q": arg, "n": k});
            tool_calls.push(json!({
                "id": id, "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            }));
            blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
            results.push(json!({"role": "tool", "tool_call_id": id, "content": answer}));
            result_blocks.push((
                "user",
                vec![json!({"toolResult": {"toolUseId": id, "content": [{"text": answer}]}})],
            ));
        }
        let mut message = json!({"role": "assistant", "content": content});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let mut turn = Turn {
            messages: vec![message],
            blocks: vec![("assistant", blocks)],
        };
        turn.messages.extend(results);
        turn.blocks.extend(result_blocks);
        turn
    })
}

fn tools() -> impl Strategy<Value = Vec<(String, Option<String>, Value)>> {
    prop::collection::vec(
        (
            "[a-z_]{3,10}",
            proptest::option::of(text()),
            prop::sample::select(vec!["string", "integer", "boolean"]),
        ),
        0..3,
    )
    .prop_map(|tools| {
        let mut seen = std::collections::BTreeSet::new();
        tools
            .into_iter()
            .filter(|(name, _, _)| seen.insert(name.clone()))
            .map(|(name, description, kind)| {
                let schema = json!({"type": "object", "properties": {"x": {"type": kind}}, "required": ["x"]});
                (name, description, schema)
            })
            .collect()
    })
}

/// A canonical request of what Converse expresses, and the Converse body it must become.
fn request() -> impl Strategy<Value = (Value, Value)> {
    (
        tools(),
        prop::collection::vec(text(), 0..3),
        proptest::option::of(1u64..4096),
        proptest::option::of(0u32..=100),
        proptest::option::of(1u32..=100),
        proptest::option::of(prop_oneof![
            text().prop_map(|s| json!(s)),
            prop::collection::vec(text(), 1..4).prop_map(|v| json!(v)),
        ]),
        0usize..3,
    )
        .prop_flat_map(
            |(tools, system, max_tokens, temperature, top_p, stop, choice)| {
                let names: Vec<String> = tools.iter().map(|t| t.0.clone()).collect();
                let turns =
                    prop::collection::vec((user_turn(), assistant_turn(names.clone())), 1..4);
                (
                    Just((tools, system, max_tokens, temperature, top_p, stop, choice)),
                    turns,
                    user_turn(),
                )
            },
        )
        .prop_map(
            |((tools, system, max_tokens, temperature, top_p, stop, choice), turns, last)| {
                let mut messages: Vec<Value> = system
                    .iter()
                    .map(|s| json!({"role": "system", "content": s}))
                    .collect();
                let mut blocks: Vec<(&'static str, Vec<Value>)> = Vec::new();
                for (user, assistant) in turns {
                    for turn in [user, assistant] {
                        messages.extend(turn.messages);
                        blocks.extend(turn.blocks);
                    }
                }
                messages.extend(last.messages);
                blocks.extend(last.blocks);
                // Consecutive turns of one role are one Converse message.
                let mut expected_messages: Vec<(&str, Vec<Value>)> = Vec::new();
                for (role, content) in blocks {
                    match expected_messages.last_mut() {
                        Some((last, c)) if *last == role => c.extend(content),
                        _ => expected_messages.push((role, content)),
                    }
                }
                let mut chat = json!({"model": "bedrock/x", "messages": messages});
                let mut expected = json!({
                    "messages": expected_messages
                        .into_iter()
                        .map(|(role, content)| json!({"role": role, "content": content}))
                        .collect::<Vec<_>>(),
                });
                if !system.is_empty() {
                    expected["system"] = system.iter().map(|s| json!({"text": s})).collect();
                }
                let mut inference = serde_json::Map::new();
                if let Some(m) = max_tokens {
                    chat["max_tokens"] = m.into();
                    inference.insert("maxTokens".into(), m.into());
                }
                if let Some(t) = temperature {
                    let t = f64::from(t) / 100.0;
                    chat["temperature"] = t.into();
                    inference.insert("temperature".into(), t.into());
                }
                if let Some(p) = top_p {
                    let p = f64::from(p) / 100.0;
                    chat["top_p"] = p.into();
                    inference.insert("topP".into(), p.into());
                }
                if let Some(stop) = stop {
                    let list = if stop.is_string() {
                        json!([stop])
                    } else {
                        stop.clone()
                    };
                    chat["stop"] = stop;
                    inference.insert("stopSequences".into(), list);
                }
                if !inference.is_empty() {
                    expected["inferenceConfig"] = Value::Object(inference);
                }
                if !tools.is_empty() {
                    chat["tools"] = tools
                        .iter()
                        .map(|(name, description, schema)| {
                            let mut function = json!({"name": name, "parameters": schema});
                            if let Some(d) = description {
                                function["description"] = d.clone().into();
                            }
                            json!({"type": "function", "function": function})
                        })
                        .collect();
                    let specs: Vec<Value> = tools
                        .iter()
                        .map(|(name, description, schema)| {
                            let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
                            if let Some(d) = description {
                                spec["description"] = d.clone().into();
                            }
                            json!({"toolSpec": spec})
                        })
                        .collect();
                    expected["toolConfig"] = json!({"tools": specs});
                    let (chat_choice, converse_choice) = match choice {
                        0 => (json!("auto"), json!({"auto": {}})),
                        1 => (json!("required"), json!({"any": {}})),
                        _ => (
                            json!({"type": "function", "function": {"name": tools[0].0}}),
                            json!({"tool": {"name": tools[0].0}}),
                        ),
                    };
                    chat["tool_choice"] = chat_choice;
                    expected["toolConfig"]["toolChoice"] = converse_choice;
                }
                (chat, expected)
            },
        )
}

/// A Converse answer: its content blocks, stop reason and usage.
fn answer() -> impl Strategy<Value = Value> {
    let block = prop_oneof![
        text().prop_map(|t| json!({"text": t})),
        ("[a-zA-Z0-9_]{8}", "[a-z_]{3,10}", text(), 0u32..100).prop_map(|(id, name, q, n)| {
            json!({"toolUse": {"toolUseId": format!("tooluse_{id}"), "name": name, "input": {"q": q, "n": n}}})
        }),
    ];
    (
        prop::collection::vec(block, 0..5),
        prop::sample::select(vec![
            "end_turn",
            "tool_use",
            "max_tokens",
            "stop_sequence",
            "guardrail_intervened",
            "content_filtered",
        ]),
        0u64..10_000,
        0u64..10_000,
        proptest::option::of(0u64..5_000),
    )
        .prop_map(|(content, stop, input, output, cached)| {
            let mut usage =
                json!({"inputTokens": input, "outputTokens": output, "totalTokens": input + output + cached.unwrap_or(0)});
            if let Some(c) = cached {
                usage["cacheReadInputTokens"] = c.into();
            }
            json!({
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "usage": usage,
                "metrics": {"latencyMs": 100},
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_request_converse_expresses_keeps_every_field((chat, expected) in request()) {
        let body = request_from_chat(&chat).unwrap();
        // The bytes the backend sends are that body.
        let bytes = ferrolite_protocols::converse::request_bytes_from_chat(&chat).unwrap();
        prop_assert_eq!(&serde_json::from_slice::<Value>(&bytes).unwrap(), &body);
        for field in ["system", "messages", "inferenceConfig", "toolConfig"] {
            prop_assert_eq!(body.get(field), expected.get(field), "{}", field);
        }
        // Nothing else is sent.
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        let wanted: Vec<&String> = expected.as_object().unwrap().keys().collect();
        prop_assert_eq!(fields, wanted);
        // The turns alternate, starting with the user's.
        for (i, message) in body["messages"].as_array().unwrap().iter().enumerate() {
            prop_assert_eq!(&message["role"], if i % 2 == 0 { "user" } else { "assistant" });
        }
    }

    #[test]
    fn an_answer_keeps_its_content_tool_calls_finish_reason_and_usage(answer in answer()) {
        let chat = answer_to_chat(&answer, "anthropic.claude").unwrap();
        // The bytes the backend makes are that answer, with the id it gives.
        let bytes = ferrolite_protocols::converse::answer_bytes_to_chat(&answer, "anthropic.claude", false, "chatcmpl-1").unwrap();
        let mut written: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&written["id"], "chatcmpl-1");
        written["id"] = chat["id"].clone();
        written["created"] = chat["created"].clone();
        prop_assert_eq!(&written, &chat);
        // Read from the answer's bytes, as the backend reads it: the same answer.
        let answer_bytes = serde_json::to_vec(&answer).unwrap();
        let bytes = ferrolite_protocols::converse::answer_bytes_to_chat_bytes(&answer_bytes, "anthropic.claude", false, "chatcmpl-1").unwrap();
        let mut written: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&written["id"], "chatcmpl-1");
        written["id"] = chat["id"].clone();
        written["created"] = chat["created"].clone();
        prop_assert_eq!(&written, &chat);
        prop_assert_eq!(&chat["object"], "chat.completion");
        prop_assert_eq!(&chat["model"], "anthropic.claude");
        let blocks = answer["output"]["message"]["content"].as_array().unwrap();
        let message = &chat["choices"][0]["message"];
        let text: String = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        prop_assert_eq!(&message["content"], &json!(text));
        let uses: Vec<&Value> = blocks.iter().filter_map(|b| b.get("toolUse")).collect();
        let calls = message.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
        prop_assert_eq!(calls.len(), uses.len());
        for (call, used) in calls.iter().zip(uses) {
            prop_assert_eq!(&call["id"], &used["toolUseId"]);
            prop_assert_eq!(&call["type"], "function");
            prop_assert_eq!(&call["function"]["name"], &used["name"]);
            let arguments: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            prop_assert_eq!(&arguments, &used["input"]);
        }
        let finish = match answer["stopReason"].as_str().unwrap() {
            "end_turn" | "stop_sequence" => "stop",
            "tool_use" => "tool_calls",
            "max_tokens" => "length",
            _ => "content_filter",
        };
        prop_assert_eq!(&chat["choices"][0]["finish_reason"], finish);
        let usage = &answer["usage"];
        let cached = usage["cacheReadInputTokens"].as_u64();
        let prompt = usage["inputTokens"].as_u64().unwrap() + cached.unwrap_or(0);
        prop_assert_eq!(&chat["usage"]["prompt_tokens"], &json!(prompt));
        prop_assert_eq!(&chat["usage"]["completion_tokens"], &usage["outputTokens"]);
        prop_assert_eq!(&chat["usage"]["total_tokens"], &usage["totalTokens"]);
        prop_assert_eq!(
            chat["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
            cached
        );
    }
}
