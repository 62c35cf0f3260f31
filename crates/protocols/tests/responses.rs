//! The Responses API translators: a request of what chat completions express keeps every
//! field; a canonical answer keeps its text, tool calls, usage and status; a canonical stream's
//! events carry the same text and calls, numbered in order, in the shapes the `openai` SDK
//! reads; what chat cannot express is refused naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrolite_protocols::responses::{EventsFromChat, answer_from_chat, request_to_chat};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A short text, sometimes with characters JSON escapes.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,!?\"\\\\é\n]{0,24}"
}

fn nonempty_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,!?é]{1,24}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,11}"
}

/// A user content part: text or an image by URL.
#[derive(Debug, Clone)]
enum UserPart {
    Text(String),
    Image(String, Option<&'static str>),
}

/// One turn of a conversation.
#[derive(Debug, Clone)]
enum Turn {
    User(Result<String, Vec<UserPart>>),
    System(String, &'static str),
    /// An assistant's text (as an `output_text` part), then its calls `(id, name, arguments)`
    /// and their outputs.
    Assistant(Option<String>, Vec<(String, String, String, String)>),
}

fn user_part() -> impl Strategy<Value = UserPart> {
    prop_oneof![
        text().prop_map(UserPart::Text),
        (
            "https://img\\.example/[a-z]{1,8}\\.png",
            prop::option::of(prop::sample::select(vec!["low", "high", "auto"]))
        )
            .prop_map(|(url, detail)| UserPart::Image(url, detail)),
    ]
}

fn turn() -> impl Strategy<Value = Turn> {
    let call = (
        "call_[a-zA-Z0-9]{4,10}",
        name(),
        "\\{\"[a-z]{1,5}\": [0-9]{1,3}\\}",
        text(),
    );
    prop_oneof![
        3 => prop_oneof![
            text().prop_map(Ok),
            prop::collection::vec(user_part(), 1..4).prop_map(Err)
        ]
        .prop_map(Turn::User),
        1 => (text(), prop::sample::select(vec!["system", "developer"]))
            .prop_map(|(t, role)| Turn::System(t, role)),
        2 => (prop::option::of(text()), prop::collection::vec(call, 0..3))
            .prop_filter("an assistant turn says something", |(t, calls)| t.is_some() || !calls.is_empty())
            .prop_map(|(t, calls)| Turn::Assistant(t, calls)),
    ]
}

/// The turns as Responses input items, and the chat messages they mean.
fn items_and_messages(turns: &[Turn]) -> (Vec<Value>, Vec<Value>) {
    let mut items = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for turn in turns {
        match turn {
            Turn::User(Ok(text)) => {
                items.push(json!({"role": "user", "content": text}));
                messages.push(json!({"role": "user", "content": text}));
            }
            Turn::User(Err(parts)) => {
                let (given, meant): (Vec<Value>, Vec<Value>) = parts
                    .iter()
                    .map(|part| match part {
                        UserPart::Text(t) => (
                            json!({"type": "input_text", "text": t}),
                            json!({"type": "text", "text": t}),
                        ),
                        UserPart::Image(url, None) => (
                            json!({"type": "input_image", "image_url": url}),
                            json!({"type": "image_url", "image_url": {"url": url}}),
                        ),
                        UserPart::Image(url, Some(detail)) => (
                            json!({"type": "input_image", "image_url": url, "detail": detail}),
                            json!({"type": "image_url", "image_url": {"url": url, "detail": detail}}),
                        ),
                    })
                    .unzip();
                items.push(json!({"type": "message", "role": "user", "content": given}));
                messages.push(json!({"role": "user", "content": meant}));
            }
            Turn::System(text, role) => {
                items.push(json!({"type": "message", "role": role, "content": text}));
                messages.push(json!({"role": role, "content": text}));
            }
            Turn::Assistant(text, calls) => {
                if let Some(text) = text {
                    items.push(json!({
                        "type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }));
                    messages.push(
                        json!({"role": "assistant", "content": [{"type": "text", "text": text}]}),
                    );
                }
                for (id, name, arguments, _) in calls {
                    items.push(json!({
                        "type": "function_call", "id": format!("fc_{id}"), "call_id": id,
                        "name": name, "arguments": arguments, "status": "completed",
                    }));
                    let call = json!({
                        "id": id, "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    });
                    // A call joins the assistant message right before it.
                    match messages.last_mut() {
                        Some(last) if last["role"] == "assistant" => {
                            match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                                Some(calls) => calls.push(call),
                                None => last["tool_calls"] = json!([call]),
                            }
                        }
                        _ => messages.push(
                            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                        ),
                    }
                }
                for (id, _, _, output) in calls {
                    items.push(
                        json!({"type": "function_call_output", "call_id": id, "output": output}),
                    );
                    messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
                }
            }
        }
    }
    (items, messages)
}

/// A function tool, as Responses gives it and as chat means it.
fn tool() -> impl Strategy<Value = (Value, Value)> {
    (
        name(),
        prop::option::of(text()),
        any::<bool>(),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(name, description, with_parameters, strict)| {
            let parameters = json!({
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "required": ["x"],
                "additionalProperties": false,
            });
            let mut given = json!({"type": "function", "name": name});
            let mut function = json!({"name": name});
            if let Some(description) = description {
                given["description"] = json!(description);
                function["description"] = json!(description);
            }
            if with_parameters {
                given["parameters"] = parameters.clone();
                function["parameters"] = parameters;
            }
            if let Some(strict) = strict {
                given["strict"] = json!(strict);
                function["strict"] = json!(strict);
            }
            (given, json!({"type": "function", "function": function}))
        })
}

/// `text.format`, as Responses gives it and as chat's `response_format`.
fn format() -> impl Strategy<Value = (Value, Value)> {
    prop_oneof![
        Just((json!({"type": "text"}), json!({"type": "text"}))),
        Just((json!({"type": "json_object"}), json!({"type": "json_object"}))),
        (name(), any::<bool>()).prop_map(|(name, strict)| {
            let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
            (
                json!({"type": "json_schema", "name": name, "schema": schema, "strict": strict}),
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}),
            )
        }),
    ]
}

/// A Responses request's settings that chat expresses.
#[derive(Debug, Clone)]
struct Settings {
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    format: Option<(Value, Value)>,
    tools: Vec<(Value, Value)>,
    tool_choice: Option<(Value, Value)>,
    parallel_tool_calls: Option<bool>,
    user: Option<String>,
    effort: Option<&'static str>,
    stream: Option<bool>,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        (
            prop::option::of(text()),
            prop::option::of(1u32..100_000),
            prop::option::of((0u32..=20).prop_map(|t| f64::from(t) / 10.0)),
            prop::option::of((1u32..=10).prop_map(|t| f64::from(t) / 10.0)),
            prop::option::of(format()),
        ),
        (
            prop::collection::vec(tool(), 0..3),
            prop::option::of(prop_oneof![
                prop::sample::select(vec!["auto", "none", "required"])
                    .prop_map(|c| (json!(c), json!(c))),
                name().prop_map(|n| (
                    json!({"type": "function", "name": n}),
                    json!({"type": "function", "function": {"name": n}})
                )),
            ]),
            prop::option::of(any::<bool>()),
            prop::option::of(name()),
            prop::option::of(prop::sample::select(vec![
                "minimal", "low", "medium", "high",
            ])),
            prop::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (instructions, max_output_tokens, temperature, top_p, format),
                (tools, tool_choice, parallel_tool_calls, user, effort, stream),
            )| Settings {
                instructions,
                max_output_tokens,
                temperature,
                top_p,
                format,
                tools,
                tool_choice,
                parallel_tool_calls,
                user,
                effort,
                stream,
            },
        )
}

/// A canonical answer's parts.
#[derive(Debug, Clone)]
struct Answer {
    text: Option<String>,
    reasoning: Option<String>,
    calls: Vec<(String, String, String)>,
    finish: &'static str,
    usage: (u64, u64, u64, u64),
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop::option::of(nonempty_text()),
        prop::option::of(nonempty_text()),
        prop::collection::vec(
            (
                "call_[a-zA-Z0-9]{4,10}",
                name(),
                "\\{\"[a-z]{1,5}\": \"[a-z ]{0,20}\"\\}",
            ),
            0..3,
        ),
        prop::sample::select(vec!["stop", "length", "tool_calls", "content_filter"]),
        (0u64..100_000, 0u64..10_000, 0u64..1_000, 0u64..1_000),
    )
        .prop_map(|(text, reasoning, calls, finish, usage)| Answer {
            text,
            reasoning,
            calls,
            finish,
            usage,
        })
}

fn chat_usage((prompt, completion, cached, reasoning): (u64, u64, u64, u64)) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached.min(prompt)},
        "completion_tokens_details": {"reasoning_tokens": reasoning.min(completion)},
    })
}

fn assert_usage(usage: &Value, (prompt, completion, cached, reasoning): (u64, u64, u64, u64)) {
    assert_eq!(usage["input_tokens"], prompt);
    assert_eq!(usage["output_tokens"], completion);
    assert_eq!(usage["total_tokens"], prompt + completion);
    assert_eq!(
        usage["input_tokens_details"]["cached_tokens"],
        cached.min(prompt)
    );
    assert_eq!(
        usage["output_tokens_details"]["reasoning_tokens"],
        reasoning.min(completion)
    );
}

/// What the SDK's `response.output_text` gives: the `output_text` parts of the message items.
fn output_text(response: &Value) -> String {
    let mut text = String::new();
    for item in response["output"].as_array().unwrap() {
        if item["type"] == "message" {
            for part in item["content"].as_array().unwrap() {
                if part["type"] == "output_text" {
                    text.push_str(part["text"].as_str().unwrap());
                }
            }
        }
    }
    text
}

/// The function calls of a response: `(call_id, name, arguments)`.
fn calls_of(response: &Value) -> Vec<(String, String, String)> {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function_call")
        .map(|item| {
            (
                item["call_id"].as_str().unwrap().to_string(),
                item["name"].as_str().unwrap().to_string(),
                item["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The fields the `openai` SDK's `Response` model requires, with their kinds, and those of
/// its output items and usage.
fn assert_sdk_response(response: &Value) {
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(response["object"], "response");
    assert!(response["created_at"].is_number());
    assert!(response["model"].is_string());
    assert!(response["parallel_tool_calls"].is_boolean());
    assert!(response["tools"].is_array());
    assert!(response["tool_choice"].is_string() || response["tool_choice"].is_object());
    for item in response["output"].as_array().unwrap() {
        assert_sdk_item(item);
    }
    if !response["usage"].is_null() {
        let usage = &response["usage"];
        for field in ["input_tokens", "output_tokens", "total_tokens"] {
            assert!(usage[field].is_u64(), "usage.{field}");
        }
        assert!(usage["input_tokens_details"]["cached_tokens"].is_u64());
        assert!(usage["input_tokens_details"]["cache_write_tokens"].is_u64());
        assert!(usage["output_tokens_details"]["reasoning_tokens"].is_u64());
    }
}

fn assert_sdk_item(item: &Value) {
    assert!(item["id"].is_string(), "{item}");
    match item["type"].as_str().unwrap() {
        "message" => {
            assert_eq!(item["role"], "assistant");
            assert!(item["status"].is_string());
            for part in item["content"].as_array().unwrap() {
                match part["type"].as_str().unwrap() {
                    "output_text" => {
                        assert!(part["text"].is_string());
                        assert!(part["annotations"].is_array());
                    }
                    "refusal" => assert!(part["refusal"].is_string()),
                    other => panic!("a message part of type {other}"),
                }
            }
        }
        "function_call" => {
            for field in ["call_id", "name", "arguments"] {
                assert!(item[field].is_string(), "function_call.{field}");
            }
        }
        "reasoning" => {
            assert!(item["summary"].is_array());
            for part in item["content"].as_array().unwrap() {
                assert_eq!(part["type"], "reasoning_text");
                assert!(part["text"].is_string());
            }
        }
        other => panic!("an output item of type {other}"),
    }
}

/// The fields each stream event's SDK model requires.
fn assert_sdk_event(event: &Value) {
    assert!(event["sequence_number"].is_u64(), "{event}");
    let kind = event["type"].as_str().unwrap();
    let required: &[&str] = match kind {
        "response.created"
        | "response.in_progress"
        | "response.completed"
        | "response.incomplete" => {
            assert_sdk_response(&event["response"]);
            &["response"]
        }
        "response.output_item.added" | "response.output_item.done" => {
            assert_sdk_item(&event["item"]);
            &["output_index", "item"]
        }
        "response.content_part.added" | "response.content_part.done" => {
            &["item_id", "output_index", "content_index", "part"]
        }
        "response.output_text.delta"
        | "response.refusal.delta"
        | "response.reasoning_text.delta" => &["item_id", "output_index", "content_index", "delta"],
        "response.output_text.done" | "response.reasoning_text.done" => {
            &["item_id", "output_index", "content_index", "text"]
        }
        "response.refusal.done" => &["item_id", "output_index", "content_index", "refusal"],
        "response.function_call_arguments.delta" => &["item_id", "output_index", "delta"],
        "response.function_call_arguments.done" => &["item_id", "output_index", "arguments"],
        other => panic!("an event of type {other}"),
    };
    for field in required {
        assert!(!event[*field].is_null(), "{kind} has no {field}: {event}");
    }
}

/// `text` cut at the given points.
fn pieces(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (chars.len() + 1))
        .chain([0, chars.len()])
        .collect();
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| chars[w[0]..w[1]].iter().collect())
        .collect()
}

/// The canonical stream of an answer: role, reasoning and text deltas in pieces, each call's
/// arguments in pieces, the finish reason, the usage chunk.
fn chunks(answer: &Answer, cuts: &[usize]) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(reasoning) = &answer.reasoning {
        for piece in pieces(reasoning, cuts) {
            out.push(chunk(json!({"reasoning_content": piece}), Value::Null));
        }
    }
    if let Some(text) = &answer.text {
        for piece in pieces(text, cuts) {
            out.push(chunk(json!({"content": piece}), Value::Null));
        }
    }
    for (k, (id, name, arguments)) in answer.calls.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": k, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(arguments, cuts) {
            out.push(chunk(
                json!({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    out.push(chunk(json!({}), json!(answer.finish)));
    out.push(json!({
        "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-4o-mini", "choices": [], "usage": chat_usage(answer.usage),
    }));
    out
}

fn status_of(finish: &str) -> (&'static str, Value) {
    match finish {
        "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
        "content_filter" => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_request_of_what_chat_expresses_keeps_every_field(
        turns in prop::collection::vec(turn(), 1..6),
        as_string in prop::option::of(text()),
        settings in settings(),
    ) {
        let (items, mut expected) = match &as_string {
            Some(text) => (json!(text), vec![json!({"role": "user", "content": text})]),
            None => {
                let (items, messages) = items_and_messages(&turns);
                (Value::Array(items), messages)
            }
        };
        let mut request = json!({"model": "gpt-4o", "input": items});
        if let Some(instructions) = &settings.instructions {
            request["instructions"] = json!(instructions);
            expected.insert(0, json!({"role": "system", "content": instructions}));
        }
        if let Some(max) = settings.max_output_tokens { request["max_output_tokens"] = json!(max); }
        if let Some(t) = settings.temperature { request["temperature"] = json!(t); }
        if let Some(p) = settings.top_p { request["top_p"] = json!(p); }
        if let Some((given, _)) = &settings.format { request["text"] = json!({"format": given}); }
        if !settings.tools.is_empty() {
            request["tools"] = Value::Array(settings.tools.iter().map(|t| t.0.clone()).collect());
        }
        if let Some((given, _)) = &settings.tool_choice { request["tool_choice"] = given.clone(); }
        if let Some(p) = settings.parallel_tool_calls { request["parallel_tool_calls"] = json!(p); }
        if let Some(user) = &settings.user { request["user"] = json!(user); }
        if let Some(effort) = settings.effort { request["reasoning"] = json!({"effort": effort, "summary": "auto"}); }
        if let Some(stream) = settings.stream { request["stream"] = json!(stream); }

        let chat = request_to_chat(&request).unwrap();

        prop_assert_eq!(&chat["model"], "gpt-4o");
        prop_assert_eq!(&chat["messages"], &Value::Array(expected));
        prop_assert_eq!(chat.get("max_tokens").cloned(), settings.max_output_tokens.map(|m| json!(m)));
        prop_assert_eq!(chat.get("temperature").cloned(), settings.temperature.map(|t| json!(t)));
        prop_assert_eq!(chat.get("top_p").cloned(), settings.top_p.map(|t| json!(t)));
        prop_assert_eq!(chat.get("response_format").cloned(), settings.format.as_ref().map(|f| f.1.clone()));
        let tools = (!settings.tools.is_empty())
            .then(|| Value::Array(settings.tools.iter().map(|t| t.1.clone()).collect()));
        prop_assert_eq!(chat.get("tools").cloned(), tools);
        prop_assert_eq!(chat.get("tool_choice").cloned(), settings.tool_choice.as_ref().map(|c| c.1.clone()));
        prop_assert_eq!(chat.get("parallel_tool_calls").cloned(), settings.parallel_tool_calls.map(|p| json!(p)));
        prop_assert_eq!(chat.get("user").cloned(), settings.user.as_ref().map(|u| json!(u)));
        prop_assert_eq!(chat.get("reasoning_effort").cloned(), settings.effort.map(|e| json!(e)));
        prop_assert_eq!(chat.get("stream").cloned(), settings.stream.map(|s| json!(s)));
        prop_assert_eq!(
            chat.get("stream_options").cloned(),
            (settings.stream == Some(true)).then(|| json!({"include_usage": true}))
        );
        // Nothing of the Responses API's own is left in the chat request.
        for field in ["input", "instructions", "max_output_tokens", "text", "reasoning"] {
            prop_assert!(chat.get(field).is_none(), "{} left in {}", field, chat);
        }
    }

    #[test]
    fn a_canonical_answer_keeps_text_calls_usage_and_status(answer in answer(), with_settings in any::<bool>()) {
        let mut message = json!({"role": "assistant", "content": answer.text});
        if let Some(reasoning) = &answer.reasoning { message["reasoning_content"] = json!(reasoning); }
        if !answer.calls.is_empty() {
            message["tool_calls"] = answer.calls.iter().map(|(id, name, arguments)| json!({
                "id": id, "type": "function", "function": {"name": name, "arguments": arguments},
            })).collect();
        }
        let chat = json!({
            "id": "chatcmpl-xyz", "object": "chat.completion", "created": 1_700_000_123,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": message, "finish_reason": answer.finish}],
            "usage": chat_usage(answer.usage),
        });
        let request = if with_settings {
            json!({"model": "gpt-4o-mini", "input": "hi", "instructions": "Be brief.",
                   "temperature": 0.3, "max_output_tokens": 77,
                   "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]})
        } else {
            json!({"model": "gpt-4o-mini", "input": "hi"})
        };

        let response = answer_from_chat(&chat, &request).unwrap();
        // The bytes the gateway sends are that response, with the model the client asked for.
        let bytes = ferrolite_protocols::responses::answer_bytes_from_chat(&chat, &request, "asked").unwrap();
        let mut expected = response.clone();
        expected["model"] = json!("asked");
        prop_assert_eq!(&serde_json::from_slice::<Value>(&bytes).unwrap(), &expected);
        // And from the canonical answer's bytes, as the gateway reads it: the same response.
        let chat_bytes = serde_json::to_vec(&chat).unwrap();
        let bytes = ferrolite_protocols::responses::answer_bytes_from_chat_bytes(&chat_bytes, &request, "asked").unwrap();
        prop_assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), expected);

        assert_sdk_response(&response);
        prop_assert_eq!(output_text(&response), answer.text.clone().unwrap_or_default());
        prop_assert_eq!(calls_of(&response), answer.calls.clone());
        assert_usage(&response["usage"], answer.usage);
        let (status, details) = status_of(answer.finish);
        prop_assert_eq!(&response["status"], status);
        prop_assert_eq!(&response["incomplete_details"], &details);
        prop_assert_eq!(&response["created_at"], 1_700_000_123);
        prop_assert_eq!(&response["model"], "gpt-4o-mini-2024-07-18");
        let reasoning: Vec<&Value> = response["output"].as_array().unwrap().iter()
            .filter(|i| i["type"] == "reasoning").collect();
        match &answer.reasoning {
            Some(text) => {
                prop_assert_eq!(reasoning.len(), 1);
                prop_assert_eq!(&reasoning[0]["content"][0]["text"], text);
                prop_assert_eq!(&response["output"][0]["type"], "reasoning");
            }
            None => prop_assert!(reasoning.is_empty()),
        }
        if with_settings {
            prop_assert_eq!(&response["instructions"], "Be brief.");
            prop_assert_eq!(&response["temperature"], 0.3);
            prop_assert_eq!(&response["max_output_tokens"], 77);
            prop_assert_eq!(&response["tools"], &request["tools"]);
        } else {
            prop_assert_eq!(&response["instructions"], &Value::Null);
            prop_assert_eq!(&response["tools"], &json!([]));
            prop_assert_eq!(&response["tool_choice"], "auto");
        }
    }

    #[test]
    fn a_canonical_stream_gives_the_same_text_and_calls_in_numbered_events(
        answer in answer(),
        cuts in prop::collection::vec(0usize..40, 0..6),
        with_usage in any::<bool>(),
    ) {
        let request = json!({"model": "gpt-4o-mini", "input": "hi", "stream": true});
        let mut translator = EventsFromChat::new(&request);
        let mut chunks = chunks(&answer, &cuts);
        if !with_usage {
            chunks.pop();
        }
        let mut events = Vec::new();
        for chunk in &chunks {
            events.extend(translator.push(chunk).unwrap());
        }
        events.extend(translator.finish());
        // Nothing after the end.
        prop_assert!(translator.finish().is_empty());
        prop_assert!(translator.push(&chunks[0]).unwrap().is_empty());

        for (n, event) in events.iter().enumerate() {
            assert_sdk_event(event);
            prop_assert_eq!(&event["sequence_number"], n);
        }
        prop_assert_eq!(&events[0]["type"], "response.created");
        prop_assert_eq!(&events[1]["type"], "response.in_progress");
        let last = events.last().unwrap();
        let (status, details) = status_of(answer.finish);
        let end = if status == "completed" { "response.completed" } else { "response.incomplete" };
        prop_assert_eq!(&last["type"], end);
        let response = &last["response"];
        prop_assert_eq!(&response["status"], status);
        prop_assert_eq!(&response["incomplete_details"], &details);

        let deltas: String = events.iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        prop_assert_eq!(&deltas, &answer.text.clone().unwrap_or_default());
        prop_assert_eq!(output_text(response), deltas);
        prop_assert_eq!(calls_of(response), answer.calls.clone());
        for (k, (_, _, arguments)) in answer.calls.iter().enumerate() {
            let item_id = response["output"].as_array().unwrap().iter()
                .filter(|i| i["type"] == "function_call").nth(k).unwrap()["id"].clone();
            let streamed: String = events.iter()
                .filter(|e| e["type"] == "response.function_call_arguments.delta" && e["item_id"] == item_id)
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            prop_assert_eq!(&streamed, arguments);
        }
        let reasoning: String = events.iter()
            .filter(|e| e["type"] == "response.reasoning_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        prop_assert_eq!(reasoning, answer.reasoning.clone().unwrap_or_default());
        if with_usage {
            assert_usage(&response["usage"], answer.usage);
        } else {
            prop_assert_eq!(&response["usage"], &Value::Null);
        }
        // Each item is added once and done once, with matching output indexes, and the
        // deltas of an item come between the two.
        let output = response["output"].as_array().unwrap();
        for (index, item) in output.iter().enumerate() {
            let added = events.iter().position(|e| e["type"] == "response.output_item.added" && e["output_index"] == index).unwrap();
            let done = events.iter().position(|e| e["type"] == "response.output_item.done" && e["output_index"] == index).unwrap();
            prop_assert!(added < done);
            prop_assert_eq!(&events[added]["item"]["id"], &item["id"]);
            prop_assert_eq!(&events[done]["item"], item);
            for (n, event) in events.iter().enumerate() {
                if event["item_id"] == item["id"] {
                    prop_assert!(added < n && n < done, "{} outside its item", event);
                }
            }
        }
    }
}

#[test]
fn a_text_stream_comes_in_openai_order() {
    let request = json!({"model": "m", "input": "hi"});
    let mut translator = EventsFromChat::new(&request);
    let answer = Answer {
        text: Some("Hello".into()),
        reasoning: None,
        calls: vec![],
        finish: "stop",
        usage: (3, 1, 0, 0),
    };
    let mut events = Vec::new();
    for chunk in chunks(&answer, &[]) {
        events.extend(translator.push(&chunk).unwrap());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[0]["response"]["status"], "in_progress");
    assert_eq!(events[0]["response"]["id"], "resp_abc");
    assert_eq!(events[2]["item"]["content"], json!([]));
    assert_eq!(events[3]["part"]["text"], "");
    assert_eq!(events[8]["response"]["usage"]["input_tokens"], 3);
}

#[test]
fn a_stream_without_a_finish_reason_is_completed_by_finish() {
    let mut translator = EventsFromChat::new(&json!({"model": "m", "input": "hi"}));
    let mut events = translator
        .push(&json!({"id": "chatcmpl-1", "created": 1, "model": "m",
                      "choices": [{"index": 0, "delta": {"content": "par"}}]}))
        .unwrap();
    events.extend(translator.finish());
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(output_text(&last["response"]), "par");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "response.output_item.done")
    );
}

#[test]
fn a_translator_given_no_chunk_adds_nothing_at_the_end() {
    // A pass-through stream's events go to the caller as they came; its translator sees none
    // of them and must not end the stream a second time.
    let mut translator = EventsFromChat::new(&json!({"model": "m", "input": "hi"}));
    assert!(translator.finish().is_empty());
    assert!(translator.finish().is_empty());
}

#[test]
fn a_refusal_is_a_refusal_part() {
    let chat = json!({
        "id": "chatcmpl-r", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": null, "refusal": "I can't."}}],
    });
    let response = answer_from_chat(&chat, &json!({"input": "x"})).unwrap();
    assert_eq!(
        response["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "I can't."}])
    );
    let mut translator = EventsFromChat::new(&json!({"input": "x"}));
    let mut events = translator
        .push(&json!({"id": "chatcmpl-r", "choices": [{"index": 0, "delta": {"refusal": "No."}, "finish_reason": "stop"}]}))
        .unwrap();
    events.extend(translator.finish());
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"response.refusal.delta"));
    assert!(kinds.contains(&"response.refusal.done"));
    assert_eq!(
        events.last().unwrap()["response"]["output"][0]["content"][0]["refusal"],
        "No."
    );
}

#[test]
fn settings_outside_the_answer_pass_or_are_left_out() {
    let chat = request_to_chat(&json!({
        "model": "m", "input": "hi", "metadata": {"k": "v"}, "store": false,
        "include": ["reasoning.encrypted_content"], "truncation": "disabled",
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "input_extra_for_chat": 1,
    }))
    .unwrap();
    assert_eq!(chat["metadata"], json!({"k": "v"}));
    assert_eq!(chat["store"], false);
    assert_eq!(chat["verbosity"], "low");
    assert_eq!(chat["input_extra_for_chat"], 1);
    assert!(chat.get("include").is_none());
    assert!(chat.get("truncation").is_none());
}

#[test]
fn reasoning_items_are_left_out() {
    let chat = request_to_chat(&json!({"model": "m", "input": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thought"}]},
        {"role": "user", "content": "next"},
    ]}))
    .unwrap();
    assert_eq!(
        chat["messages"],
        json!([{"role": "user", "content": "next"}])
    );
}

/// The error of translating `request`.
fn refused(request: Value) -> ferrolite_protocols::TranslateError {
    request_to_chat(&request).expect_err("the request is refused")
}

#[test]
fn previous_response_id_is_refused_naming_it() {
    let e = refused(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}));
    assert_eq!(e.field, "previous_response_id");
    assert!(e.reason.contains("stored conversation"), "{e}");
    assert!(e.reason.contains("/v1/responses"), "{e}");
    let e = refused(json!({"model": "m", "input": "hi", "conversation": "conv_1"}));
    assert_eq!(e.field, "conversation");
    // A null one is no continuation.
    assert!(
        request_to_chat(&json!({"model": "m", "input": "hi", "previous_response_id": null}))
            .is_ok()
    );
}

#[test]
fn built_in_tools_are_refused_naming_their_type() {
    for kind in [
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "mcp",
        "image_generation",
    ] {
        let e = refused(json!({"model": "m", "input": "hi", "tools": [
            {"type": "function", "name": "f"},
            {"type": kind},
        ]}));
        assert_eq!(e.field, "tools[1].type", "{kind}");
        assert!(e.reason.contains(kind), "{e}");
    }
}

#[test]
fn files_are_refused_naming_the_part() {
    let e = refused(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "read this"},
        {"type": "input_file", "file_id": "file-1"},
    ]}]}));
    assert_eq!(e.field, "input[0].content[1].type");
    let e = refused(json!({"model": "m", "input": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "input_image", "file_id": "file-2"}]},
    ]}));
    assert_eq!(e.field, "input[1].content[0].file_id");
}

#[test]
fn items_chat_has_no_place_for_are_refused_naming_their_type() {
    let e = refused(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    assert_eq!(e.field, "input[0].type");
    let e = refused(json!({"model": "m", "input": [
        {"role": "user", "content": "a"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ]}));
    assert_eq!(e.field, "input[1].type");
    assert!(e.reason.contains("web_search_call"));
    let e = refused(json!({"model": "m", "input": [{"role": "tool", "content": "a"}]}));
    assert_eq!(e.field, "input[0].role");
}

#[test]
fn settings_chat_cannot_express_are_refused_naming_them() {
    for (field, value) in [
        ("background", json!(true)),
        ("prompt", json!({"id": "pmpt_1"})),
        ("max_tool_calls", json!(3)),
        ("top_logprobs", json!(2)),
    ] {
        let mut request = json!({"model": "m", "input": "hi"});
        request[field] = value;
        assert_eq!(refused(request).field, field);
    }
    let e = refused(
        json!({"model": "m", "input": "hi", "tool_choice": {"type": "web_search_preview"}}),
    );
    assert_eq!(e.field, "tool_choice.type");
    let e = refused(json!({"model": "m", "input": "hi", "text": {"format": {"type": "xml"}}}));
    assert_eq!(e.field, "text.format.type");
    let e = refused(
        json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}),
    );
    assert_eq!(e.field, "text.format.name");
    let e = refused(json!({"model": "m"}));
    assert_eq!(e.field, "input");
    let e = refused(
        json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}),
    );
    assert_eq!(e.field, "input[0].arguments");
}

#[test]
fn interleaved_tool_calls_each_keep_their_own_arguments() {
    let mut translator = EventsFromChat::new(&json!({"model": "m", "input": "x"}));
    let call = |index: u64, id: Option<&str>, name: Option<&str>, arguments: &str| {
        let mut call = json!({"index": index, "function": {"arguments": arguments}});
        if let Some(id) = id {
            call["id"] = json!(id);
        }
        if let Some(name) = name {
            call["function"]["name"] = json!(name);
        }
        json!({"id": "chatcmpl-p", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    };
    let mut events = Vec::new();
    for chunk in [
        call(0, Some("call_a"), Some("f"), "{\"x\":"),
        call(1, Some("call_b"), Some("g"), "{\"y\":"),
        call(0, None, None, "1}"),
        call(1, None, None, "2}"),
        json!({"id": "chatcmpl-p", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
               "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
    ] {
        events.extend(translator.push(&chunk).unwrap());
    }
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(
        calls_of(&last["response"]),
        [
            (
                "call_a".to_string(),
                "f".to_string(),
                "{\"x\":1}".to_string()
            ),
            (
                "call_b".to_string(),
                "g".to_string(),
                "{\"y\":2}".to_string()
            ),
        ]
    );
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.done")
        .collect();
    assert_eq!(done[0]["arguments"], "{\"x\":1}");
    assert_eq!(done[1]["arguments"], "{\"y\":2}");
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], n);
    }
}

/// The gateway reads a canonical answer from its bytes (`answer_bytes_from_chat_bytes`): for
/// the parts the property test's answers leave out (content as a list of parts, a refusal,
/// escaped text, an answer without a model), the same response as from the `Value`.
#[test]
fn a_response_read_from_its_bytes_is_the_response_read_from_its_value() {
    let request = json!({"model": "gpt-4o-mini", "input": "hi", "instructions": "Be \"brief\".",
                         "reasoning": {"effort": "low"}, "metadata": {"k": "v"}});
    let answers = [
        json!({
            "id": "chatcmpl-1", "created": 5,
            "choices": [{"index": 0, "finish_reason": "content_filter", "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "a \"quoted\"\nline"}, {"type": "text", "text": "é😀"}],
                "refusal": "no\\thanks",
            }}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                      "completion_tokens_details": {"reasoning_tokens": 1}},
        }),
        json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}}]}),
    ];
    for answer in answers {
        let from_value =
            ferrolite_protocols::responses::answer_bytes_from_chat(&answer, &request, "asked")
                .unwrap();
        let bytes = serde_json::to_vec(&answer).unwrap();
        let from_bytes =
            ferrolite_protocols::responses::answer_bytes_from_chat_bytes(&bytes, &request, "asked")
                .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&from_bytes).unwrap(),
            serde_json::from_slice::<Value>(&from_value).unwrap(),
        );
    }
    for bad in [&b"[1, 2]"[..], b"{\"choices\": [{}]}", b"not json"] {
        assert!(
            ferrolite_protocols::responses::answer_bytes_from_chat_bytes(bad, &request, "asked")
                .is_err()
        );
    }
}
