//! Gemini's translators keep what Gemini expresses: a canonical request translated keeps every
//! field, and a Gemini answer translated keeps its content, tool calls, finish reason and usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrolite_protocols::gemini::{ChatChunks, answer_to_chat, request_from_chat};
use proptest::prelude::*;
use serde_json::{Value, json};

/// One exchange of a conversation: a user turn, and maybe the model's text and tool calls
/// answered by tool messages.
#[derive(Debug, Clone)]
struct Exchange {
    user: String,
    reply: Option<String>,
    calls: Vec<(String, i64)>,
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,é]{1,24}"
}

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        text(),
        proptest::option::of(text()),
        proptest::collection::vec(("[a-z_]{1,10}", -100i64..100), 0..3),
    )
        .prop_map(|(user, reply, calls)| Exchange { user, reply, calls })
}

#[derive(Debug, Clone)]
struct Config {
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Vec<String>>,
    n: Option<u64>,
    json_mode: bool,
}

fn config() -> impl Strategy<Value = Config> {
    (
        proptest::option::of(1u64..4096),
        proptest::option::of((0u32..=20).prop_map(|t| f64::from(t) / 10.0)),
        proptest::option::of((1u32..=10).prop_map(|t| f64::from(t) / 10.0)),
        proptest::option::of(proptest::collection::vec(text(), 1..3)),
        proptest::option::of(1u64..4),
        any::<bool>(),
    )
        .prop_map(
            |(max_tokens, temperature, top_p, stop, n, json_mode)| Config {
                max_tokens,
                temperature,
                top_p,
                stop,
                n,
                json_mode,
            },
        )
}

fn request(system: &Option<String>, exchanges: &[Exchange], config: &Config, tools: bool) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let mut n = 0;
    for exchange in exchanges {
        messages
            .push(json!({"role": "user", "content": [{"type": "text", "text": exchange.user}]}));
        if exchange.reply.is_none() && exchange.calls.is_empty() {
            continue;
        }
        let calls: Vec<Value> = exchange
            .calls
            .iter()
            .map(|(name, x)| {
                n += 1;
                json!({"id": format!("call_{n}"), "type": "function",
                    "function": {"name": name, "arguments": json!({"x": x}).to_string()}})
            })
            .collect();
        let mut assistant = json!({"role": "assistant", "content": exchange.reply});
        if !calls.is_empty() {
            assistant["tool_calls"] = Value::Array(calls.clone());
        }
        messages.push(assistant);
        for call in &calls {
            messages.push(json!({"role": "tool", "tool_call_id": call["id"],
                "content": format!("result of {}", call["function"]["name"].as_str().unwrap())}));
        }
    }
    let mut body = json!({"model": "gemini-2.5-flash", "messages": messages});
    if let Some(v) = config.max_tokens {
        body["max_tokens"] = v.into();
    }
    if let Some(v) = config.temperature {
        body["temperature"] = v.into();
    }
    if let Some(v) = config.top_p {
        body["top_p"] = v.into();
    }
    if let Some(v) = &config.stop {
        body["stop"] = json!(v);
    }
    if let Some(v) = config.n {
        body["n"] = v.into();
    }
    if config.json_mode {
        body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "r",
            "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                "additionalProperties": false}, "strict": true}});
    }
    if tools {
        body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
            "description": "looks up", "parameters": {"type": "object",
                "properties": {"x": {"type": "integer"}}}}}]);
        body["tool_choice"] = json!({"type": "function", "function": {"name": "lookup"}});
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_request_gemini_expresses_keeps_every_field(
        system in proptest::option::of(text()),
        exchanges in proptest::collection::vec(exchange(), 1..5),
        config in config(),
        tools in any::<bool>(),
    ) {
        let chat = request(&system, &exchanges, &config, tools);
        let gemini = request_from_chat(&chat).unwrap();
        // The bytes the backend sends are that request.
        let bytes = ferrolite_protocols::gemini::request_bytes_from_chat(&chat, chat["model"].as_str().unwrap_or("")).unwrap();
        prop_assert_eq!(&serde_json::from_slice::<Value>(&bytes).unwrap(), &gemini);

        match &system {
            Some(system) => prop_assert_eq!(&gemini["systemInstruction"]["parts"][0]["text"], &json!(system)),
            None => prop_assert!(gemini.get("systemInstruction").is_none()),
        }
        let contents = gemini["contents"].as_array().unwrap();
        // Roles alternate (consecutive turns of one role merged) and are only user/model.
        for pair in contents.windows(2) {
            prop_assert_ne!(&pair[0]["role"], &pair[1]["role"]);
        }
        let parts = |role: &str, kind: &str| -> Vec<Value> {
            contents.iter().filter(|c| c["role"] == role)
                .flat_map(|c| c["parts"].as_array().unwrap().iter())
                .filter_map(|p| p.get(kind).cloned()).collect()
        };
        let user_texts: Vec<Value> = exchanges.iter().map(|e| json!(e.user)).collect();
        prop_assert_eq!(parts("user", "text"), user_texts);
        let replies: Vec<Value> = exchanges.iter().filter_map(|e| e.reply.clone()).map(Value::from).collect();
        prop_assert_eq!(parts("model", "text"), replies);
        let calls: Vec<Value> = exchanges.iter().flat_map(|e| e.calls.iter())
            .map(|(name, x)| json!({"name": name, "args": {"x": x}})).collect();
        prop_assert_eq!(parts("model", "functionCall"), calls);
        let answers: Vec<Value> = exchanges.iter().flat_map(|e| e.calls.iter())
            .map(|(name, _)| json!({"name": name, "response": {"content": format!("result of {name}")}})).collect();
        prop_assert_eq!(parts("user", "functionResponse"), answers);

        let generation = gemini.get("generationConfig").cloned().unwrap_or(json!({}));
        prop_assert_eq!(generation.get("maxOutputTokens").and_then(Value::as_u64), config.max_tokens);
        prop_assert_eq!(generation.get("temperature").and_then(Value::as_f64), config.temperature);
        prop_assert_eq!(generation.get("topP").and_then(Value::as_f64), config.top_p);
        prop_assert_eq!(generation.get("stopSequences").cloned(), config.stop.as_ref().map(|s| json!(s)));
        prop_assert_eq!(generation.get("candidateCount").and_then(Value::as_u64), config.n);
        if config.json_mode {
            prop_assert_eq!(&generation["responseMimeType"], "application/json");
            prop_assert_eq!(&generation["responseSchema"],
                &json!({"type": "object", "properties": {"a": {"type": "string"}}}));
        } else {
            prop_assert!(generation.get("responseMimeType").is_none());
        }
        if tools {
            prop_assert_eq!(&gemini["tools"][0]["functionDeclarations"][0]["name"], "lookup");
            prop_assert_eq!(&gemini["tools"][0]["functionDeclarations"][0]["parameters"]["properties"]["x"]["type"], "integer");
            prop_assert_eq!(&gemini["toolConfig"], &json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}));
        } else {
            prop_assert!(gemini.get("tools").is_none());
        }
    }

    #[test]
    fn a_gemini_answer_keeps_content_tool_calls_finish_reason_and_usage(
        texts in proptest::collection::vec(text(), 0..4),
        thoughts in proptest::collection::vec(text(), 0..2),
        calls in proptest::collection::vec(("[a-z_]{1,10}", -100i64..100), 0..3),
        finish in prop::sample::select(vec!["STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "BLOCKLIST", "OTHER"]),
        prompt in 0u64..100_000,
        candidates in 0u64..10_000,
        thinking in proptest::option::of(0u64..5_000),
        cached in proptest::option::of(0u64..100),
    ) {
        let mut parts: Vec<Value> = thoughts.iter().map(|t| json!({"text": t, "thought": true})).collect();
        parts.extend(texts.iter().map(|t| json!({"text": t})));
        parts.extend(calls.iter().map(|(name, x)| json!({"functionCall": {"name": name, "args": {"x": x}}})));
        let mut usage = json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thinking.unwrap_or(0)});
        if let Some(t) = thinking { usage["thoughtsTokenCount"] = t.into(); }
        if let Some(c) = cached { usage["cachedContentTokenCount"] = c.into(); }
        let answer = json!({"candidates": [{"content": {"role": "model", "parts": parts},
            "finishReason": finish, "index": 0}], "usageMetadata": usage,
            "responseId": "r1", "modelVersion": "gemini-2.5-flash"});

        let chat = answer_to_chat(&answer, "gemini/gemini-2.5-flash").unwrap();
        prop_assert_eq!(&chat["object"], "chat.completion");
        prop_assert_eq!(&chat["model"], "gemini/gemini-2.5-flash");
        let message = &chat["choices"][0]["message"];
        let content = texts.concat();
        prop_assert_eq!(&message["content"], &if texts.is_empty() { Value::Null } else { json!(content) });
        let reasoning = thoughts.concat();
        prop_assert_eq!(message.get("reasoning_content").cloned(), (!thoughts.is_empty()).then(|| json!(reasoning)));
        let got: Vec<(String, Value)> = message.get("tool_calls").and_then(Value::as_array).map(|c| c.iter().map(|c| (
            c["function"]["name"].as_str().unwrap().to_string(),
            serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
        )).collect()).unwrap_or_default();
        let want: Vec<(String, Value)> = calls.iter().map(|(n, x)| (n.clone(), json!({"x": x}))).collect();
        prop_assert_eq!(got, want);
        let ids: std::collections::BTreeSet<&str> = message.get("tool_calls").and_then(Value::as_array)
            .map(|c| c.iter().map(|c| c["id"].as_str().unwrap()).collect()).unwrap_or_default();
        prop_assert_eq!(ids.len(), calls.len());
        let expected_finish = if !calls.is_empty() { "tool_calls" } else { match finish {
            "STOP" => "stop", "MAX_TOKENS" => "length", _ => "content_filter" } };
        prop_assert_eq!(&chat["choices"][0]["finish_reason"], expected_finish);
        prop_assert_eq!(&chat["usage"]["prompt_tokens"], &json!(prompt));
        // Thinking tokens are left out of candidatesTokenCount here, so LiteLLM adds them.
        prop_assert_eq!(&chat["usage"]["completion_tokens"], &json!(candidates + thinking.unwrap_or(0)));
        prop_assert_eq!(&chat["usage"]["total_tokens"], &json!(prompt + candidates + thinking.unwrap_or(0)));
        prop_assert_eq!(chat["usage"].get("prompt_tokens_details").map(|d| d["cached_tokens"].clone()), cached.map(Value::from));
        prop_assert_eq!(chat["usage"].get("completion_tokens_details").map(|d| d["reasoning_tokens"].clone()), thinking.map(Value::from));

        // The same answer streamed in one event per part gives the same message.
        let mut chunks = ChatChunks::new("gemini/gemini-2.5-flash");
        let mut streamed = Vec::new();
        let all = answer["candidates"][0]["content"]["parts"].as_array().unwrap().clone();
        for (k, part) in all.iter().enumerate() {
            let mut event = json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                "usageMetadata": usage, "responseId": "r1"});
            if k + 1 == all.len() { event["candidates"][0]["finishReason"] = json!(finish); }
            streamed.extend(chunks.push(&event).unwrap());
        }
        if all.is_empty() {
            streamed.extend(chunks.push(&json!({"candidates": [{"finishReason": finish, "index": 0}],
                "usageMetadata": usage, "responseId": "r1"})).unwrap());
        }
        streamed.extend(chunks.finish());
        prop_assert_eq!(&streamed[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = streamed.iter().filter_map(|c| c["choices"].get(0)?["delta"].get("content")?.as_str().map(str::to_string)).collect();
        prop_assert_eq!(text, content);
        let finishes: Vec<Value> = streamed.iter().filter_map(|c| c["choices"].get(0)?.get("finish_reason")).filter(|f| !f.is_null()).cloned().collect();
        prop_assert_eq!(finishes, vec![json!(expected_finish)]);
        let last = streamed.last().unwrap();
        prop_assert_eq!(&last["choices"], &json!([]));
        prop_assert_eq!(&last["usage"], &chat["usage"]);
        let streamed_calls: Vec<String> = streamed.iter().filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls")?.as_array().cloned())
            .flatten().map(|c| c["function"]["name"].as_str().unwrap().to_string()).collect();
        prop_assert_eq!(streamed_calls, calls.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    }
}

#[test]
fn what_gemini_cannot_express_is_refused_by_field() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}]});
    let mut logit = base.clone();
    logit["logit_bias"] = json!({"1": 2});
    assert_eq!(request_from_chat(&logit).unwrap_err().field, "logit_bias");
    let mut tool = base.clone();
    tool["tools"] = json!([{"type": "web_search_preview"}]);
    assert_eq!(request_from_chat(&tool).unwrap_err().field, "tools[0].type");
    let orphan = json!({"messages": [{"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "nope", "content": "x"}]});
    assert_eq!(
        request_from_chat(&orphan).unwrap_err().field,
        "messages[1].tool_call_id"
    );
    let part = json!({"messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]});
    assert_eq!(
        request_from_chat(&part).unwrap_err().field,
        "messages[0].content[0].type"
    );
}

#[test]
fn images_go_inline_or_by_reference() {
    let chat = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
        {"type": "image_url", "image_url": "https://example.com/dog.webp"},
    ]}]});
    let gemini = request_from_chat(&chat).unwrap();
    assert_eq!(
        gemini["contents"][0]["parts"],
        json!([
            {"text": "what is this"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/dog.webp"}},
        ])
    );
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget_or_level() {
    let chat = json!({"model": "gemini-2.5-pro", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        request_from_chat(&chat).unwrap()["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 4096, "includeThoughts": true})
    );
    let chat = json!({"model": "gemini-3-pro-preview", "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        request_from_chat(&chat).unwrap()["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "low", "includeThoughts": true})
    );
}

#[test]
fn a_blocked_prompt_is_a_content_filter_choice() {
    let answer = json!({"promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}});
    let chat = answer_to_chat(&answer, "gemini-2.5-flash").unwrap();
    assert_eq!(chat["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(chat["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(chat["usage"]["prompt_tokens"], 7);
}

#[test]
fn a_system_message_alone_gets_a_user_turn_and_media_alone_gets_a_blank_text() {
    let chat = json!({"messages": [{"role": "system", "content": "Reply with OK"}]});
    let gemini = request_from_chat(&chat).unwrap();
    assert_eq!(
        gemini["contents"],
        json!([{"role": "user", "parts": [{"text": "."}]}])
    );
    let chat = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "gs://b/c.png"}}]}]});
    let gemini = request_from_chat(&chat).unwrap();
    assert_eq!(
        gemini["contents"][0]["parts"],
        json!([
        {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/c.png"}}, {"text": " "}])
    );
}

#[test]
fn the_older_function_calling_fields_map_as_tools_do() {
    let chat = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
        {"role": "function", "name": "get_weather", "content": "cold"},
    ], "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
       "function_call": {"name": "get_weather"}});
    let gemini = request_from_chat(&chat).unwrap();
    assert_eq!(
        gemini["contents"][1]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}])
    );
    assert_eq!(
        gemini["contents"][2]["parts"],
        json!([{"functionResponse": {"name": "get_weather", "response": {"content": "cold"}}}])
    );
    assert_eq!(
        gemini["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(
        gemini["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
    let bad = json!({"messages": [{"role": "user", "content": "x"}], "functions": [{"description": "no name"}]});
    assert_eq!(
        request_from_chat(&bad).unwrap_err().field,
        "functions[0].name"
    );
}

#[test]
fn gemini_parameters_pass_and_routing_controls_stay_behind() {
    let chat = json!({"messages": [{"role": "user", "content": "x"}],
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "cached_content": "cachedContents/abc", "timeout": 30, "user": "u1", "tags": ["a"],
        "metadata": {"k": "v"}, "stream_options": {"include_usage": true}});
    let gemini = request_from_chat(&chat).unwrap();
    assert_eq!(gemini["safetySettings"][0]["threshold"], "BLOCK_NONE");
    assert_eq!(gemini["cachedContent"], "cachedContents/abc");
    let keys: Vec<&String> = gemini.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cachedContent", "contents", "safetySettings"]);
}

#[test]
fn a_function_calls_thought_signature_goes_back_with_it() {
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "CiQB4/H+sig=="}]},
        "finishReason": "STOP"}]});
    let chat = answer_to_chat(&answer, "gemini-3-pro-preview").unwrap();
    let call = chat["choices"][0]["message"]["tool_calls"][0].clone();
    assert!(
        call["id"]
            .as_str()
            .unwrap()
            .ends_with("__thought__CiQB4/H+sig=="),
        "{call}"
    );
    let next = json!({"model": "gemini-3-pro-preview", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [call.clone()]},
        {"role": "tool", "tool_call_id": call["id"], "content": "done"},
    ]});
    let gemini = request_from_chat(&next).unwrap();
    assert_eq!(
        gemini["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "CiQB4/H+sig=="})
    );
    assert_eq!(
        gemini["contents"][2]["parts"][0]["functionResponse"]["name"],
        "f"
    );
}
