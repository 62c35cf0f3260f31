//! Google's Gemini protocol (`generateContent` and `streamGenerateContent?alt=sse`, served by
//! the Gemini API and by Vertex AI alike), outbound: [`request_from_chat`] translates a
//! canonical chat request to a `GenerateContentRequest`, [`answer_to_chat`] a
//! `GenerateContentResponse` back to a `chat.completion`, and [`ChatChunks`] a stream's
//! responses to `chat.completion.chunk`s. The mapping follows LiteLLM's `VertexGeminiConfig`
//! (`litellm/llms/vertex_ai/gemini/`).
//!
//! | canonical | Gemini |
//! |---|---|
//! | `system` / `developer` messages | `systemInstruction.parts[].text` |
//! | `user` / `assistant` messages | `contents[]` with role `user` / `model` (consecutive turns of one role merged) |
//! | text, `image_url` (`data:` URL), `input_audio`, `file` | `text`, `inlineData {mimeType, data}` |
//! | `image_url` / `file` with a `gs://` or `http(s)://` URL | `fileData {mimeType, fileUri}` (the type from `format` or the extension) |
//! | `tool_calls` | `functionCall {name, args}` parts of the `model` turn |
//! | `tool` messages | `functionResponse {name, response: {content}}` parts of a `user` turn, named by the call they answer |
//! | `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `top_k`, `stop`, `n`, `seed`, `presence_penalty`, `frequency_penalty`, `logprobs`, `top_logprobs` | `generationConfig` `maxOutputTokens`, `temperature`, `topP`, `topK`, `stopSequences`, `candidateCount`, `seed`, `presencePenalty`, `frequencyPenalty`, `responseLogprobs`, `logprobs` |
//! | `response_format` `json_object` / `json_schema` / `text` | `responseMimeType` (+ `responseSchema`, without `additionalProperties` and `strict`) |
//! | `reasoning_effort` | `thinkingConfig` (`thinkingBudget` and `includeThoughts`; `thinkingLevel` for Gemini 3) |
//! | `tools` (functions), the older `functions` | `tools[0].functionDeclarations` |
//! | `tool_choice` (or the older `function_call`) `auto` / `none` / `required` / a function | `toolConfig.functionCallingConfig` `AUTO` / `NONE` / `ANY` / `ANY` + `allowedFunctionNames` |
//!
//! Gemini's own `safety_settings` and `cached_content` go as `safetySettings` and
//! `cachedContent`; the router's and LiteLLM's controls (`metadata`, `tags`, `timeout`, `user`,
//! ...) are not sent.
//!
//! Answers: the candidates' text parts joined (`thought: true` parts as `reasoning_content`),
//! `functionCall` parts as `tool_calls` (ids generated from the answer, with the call's
//! `thoughtSignature` after [`THOUGHT_SIGNATURE_SEPARATOR`], sent back with the call), `finishReason` as
//! LiteLLM maps it (`STOP` → `stop`, `MAX_TOKENS` → `length`, `SAFETY`, `RECITATION`,
//! `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, ... → `content_filter`; `tool_calls` when the
//! candidate called a function), `usageMetadata` as `usage` (`cachedContentTokenCount` as
//! cached prompt tokens, `thoughtsTokenCount` as reasoning tokens, counted in the completion
//! tokens as LiteLLM counts them). A prompt Gemini blocked (`promptFeedback.blockReason`, no
//! candidates) is one `content_filter` choice with no content.
//!
//! What Gemini cannot express (an unknown request field, `logit_bias`, a message role or
//! content part it has no place for, a non-function tool) is a [`TranslateError`] naming the
//! field.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::TranslateError;
use crate::out::{self, Obj, Out, obj};
use serde_json::value::RawValue;

/// The request fields that never reach the provider: the router's and LiteLLM's own, and what
/// the backend sets itself (the model is in the URL, streaming is the endpoint).
const NOT_SENT: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "mock_response",
    "metadata_litellm",
    "litellm_metadata",
    "caching",
    "cache",
    "tags",
    "timeout",
    "request_timeout",
];

/// What separates a tool call's id from the thought signature Gemini gave its call (LiteLLM's
/// `THOUGHT_SIGNATURE_SEPARATOR`): the signature travels in the id through OpenAI clients and
/// goes back to Gemini with the call in the next turn, as Gemini 3 requires.
pub const THOUGHT_SIGNATURE_SEPARATOR: &str = "__thought__";

/// LiteLLM's thinking budgets for `reasoning_effort` (`DEFAULT_REASONING_EFFORT_*_THINKING_BUDGET`).
const THINKING_BUDGET_MINIMAL: i64 = 128;
const THINKING_BUDGET_LOW: i64 = 1024;
const THINKING_BUDGET_MEDIUM: i64 = 2048;
const THINKING_BUDGET_HIGH: i64 = 4096;

fn err(field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
    TranslateError::new(field, reason)
}

/// Translates a canonical chat request to a Gemini `GenerateContentRequest` (see the module
/// documentation). The model and whether it streams are not in the body: the caller puts them
/// in the URL.
pub fn request_from_chat(chat: &Value) -> Result<Value, TranslateError> {
    let model = chat.get("model").and_then(Value::as_str).unwrap_or("");
    Ok(request_out(chat, model)?.into_value())
}

/// [`request_from_chat`] for `model` (the Gemini model called, whatever the request's own
/// `model` says) written straight to the bytes sent: the same body, built from the borrowed
/// parts of `chat` without a tree of its own.
pub fn request_bytes_from_chat(chat: &Value, model: &str) -> Result<Vec<u8>, TranslateError> {
    out::to_bytes(&request_out(chat, model)?)
}

/// The `GenerateContentRequest` of `chat` for `model`, borrowing from `chat`.
fn request_out<'a>(chat: &'a Value, model: &str) -> Result<Out<'a>, TranslateError> {
    let object = chat
        .as_object()
        .ok_or_else(|| err("", "the request is not a JSON object"))?;
    let mut out = Obj::with_capacity(6);
    let messages = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| err("messages", "required: a list of messages"))?;
    let (system, mut contents) = contents_of(messages)?;
    if contents.is_empty() && !system.is_empty() {
        // Gemini needs one turn: LiteLLM's `_default_user_message_when_system_message_passed`.
        contents.push(obj! {"role": "user", "parts": vec![obj! {"text": "."}]});
    }
    if !system.is_empty() {
        out.push("systemInstruction", obj! {"parts": system});
    }
    out.push("contents", contents);

    let mut config = Obj::new();
    let mut tools: Option<Out<'_>> = None;
    let mut tool_config: Option<Out<'_>> = None;
    for (name, value) in object {
        if value.is_null() || NOT_SENT.contains(&name.as_str()) || name == "messages" {
            continue;
        }
        let field = name.as_str();
        match field {
            "max_tokens" | "max_completion_tokens" => {
                config.insert("maxOutputTokens", integer(field, value)?);
            }
            "temperature" => {
                config.insert("temperature", number(field, value)?);
            }
            "top_p" => {
                config.insert("topP", number(field, value)?);
            }
            "top_k" => {
                config.insert("topK", number(field, value)?);
            }
            "n" => {
                config.insert("candidateCount", integer(field, value)?);
            }
            "seed" => {
                config.insert("seed", integer(field, value)?);
            }
            "presence_penalty" => {
                config.insert("presencePenalty", number(field, value)?);
            }
            "frequency_penalty" => {
                config.insert("frequencyPenalty", number(field, value)?);
            }
            "logprobs" => {
                let on = value
                    .as_bool()
                    .ok_or_else(|| err(field, "expected true or false"))?;
                config.insert("responseLogprobs", on);
            }
            "top_logprobs" => {
                config.insert("logprobs", integer(field, value)?);
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => Out::Array(vec![Out::Str(s)]),
                    Value::Array(items) if items.iter().all(Value::is_string) => Out::Ref(value),
                    _ => return Err(err(field, "expected a string or a list of strings")),
                };
                config.insert("stopSequences", stops);
            }
            "response_format" => response_format(value, &mut config)?,
            "reasoning_effort" => {
                let effort = value
                    .as_str()
                    .ok_or_else(|| err(field, "expected a string"))?;
                config.insert("thinkingConfig", thinking_config(effort, model)?);
            }
            // Gemini's own parameters, passed as LiteLLM passes them.
            "safety_settings" => {
                if !value.is_array() {
                    return Err(err(field, "expected a list of safety settings"));
                }
                out.insert("safetySettings", value);
            }
            "cached_content" => {
                if !value.is_string() {
                    return Err(err(field, "expected the name of a cached content"));
                }
                out.insert("cachedContent", value);
            }
            "tools" => tools = tools_of(value)?,
            "tool_choice" => tool_config = Some(tool_choice(value)?),
            // OpenAI's older function calling: `functions` as tools, `function_call` as the
            // choice (`auto`, `none`, or `{name}`).
            "functions" => {
                let functions = value
                    .as_array()
                    .ok_or_else(|| err(field, "expected a list of functions"))?;
                let as_tools: Vec<Value> = functions
                    .iter()
                    .map(|f| json!({"type": "function", "function": f}))
                    .collect();
                tools = tools_of(&Value::Array(as_tools))
                    .map(|tools| tools.map(|t| Out::Owned(t.into_value())))
                    .map_err(|e| {
                        err(
                            e.field
                                .replacen("tools", "functions", 1)
                                .replace(".function", ""),
                            e.reason,
                        )
                    })?;
            }
            "function_call" => {
                let choice = match value {
                    Value::Object(f) => json!({"type": "function", "function": f}),
                    other => other.clone(),
                };
                tool_config = Some(
                    tool_choice(&choice)
                        .map(|c| Out::Owned(c.into_value()))
                        .map_err(|e| err(field, e.reason))?,
                );
            }
            "parallel_tool_calls" => {
                let several = object
                    .get("tools")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.len() > 1);
                if value == &Value::Bool(false) && several {
                    return Err(err(
                        field,
                        "Gemini cannot be kept to one tool call when several tools are given",
                    ));
                }
            }
            _ => return Err(err(field, "Gemini's generateContent has no such parameter")),
        }
    }
    if !config.is_empty() {
        out.insert("generationConfig", config);
    }
    if let Some(tools) = tools {
        out.insert("tools", tools);
    }
    if let Some(tool_config) = tool_config {
        out.insert("toolConfig", tool_config);
    }
    Ok(Out::Object(out))
}

fn integer<'a>(field: &str, value: &'a Value) -> Result<Out<'a>, TranslateError> {
    if value.is_i64() || value.is_u64() {
        Ok(Out::Ref(value))
    } else {
        Err(err(field, "expected an integer"))
    }
}

fn number<'a>(field: &str, value: &'a Value) -> Result<Out<'a>, TranslateError> {
    if value.is_number() {
        Ok(Out::Ref(value))
    } else {
        Err(err(field, "expected a number"))
    }
}

/// `response_format` as LiteLLM's `apply_response_schema_transformation` maps it.
fn response_format<'a>(value: &'a Value, config: &mut Obj<'a>) -> Result<(), TranslateError> {
    let kind = value.get("type").and_then(Value::as_str).ok_or_else(|| {
        err(
            "response_format.type",
            "required: text, json_object or json_schema",
        )
    })?;
    match kind {
        "text" => {
            config.insert("responseMimeType", "text/plain");
        }
        "json_object" => {
            config.insert("responseMimeType", "application/json");
            if let Some(schema) = value.get("response_schema") {
                config.insert("responseSchema", schema_for_gemini(schema));
            }
        }
        "json_schema" => {
            config.insert("responseMimeType", "application/json");
            let schema = value
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .ok_or_else(|| err("response_format.json_schema.schema", "required"))?;
            config.insert("responseSchema", schema_for_gemini(schema));
        }
        _ => {
            return Err(err(
                "response_format.type",
                format!("Gemini has no response format `{kind}`"),
            ));
        }
    }
    Ok(())
}

/// A JSON schema without what Gemini's `Schema` refuses (`additionalProperties`, `strict`,
/// `$schema`), as LiteLLM strips them.
fn schema_for_gemini(schema: &Value) -> Out<'_> {
    if !has_refused_keys(schema) {
        return Out::Ref(schema);
    }
    match schema {
        Value::Object(map) => Out::Object(Obj::from_fields(
            map.iter()
                .filter(|(k, _)| !refused_key(k))
                .map(|(k, v)| (k.as_str(), schema_for_gemini(v)))
                .collect(),
        )),
        Value::Array(items) => Out::Array(items.iter().map(schema_for_gemini).collect()),
        other => Out::Ref(other),
    }
}

/// A schema key Gemini's `Schema` refuses.
fn refused_key(key: &str) -> bool {
    matches!(key, "additionalProperties" | "strict" | "$schema")
}

/// Whether a schema holds a key Gemini refuses, at any depth.
fn has_refused_keys(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| refused_key(k) || has_refused_keys(v)),
        Value::Array(items) => items.iter().any(has_refused_keys),
        _ => false,
    }
}

/// `reasoning_effort` as LiteLLM maps it: a thinking level for Gemini 3 and later, a thinking
/// budget before.
fn thinking_config<'a>(effort: &str, model: &str) -> Result<Out<'a>, TranslateError> {
    let gemini_3 = model.contains("gemini-3");
    let (budget, level, include) = match effort {
        "minimal" => (THINKING_BUDGET_MINIMAL, "low", true),
        "low" => (THINKING_BUDGET_LOW, "low", true),
        "medium" => (THINKING_BUDGET_MEDIUM, "high", true),
        "high" => (THINKING_BUDGET_HIGH, "high", true),
        "none" | "disable" => (0, "low", false),
        _ => {
            return Err(err(
                "reasoning_effort",
                format!("expected minimal, low, medium, high or none, got `{effort}`"),
            ));
        }
    };
    Ok(Out::Owned(if gemini_3 {
        json!({"thinkingLevel": level, "includeThoughts": include})
    } else {
        json!({"thinkingBudget": budget, "includeThoughts": include})
    }))
}

/// `tools` as one Gemini tool of function declarations.
fn tools_of(value: &Value) -> Result<Option<Out<'_>>, TranslateError> {
    let tools = value
        .as_array()
        .ok_or_else(|| err("tools", "expected a list of tools"))?;
    if tools.is_empty() {
        return Ok(None);
    }
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            return Err(err(
                format!("tools[{i}].type"),
                format!("Gemini has no tool of type `{kind}` (only functions)"),
            ));
        }
        let function = tool
            .get("function")
            .ok_or_else(|| err(format!("tools[{i}].function"), "required"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("tools[{i}].function.name"), "required"))?;
        let mut declaration = Obj::with_capacity(3);
        declaration.push("name", name);
        if let Some(description) = function.get("description").filter(|d| !d.is_null()) {
            declaration.push("description", description);
        }
        if let Some(parameters) = function.get("parameters").filter(|p| !p.is_null()) {
            declaration.push("parameters", schema_for_gemini(parameters));
        }
        declarations.push(Out::Object(declaration));
    }
    Ok(Some(Out::Array(vec![
        obj! {"functionDeclarations": declarations},
    ])))
}

/// `tool_choice` as `toolConfig.functionCallingConfig` (LiteLLM's `map_tool_choice_values`).
fn tool_choice(value: &Value) -> Result<Out<'_>, TranslateError> {
    let config = match value {
        Value::String(mode) => match mode.as_str() {
            "auto" => obj! {"mode": "AUTO"},
            "none" => obj! {"mode": "NONE"},
            "required" => obj! {"mode": "ANY"},
            other => {
                return Err(err(
                    "tool_choice",
                    format!("expected auto, none, required or a function, got `{other}`"),
                ));
            }
        },
        Value::Object(choice) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| err("tool_choice.function.name", "required"))?;
            obj! {"mode": "ANY", "allowedFunctionNames": vec![Out::Str(name)]}
        }
        _ => return Err(err("tool_choice", "expected a string or a function choice")),
    };
    Ok(obj! {"functionCallingConfig": config})
}

/// The messages as system instruction parts and `contents` turns.
fn contents_of(messages: &[Value]) -> Result<(Vec<Out<'_>>, Vec<Out<'_>>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Out<'_>>)> = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| err(at("role"), "required"))?;
        match role {
            "system" | "developer" => {
                for text in texts_of(message.get("content"), || at("content"))? {
                    system.push(obj! {"text": text});
                }
            }
            "user" => {
                let mut parts = user_parts(message.get("content"), i)?;
                if !parts.is_empty() && !parts.iter().any(|p| p.has_field("text")) {
                    // Vertex AI refuses a user turn without text ("must have a text
                    // parameter"); LiteLLM adds a blank one.
                    parts.push(obj! {"text": " "});
                }
                push(&mut turns, "user", parts);
            }
            "assistant" => {
                let mut parts: Vec<Out<'_>> = texts_of(message.get("content"), || at("content"))?
                    .into_iter()
                    .map(|text| obj! {"text": text})
                    .collect();
                if let Some(call) = message.get("function_call").filter(|c| !c.is_null()) {
                    parts.push(function_call_part(call, || at("function_call"))?);
                }
                if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| err(at("tool_calls"), "expected a list"))?;
                    for (j, call) in calls.iter().enumerate() {
                        let function = call.get("function").ok_or_else(|| {
                            err(
                                format!("messages[{i}].tool_calls[{j}].function"),
                                "required",
                            )
                        })?;
                        let mut part = function_call_part(function, || {
                            format!("messages[{i}].tool_calls[{j}].function")
                        })?;
                        let signature = call
                            .get("id")
                            .and_then(Value::as_str)
                            .and_then(|id| id.split_once(THOUGHT_SIGNATURE_SEPARATOR))
                            .map(|(_, signature)| signature)
                            .filter(|signature| !signature.is_empty());
                        if let Some(signature) = signature {
                            part.set_field("thoughtSignature", signature);
                        }
                        parts.push(part);
                    }
                }
                push(&mut turns, "model", parts);
            }
            "tool" | "function" => {
                let name = tool_name(messages, i, message)?;
                let content = match message.get("content") {
                    Some(Value::String(s)) => Out::Str(s),
                    other => Out::String(texts_of(other, || at("content"))?.join("")),
                };
                let part = obj! {
                    "functionResponse": obj! {"name": name, "response": obj! {"content": content}}
                };
                push(&mut turns, "user", vec![part]);
            }
            other => {
                return Err(err(
                    at("role"),
                    format!("Gemini has no place for a `{other}` message"),
                ));
            }
        }
    }
    let contents = turns
        .into_iter()
        .map(|(role, parts)| obj! {"role": role, "parts": parts})
        .collect();
    Ok((system, contents))
}

/// Adds `parts` to the last turn when it has `role`, else as a new turn (none when empty).
fn push<'a>(
    turns: &mut Vec<(&'static str, Vec<Out<'a>>)>,
    role: &'static str,
    parts: Vec<Out<'a>>,
) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => turns.push((role, parts)),
    }
}

/// A call of a function (`{name, arguments}` with the arguments as JSON text) as a
/// `functionCall` part.
fn function_call_part(
    function: &Value,
    at: impl Fn() -> String,
) -> Result<Out<'_>, TranslateError> {
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("{}.name", at()), "required"))?;
    let arguments = function
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("{}");
    let args = if arguments.trim().is_empty() {
        Out::Object(Obj::new())
    } else {
        serde_json::from_str::<&RawValue>(arguments)
            .ok()
            .filter(|raw| crate::is_object(raw))
            .map(Out::Raw)
            .ok_or_else(|| err(format!("{}.arguments", at()), "not a JSON object"))?
    };
    Ok(obj! {"functionCall": obj! {"name": name, "args": args}})
}

/// The function a tool message answers: the name of the assistant's tool call it names by
/// `tool_call_id`, else its own `name`.
fn tool_name<'a>(
    messages: &'a [Value],
    i: usize,
    message: &'a Value,
) -> Result<&'a str, TranslateError> {
    if let Some(id) = message.get("tool_call_id").and_then(Value::as_str) {
        let found = messages[..i].iter().rev().find_map(|m| {
            m.get("tool_calls")?
                .as_array()?
                .iter()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?
                .get("function")?
                .get("name")?
                .as_str()
        });
        if let Some(name) = found {
            return Ok(name);
        }
    }
    message.get("name").and_then(Value::as_str).ok_or_else(|| {
        err(
            format!("messages[{i}].tool_call_id"),
            "names no earlier tool call (Gemini names a function's answer by the function)",
        )
    })
}

/// The text of a system, assistant or tool message's content (a string or text parts).
fn texts_of(content: Option<&Value>, at: impl Fn() -> String) -> Result<Vec<&str>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                if kind != "text" {
                    return Err(err(
                        format!("{}[{k}].type", at()),
                        format!("Gemini takes only text here, got `{kind}`"),
                    ));
                }
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(format!("{}[{k}].text", at()), "required"))?;
                if !text.is_empty() {
                    texts.push(text);
                }
            }
            Ok(texts)
        }
        Some(_) => Err(err(at(), "expected a string or a list of parts")),
    }
}

/// A user message's content as Gemini parts.
fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Out<'_>>, TranslateError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![obj! {"text": s}]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(err(
                format!("messages[{i}].content"),
                "expected a string or a list of parts",
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].content[{k}].{field}");
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(at("text"), "required"))?;
                if !text.is_empty() {
                    out.push(obj! {"text": text});
                }
            }
            "image_url" => {
                let image = part.get("image_url");
                let (url, format) = match image {
                    Some(Value::String(url)) => (url.as_str(), None),
                    Some(Value::Object(image)) => (
                        image
                            .get("url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| err(at("image_url.url"), "required"))?,
                        image.get("format").and_then(Value::as_str),
                    ),
                    _ => return Err(err(at("image_url"), "required: {url}")),
                };
                out.push(media_part(url, format, &at("image_url.url"))?);
            }
            "input_audio" => {
                let audio = part
                    .get("input_audio")
                    .ok_or_else(|| err(at("input_audio"), "required"))?;
                let data = audio
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(at("input_audio.data"), "required"))?;
                let format = audio
                    .get("format")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(at("input_audio.format"), "required"))?;
                let mime = if format.contains('/') {
                    Out::Str(format)
                } else {
                    Out::String(format!("audio/{format}"))
                };
                out.push(obj! {"inlineData": obj! {"mimeType": mime, "data": data}});
            }
            "file" => {
                let file = part
                    .get("file")
                    .ok_or_else(|| err(at("file"), "required"))?;
                let format = file.get("format").and_then(Value::as_str);
                let data = file
                    .get("file_data")
                    .or_else(|| file.get("file_id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(at("file"), "required: file_data or file_id"))?;
                out.push(media_part(data, format, &at("file"))?);
            }
            other => {
                return Err(err(
                    at("type"),
                    format!("Gemini has no content part `{other}`"),
                ));
            }
        }
    }
    Ok(out)
}

/// A media URL as a Gemini part (LiteLLM's `_process_gemini_image`): a `data:` URL inline, a
/// `gs://` or `http(s)://` URL by reference with its type from `format` or its extension.
fn media_part<'a>(
    url: &'a str,
    format: Option<&'a str>,
    at: &str,
) -> Result<Out<'a>, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| err(at, "a data URL must be base64 (`data:TYPE;base64,...`)"))?;
        let mime = format.unwrap_or(mime);
        return Ok(obj! {"inlineData": obj! {"mimeType": mime, "data": data}});
    }
    if url.starts_with("gs://") || url.starts_with("https://") || url.starts_with("http://") {
        let mime = format.or_else(|| mime_of_url(url)).ok_or_else(|| {
            err(
                at,
                "the file's type is not known from its extension: set `format` (a MIME type)",
            )
        })?;
        return Ok(obj! {"fileData": obj! {"mimeType": mime, "fileUri": url}});
    }
    Err(err(
        at,
        "expected a data: URL, a gs:// URL or an http(s):// URL",
    ))
}

/// The MIME type Gemini accepts for a URL's extension (LiteLLM's
/// `_get_image_mime_type_from_url`).
fn mime_of_url(url: &str) -> Option<&'static str> {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let table: [(&[&str], &str); 15] = [
        (&[".jpg", ".jpeg"], "image/jpeg"),
        (&[".png"], "image/png"),
        (&[".webp"], "image/webp"),
        (&[".gif"], "image/gif"),
        (&[".mp4"], "video/mp4"),
        (&[".mov"], "video/mov"),
        (&[".mpeg", ".mpg"], "video/mpeg"),
        (&[".avi"], "video/avi"),
        (&[".wmv"], "video/wmv"),
        (&[".mpegps"], "video/mpegps"),
        (&[".flv"], "video/flv"),
        (&[".mp3"], "audio/mp3"),
        (&[".wav"], "audio/wav"),
        (&[".pdf"], "application/pdf"),
        (&[".txt"], "text/plain"),
    ];
    table
        .iter()
        .find(|(extensions, _)| extensions.iter().any(|e| path.ends_with(e)))
        .map(|(_, mime)| *mime)
}

/// Gemini's `finishReason` as the canonical `finish_reason` (LiteLLM's
/// `get_finish_reason_mapping`).
pub fn finish_reason_of(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "LANGUAGE" | "OTHER" | "BLOCKLIST" | "PROHIBITED_CONTENT"
        | "SPII" | "IMAGE_SAFETY" => "content_filter",
        // STOP, FINISH_REASON_UNSPECIFIED, MALFORMED_FUNCTION_CALL
        _ => "stop",
    }
}

/// `usageMetadata` as a canonical `usage` (LiteLLM's `_calculate_usage`): the thinking tokens
/// are reasoning tokens, added to the completion tokens when `candidatesTokenCount` leaves them
/// out (prompt + candidates != total).
pub fn usage_of(metadata: &Value) -> Value {
    let count = |name: &str| metadata.get(name).and_then(Value::as_u64);
    let prompt = count("promptTokenCount").unwrap_or(0);
    let candidates = count("candidatesTokenCount").unwrap_or(0);
    let total = count("totalTokenCount");
    let thoughts = count("thoughtsTokenCount");
    let mut completion = candidates;
    if let Some(thoughts) = thoughts.filter(|t| *t > 0) {
        if total != Some(prompt.saturating_add(candidates)) {
            completion = completion.saturating_add(thoughts);
        }
    }
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total.unwrap_or(prompt.saturating_add(completion)),
    });
    if let Some(cached) = count("cachedContentTokenCount") {
        usage["prompt_tokens_details"] = json!({ "cached_tokens": cached });
    }
    if let Some(thoughts) = thoughts {
        usage["completion_tokens_details"] = json!({ "reasoning_tokens": thoughts });
    }
    usage
}

/// A tool call id generated from what identifies the call in the answer (the same answer gives
/// the same ids; two calls of one answer never share one).
fn call_id(answer: &Value, candidate: usize, call: usize, function: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    answer
        .get("responseId")
        .map(Value::to_string)
        .hash(&mut hasher);
    answer
        .get("createTime")
        .map(Value::to_string)
        .hash(&mut hasher);
    candidate.hash(&mut hasher);
    call.hash(&mut hasher);
    function.to_string().hash(&mut hasher);
    let high = hasher.finish();
    "gemini".hash(&mut hasher);
    let low = hasher.finish();
    format!("call_{high:016x}{low:012x}")
}

/// One candidate's parts: content, reasoning content and tool calls.
struct Parts {
    content: Option<String>,
    reasoning: Option<String>,
    calls: Vec<Value>,
}

fn parts_of(
    answer: &Value,
    candidate: &Value,
    index: usize,
    first_call: usize,
    at: &str,
) -> Result<Parts, TranslateError> {
    let mut out = Parts {
        content: None,
        reasoning: None,
        calls: Vec::new(),
    };
    let parts = match candidate.get("content").and_then(|c| c.get("parts")) {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(err(format!("{at}.content.parts"), "expected a list")),
    };
    for (k, part) in parts.iter().enumerate() {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            let thought = part.get("thought") == Some(&Value::Bool(true));
            let into = if thought {
                &mut out.reasoning
            } else {
                &mut out.content
            };
            into.get_or_insert_with(String::new).push_str(text);
        } else if let Some(call) = part.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).ok_or_else(|| {
                err(
                    format!("{at}.content.parts[{k}].functionCall.name"),
                    "required",
                )
            })?;
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            let n = first_call + out.calls.len();
            let mut id = call_id(answer, index, n, call);
            if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
                id.push_str(THOUGHT_SIGNATURE_SEPARATOR);
                id.push_str(signature);
            }
            out.calls.push(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": args.to_string()},
            }));
        }
        // Other parts (inline data of generated media, executable code) have no place in a
        // chat message's text; LiteLLM leaves them out of the content too.
    }
    Ok(out)
}

/// Translates a Gemini `GenerateContentResponse` to a canonical `chat.completion` of `model`
/// (see the module documentation).
pub fn answer_to_chat(answer: &Value, model: &str) -> Result<Value, TranslateError> {
    if !answer.is_object() {
        return Err(err("", "the answer is not a JSON object"));
    }
    let candidates = match answer.get("candidates") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(c)) => c.as_slice(),
        Some(_) => return Err(err("candidates", "expected a list")),
    };
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    for (i, candidate) in candidates.iter().enumerate() {
        let at = format!("candidates[{i}]");
        let index = candidate
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        let parts = parts_of(answer, candidate, i, 0, &at)?;
        let mut message = json!({"role": "assistant", "content": parts.content});
        if let Some(reasoning) = parts.reasoning {
            message["reasoning_content"] = reasoning.into();
        }
        let finish = if !parts.calls.is_empty() {
            "tool_calls"
        } else {
            candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .map_or("stop", finish_reason_of)
        };
        if !parts.calls.is_empty() {
            message["tool_calls"] = Value::Array(parts.calls);
        }
        choices.push(json!({"index": index, "message": message, "finish_reason": finish}));
    }
    if choices.is_empty() && blocked(answer).is_some() {
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null},
            "finish_reason": "content_filter",
        }));
    }
    let mut chat = json!({
        "id": answer.get("responseId").and_then(Value::as_str).map_or_else(
            || call_id(answer, 0, 0, &Value::Null).replacen("call_", "chatcmpl-", 1),
            |id| format!("chatcmpl-{id}"),
        ),
        "object": "chat.completion",
        "created": created_of(answer),
        "model": model,
        "choices": choices,
    });
    if let Some(metadata) = answer.get("usageMetadata") {
        chat["usage"] = usage_of(metadata);
    }
    Ok(chat)
}

/// Why Gemini blocked the prompt (`promptFeedback.blockReason`), if it did.
pub fn blocked(answer: &Value) -> Option<&str> {
    answer
        .get("promptFeedback")?
        .get("blockReason")?
        .as_str()
        .filter(|r| !r.is_empty() && *r != "BLOCK_REASON_UNSPECIFIED")
}

/// The answer's `createTime` (RFC 3339) as Unix seconds; 0 when it has none.
fn created_of(answer: &Value) -> u64 {
    let Some(time) = answer.get("createTime").and_then(Value::as_str) else {
        return 0;
    };
    // YYYY-MM-DDTHH:MM:SS...
    let field = |range: std::ops::Range<usize>| time.get(range)?.parse::<i64>().ok();
    let (Some(y), Some(m), Some(d), Some(h), Some(min), Some(s)) = (
        field(0..4),
        field(5..7),
        field(8..10),
        field(11..13),
        field(14..16),
        field(17..19),
    ) else {
        return 0;
    };
    // Days from the civil date (Howard Hinnant's `days_from_civil`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + s).unwrap_or(0)
}

/// A `streamGenerateContent?alt=sse` stream as `chat.completion.chunk`s: [`ChatChunks::push`]
/// takes each event's data (one `GenerateContentResponse`) and returns the chunks it makes
/// (the first with `delta.role`, then content, reasoning and tool-call deltas, one with the
/// `finish_reason` of each candidate); [`ChatChunks::finish`] returns the last, with empty
/// `choices` and the usage of the last `usageMetadata` seen (Gemini repeats it, cumulative, on
/// every event).
#[derive(Debug)]
pub struct ChatChunks {
    model: String,
    id: Option<String>,
    created: u64,
    /// Candidates that have had their role chunk.
    started: Vec<u64>,
    /// Tool calls so far, per candidate (the next call's index).
    calls: Vec<(u64, usize)>,
    usage: Option<Value>,
    finished: bool,
}

impl ChatChunks {
    /// A stream of `model`'s answer, before its first event.
    pub fn new(model: &str) -> Self {
        ChatChunks {
            model: model.to_string(),
            id: None,
            created: 0,
            started: Vec::new(),
            calls: Vec::new(),
            usage: None,
            finished: false,
        }
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The chunks one event's response makes.
    pub fn push(&mut self, event: &Value) -> Result<Vec<Value>, TranslateError> {
        if !event.is_object() {
            return Err(err("", "a stream event is not a JSON object"));
        }
        if self.id.is_none() {
            self.id = Some(match event.get("responseId").and_then(Value::as_str) {
                Some(id) => format!("chatcmpl-{id}"),
                None => call_id(event, 0, 0, &Value::Null).replacen("call_", "chatcmpl-", 1),
            });
            self.created = created_of(event);
        }
        if let Some(metadata) = event.get("usageMetadata") {
            self.usage = Some(usage_of(metadata));
        }
        let candidates = match event.get("candidates") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(c)) => c.as_slice(),
            Some(_) => return Err(err("candidates", "expected a list")),
        };
        let mut out = Vec::new();
        if candidates.is_empty() && blocked(event).is_some() && self.started.is_empty() {
            self.started.push(0);
            out.push(self.chunk(vec![json!({
                "index": 0, "delta": {"role": "assistant", "content": null}, "finish_reason": null,
            })]));
            out.push(self.chunk(vec![json!({
                "index": 0, "delta": {}, "finish_reason": "content_filter",
            })]));
            return Ok(out);
        }
        for (i, candidate) in candidates.iter().enumerate() {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            let first_call = self
                .calls
                .iter()
                .find(|(c, _)| *c == index)
                .map_or(0, |(_, n)| *n);
            let parts = parts_of(event, candidate, i, first_call, &format!("candidates[{i}]"))?;
            if !self.started.contains(&index) {
                self.started.push(index);
                out.push(self.chunk(vec![json!({
                    "index": index, "delta": {"role": "assistant", "content": ""},
                    "finish_reason": null,
                })]));
            }
            let mut delta = Map::new();
            if let Some(text) = parts.content {
                delta.insert("content".into(), text.into());
            }
            if let Some(reasoning) = parts.reasoning {
                delta.insert("reasoning_content".into(), reasoning.into());
            }
            if !parts.calls.is_empty() {
                let calls: Vec<Value> = parts
                    .calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut call)| {
                        call["index"] = (first_call + k).into();
                        call
                    })
                    .collect();
                let n = first_call + calls.len();
                match self.calls.iter_mut().find(|(c, _)| *c == index) {
                    Some(entry) => entry.1 = n,
                    None => self.calls.push((index, n)),
                }
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            if !delta.is_empty() {
                out.push(self.chunk(vec![json!({
                    "index": index, "delta": delta, "finish_reason": null,
                })]));
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                let called = self.calls.iter().any(|(c, n)| *c == index && *n > 0);
                let finish = if called {
                    "tool_calls"
                } else {
                    finish_reason_of(reason)
                };
                out.push(self.chunk(vec![json!({
                    "index": index, "delta": {}, "finish_reason": finish,
                })]));
            }
        }
        Ok(out)
    }

    /// The last chunk: empty `choices` and the usage, once (nothing when no event had usage).
    pub fn finish(&mut self) -> Vec<Value> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        match self.usage.take() {
            Some(usage) => {
                let mut chunk = self.chunk(Vec::new());
                chunk["usage"] = usage;
                vec![chunk]
            }
            None => Vec::new(),
        }
    }

    /// The usage of the last event that reported it.
    pub fn usage(&self) -> Option<&Value> {
        self.usage.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_token_counts_saturate_instead_of_overflowing() {
        let max = u64::MAX;
        let usage = usage_of(
            &json!({"promptTokenCount": max, "candidatesTokenCount": max,
            "thoughtsTokenCount": max}),
        );
        assert_eq!(usage["prompt_tokens"], max);
        assert_eq!(usage["completion_tokens"], max);
        assert_eq!(usage["total_tokens"], max);
        let usage = usage_of(&json!({"promptTokenCount": 3, "candidatesTokenCount": max,
            "thoughtsTokenCount": 4, "totalTokenCount": 10}));
        assert_eq!(usage["completion_tokens"], max);
        assert_eq!(usage["total_tokens"], 10);
    }

    #[test]
    fn create_time_is_read_as_unix_seconds() {
        let answer = json!({"createTime": "2024-05-01T12:00:30.123456Z"});
        assert_eq!(created_of(&answer), 1_714_564_830);
    }

    #[test]
    fn thoughts_are_added_to_completion_tokens_when_candidates_leave_them_out() {
        let exclusive = json!({"promptTokenCount": 10, "candidatesTokenCount": 5,
            "thoughtsTokenCount": 7, "totalTokenCount": 22});
        assert_eq!(usage_of(&exclusive)["completion_tokens"], 12);
        let inclusive = json!({"promptTokenCount": 10, "candidatesTokenCount": 12,
            "thoughtsTokenCount": 7, "totalTokenCount": 22});
        assert_eq!(usage_of(&inclusive)["completion_tokens"], 12);
    }
}
