//! OpenAI's Responses API as clients call the gateway in it (`POST /v1/responses`): a request
//! translated to the canonical chat form, canonical answers (whole and streamed) translated
//! back.
//!
//! The mapping follows LiteLLM's bridge from the Responses API to chat completions
//! (`LiteLLMCompletionResponsesConfig`):
//!
//! | Responses request | chat request |
//! |---|---|
//! | `instructions` | a first `system` message |
//! | `input` as a string | one `user` message |
//! | `input` messages (`user`, `assistant`, `system`, `developer`) | messages of that role; `input_text` / `output_text` parts as `text` parts, `input_image` as `image_url` (with its `detail`) |
//! | `function_call` items | an `assistant` message's `tool_calls` (consecutive calls, and a call right after an assistant message, join that message) |
//! | `function_call_output` items | `tool` messages |
//! | `reasoning` items | left out (a model's earlier reasoning has no place in a chat request; LiteLLM leaves it out too) |
//! | `tools` of type `function` | `tools` (`{type: function, function: {name, description, parameters, strict}}`) |
//! | `tool_choice` | `tool_choice` (`{type: function, name}` as `{type: function, function: {name}}`) |
//! | `max_output_tokens` | `max_tokens` |
//! | `text.format` | `response_format` (`json_schema`, `json_object`, `text`); `text.verbosity` as `verbosity` |
//! | `reasoning.effort` | `reasoning_effort` (`reasoning.summary` asks for a summary chat models do not give: left out) |
//! | `temperature`, `top_p`, `user`, `metadata`, `parallel_tool_calls`, `store`, `service_tier`, `prompt_cache_key`, `safety_identifier`, `stream` | the same fields (a stream also asks for `stream_options.include_usage`) |
//! | `include`, `truncation`, `stream_options` | left out (what the answer shows, not what is generated) |
//!
//! Refused with a [`TranslateError`] naming the field: `previous_response_id` and
//! `conversation` (they need the upstream's stored conversation: only an OpenAI deployment
//! called through `/v1/responses` continues one), `background`, `prompt`, `max_tool_calls`,
//! `top_logprobs`, built-in tools (`web_search`, `file_search`, `code_interpreter`,
//! `computer_use_preview`, `mcp`, ...), files (`input_file` parts, images by `file_id`), and
//! input items other than messages, function calls, their outputs and reasoning. Any other
//! field passes to the chat request as it is.
//!
//! A canonical answer becomes a `response` object: a `reasoning` item when the answer has
//! `reasoning_content`, a `message` item with the text (`output_text`, or `refusal`), a
//! `function_call` item per tool call, the usage (`input_tokens`, `output_tokens`, their
//! cached and reasoning details), status `completed`, or `incomplete` when the answer stopped
//! at its token limit (`finish_reason: length`, reason `max_output_tokens`) or at a content
//! filter (`content_filter`); the request's settings are echoed as OpenAI echoes them.

use serde_json::{Map, Value, json};

use crate::TranslateError;
use crate::doc::{Doc, Json};
use crate::out::{self, Obj, Out, obj};

/// Why a `previous_response_id` (or `conversation`) cannot be translated.
const STORED: &str = "needs the upstream's stored conversation: only an OpenAI deployment called \
                      through /v1/responses can continue it";

/// A Responses request as the canonical chat request.
pub fn request_to_chat(request: &Value) -> Result<Value, TranslateError> {
    let object = request
        .as_object()
        .ok_or_else(|| TranslateError::new("", "a Responses request is a JSON object"))?;
    let mut chat = Map::new();
    let mut messages = Vec::new();
    for (name, value) in object {
        match name.as_str() {
            "input" | "instructions" | "tools" | "tool_choice" | "max_output_tokens" | "text"
            | "reasoning" => {}
            "previous_response_id" | "conversation" => {
                if !value.is_null() {
                    return Err(TranslateError::new(name.as_str(), STORED));
                }
            }
            "background" => {
                if value.as_bool() == Some(true) {
                    return Err(TranslateError::new(
                        name.as_str(),
                        "a background response is kept by the upstream to be fetched later; \
                         only an OpenAI deployment called through /v1/responses runs one",
                    ));
                }
            }
            "prompt" | "max_tool_calls" | "top_logprobs" => {
                if !value.is_null() {
                    return Err(TranslateError::new(
                        name.as_str(),
                        "has no counterpart in a chat completion request",
                    ));
                }
            }
            // What the answer shows, not what is generated.
            "include" | "truncation" | "stream_options" => {}
            "stream" => {
                chat.insert(name.clone(), value.clone());
                if value.as_bool() == Some(true) {
                    chat.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            _ => {
                chat.insert(name.clone(), value.clone());
            }
        }
    }
    match object.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(_) => {
            return Err(TranslateError::new("instructions", "is not a string"));
        }
    }
    match object.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        None | Some(Value::Null) => {
            return Err(TranslateError::new("input", "is required"));
        }
        Some(_) => {
            return Err(TranslateError::new(
                "input",
                "is neither a string nor a list of items",
            ));
        }
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = object.get("tools").filter(|t| !t.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| TranslateError::new("tools", "is not a list"))?;
        let tools = tools
            .iter()
            .enumerate()
            .map(|(i, tool)| function_tool(tool, i))
            .collect::<Result<Vec<_>, _>>()?;
        chat.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = object.get("tool_choice").filter(|t| !t.is_null()) {
        chat.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if let Some(max) = object.get("max_output_tokens").filter(|t| !t.is_null()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    if let Some(text) = object.get("text").filter(|t| !t.is_null()) {
        let text = text
            .as_object()
            .ok_or_else(|| TranslateError::new("text", "is not an object"))?;
        if let Some(format) = text.get("format").filter(|t| !t.is_null()) {
            chat.insert("response_format".into(), response_format(format)?);
        }
        if let Some(verbosity) = text.get("verbosity").filter(|t| !t.is_null()) {
            chat.insert("verbosity".into(), verbosity.clone());
        }
    }
    if let Some(reasoning) = object.get("reasoning").filter(|t| !t.is_null()) {
        let reasoning = reasoning
            .as_object()
            .ok_or_else(|| TranslateError::new("reasoning", "is not an object"))?;
        if let Some(effort) = reasoning.get("effort").filter(|t| !t.is_null()) {
            chat.insert("reasoning_effort".into(), effort.clone());
        }
    }
    Ok(Value::Object(chat))
}

/// Appends the chat messages of input item `i`.
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let at = |field: &str| format!("input[{i}].{field}");
    let object = item
        .as_object()
        .ok_or_else(|| TranslateError::new(format!("input[{i}]"), "is not an object"))?;
    let kind = object.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {
            let role = object
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(at("role"), "is required"))?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(TranslateError::new(
                    at("role"),
                    format!("`{role}` is not user, assistant, system or developer"),
                ));
            }
            let content = match object.get("content") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(Value::Array(parts)) => Value::Array(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(j, part)| content_part(part, &format!("input[{i}].content[{j}]")))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(TranslateError::new(
                        at("content"),
                        "is neither a string nor a list of parts",
                    ));
                }
            };
            messages.push(json!({"role": role, "content": content}));
        }
        Some("function_call") => {
            let text = |field: &str| {
                object
                    .get(field)
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(at(field), "is required (a string)"))
            };
            let call = json!({
                "id": text("call_id")?,
                "type": "function",
                "function": {"name": text("name")?, "arguments": text("arguments")?},
            });
            // A call joins the assistant message before it: chat carries one turn's calls
            // (and its text) in one assistant message.
            if let Some(last) = messages
                .last_mut()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
                .and_then(Value::as_object_mut)
            {
                match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    Some(calls) => calls.push(call),
                    None => {
                        last.insert("tool_calls".into(), json!([call]));
                    }
                }
            } else {
                messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
            }
        }
        Some("function_call_output") => {
            let call_id = object
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(at("call_id"), "is required (a string)"))?;
            let content = match object.get("output") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(Value::Array(parts)) => Value::Array(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(j, part)| content_part(part, &format!("input[{i}].output[{j}]")))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(TranslateError::new(
                        at("output"),
                        "is neither a string nor a list of parts",
                    ));
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
        }
        // A model's earlier reasoning: chat requests have no place for it.
        Some("reasoning") => {}
        Some("item_reference") => {
            return Err(TranslateError::new(at("type"), STORED));
        }
        Some(other) => {
            return Err(TranslateError::new(
                at("type"),
                format!("`{other}` items have no counterpart in a chat completion request"),
            ));
        }
    }
    Ok(())
}

/// A message's content part (at `path`) as a chat content part.
fn content_part(part: &Value, path: &str) -> Result<Value, TranslateError> {
    let object = part
        .as_object()
        .ok_or_else(|| TranslateError::new(path, "is not an object"))?;
    match object.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text") => {
            let text = object
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(format!("{path}.text"), "is required"))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("input_image") => {
            if object.get("file_id").is_some_and(|f| !f.is_null()) {
                return Err(TranslateError::new(
                    format!("{path}.file_id"),
                    "a file uploaded to OpenAI is not sent to other upstreams: give the image \
                     by `image_url` (a URL or a data URL)",
                ));
            }
            let url = object
                .get("image_url")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(format!("{path}.image_url"), "is required"))?;
            let mut image = Map::new();
            image.insert("url".into(), Value::String(url.to_string()));
            if let Some(detail) = object.get("detail").filter(|d| !d.is_null()) {
                image.insert("detail".into(), detail.clone());
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some("input_file") => Err(TranslateError::new(
            format!("{path}.type"),
            "files (`input_file`) are not translated to chat completions",
        )),
        Some(other) => Err(TranslateError::new(
            format!("{path}.type"),
            format!("`{other}` parts have no counterpart in a chat completion request"),
        )),
        None => Err(TranslateError::new(format!("{path}.type"), "is required")),
    }
}

/// Tool `i` as a chat tool (only function tools have one).
fn function_tool(tool: &Value, i: usize) -> Result<Value, TranslateError> {
    let kind = tool.get("type").and_then(Value::as_str);
    if kind != Some("function") {
        return Err(TranslateError::new(
            format!("tools[{i}].type"),
            format!(
                "`{}` is a tool the upstream runs itself: only OpenAI deployments called \
                 through /v1/responses have it (function tools are translated)",
                kind.unwrap_or("")
            ),
        ));
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("tools[{i}].name"), "is required"))?;
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.to_string()));
    for field in ["description", "parameters", "strict"] {
        if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
            function.insert(field.into(), value.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `tool_choice` in chat's form.
fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    if choice.is_string() {
        return Ok(choice.clone());
    }
    match choice.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new("tool_choice.name", "is required"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        Some(other) => Err(TranslateError::new(
            "tool_choice.type",
            format!("`{other}` has no counterpart in a chat completion request"),
        )),
        None => Err(TranslateError::new(
            "tool_choice",
            "is neither auto, none, required nor a function",
        )),
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(format: &Value) -> Result<Value, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), value.clone());
                }
            }
            if !schema.contains_key("name") {
                return Err(TranslateError::new("text.format.name", "is required"));
            }
            Ok(json!({"type": "json_schema", "json_schema": schema}))
        }
        Some(other) => Err(TranslateError::new(
            "text.format.type",
            format!("`{other}` is not text, json_object or json_schema"),
        )),
        None => Err(TranslateError::new("text.format.type", "is required")),
    }
}

/// A canonical `chat.completion` as a Responses answer (`object: response`), for `request`
/// (the Responses request it answers: its `instructions`, tools and settings are echoed).
pub fn answer_from_chat(answer: &Value, request: &Value) -> Result<Value, TranslateError> {
    Ok(answer_out(answer, request, None)?.into_value())
}

/// [`answer_from_chat`] written straight to the bytes the client gets, with `model` as the
/// response's model (the name the client asked for): the same response, the request's settings
/// echoed from it borrowed rather than copied into a tree of its own.
pub fn answer_bytes_from_chat(
    answer: &Value,
    request: &Value,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    out::to_bytes(&answer_out(answer, request, Some(model))?)
}

/// [`answer_bytes_from_chat`] of a canonical answer given as its bytes (a call's body), read
/// without copying its strings into a tree of their own: what the gateway answers a Responses
/// client with.
pub fn answer_bytes_from_chat_bytes(
    answer: &[u8],
    request: &Value,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let answer = Doc::parse(answer).map_err(|e| TranslateError::new("", e.to_string()))?;
    out::to_bytes(&answer_out(&answer, request, Some(model))?)
}

/// The response of `answer` to `request`, borrowing from both; `model` over the answer's own.
fn answer_out<'a, A: Json>(
    answer: &'a A,
    request: &'a Value,
    model: Option<&'a str>,
) -> Result<Out<'a>, TranslateError> {
    if !answer.is_object() {
        return Err(TranslateError::new(
            "",
            "a chat completion is a JSON object",
        ));
    }
    let object = answer;
    let choice = object
        .get("choices")
        .and_then(A::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(|| TranslateError::new("choices", "has no choice"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| TranslateError::new("choices[0].message", "is required"))?;
    let finish = choice.get("finish_reason").and_then(A::as_str);
    let suffix = id_suffix(object.get("id").and_then(A::as_str).unwrap_or(""));
    let ending = Ending::of(finish);
    let item_status = "completed";
    let calls = message
        .get("tool_calls")
        .and_then(A::as_array)
        .unwrap_or_default();
    let mut output = Vec::with_capacity(2 + calls.len());
    if let Some(reasoning) = message
        .get("reasoning_content")
        .and_then(A::as_str)
        .filter(|r| !r.is_empty())
    {
        output.push(reasoning_item(
            ["rs_", suffix].concat().into(),
            reasoning,
            item_status,
        ));
    }
    let content = message.get("content");
    let text: Option<Out<'_>> = match (content.and_then(A::as_str), content.and_then(A::as_array)) {
        (Some(text), _) => Some(Out::Str(text)),
        (None, Some(parts)) => Some(Out::String(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(A::as_str))
                .collect::<String>(),
        )),
        _ => None,
    };
    let refusal = message
        .get("refusal")
        .and_then(A::as_str)
        .filter(|r| !r.is_empty());
    let text = text.filter(|t| {
        t.as_str().is_some_and(|t| !t.is_empty()) || (calls.is_empty() && refusal.is_none())
    });
    if text.is_some() || refusal.is_some() || calls.is_empty() {
        let mut parts = Vec::with_capacity(2);
        if let Some(text) = text {
            parts.push(text_part(text));
        }
        if let Some(refusal) = refusal {
            parts.push(refusal_part(refusal.into()));
        }
        output.push(message_item(
            ["msg_", suffix].concat().into(),
            parts,
            item_status,
        ));
    }
    for (k, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let field = |name: &str| {
            function
                .and_then(|f| f.get(name))
                .and_then(A::as_str)
                .unwrap_or("")
        };
        let call_id = call
            .get("id")
            .and_then(A::as_str)
            .map_or_else(|| Out::String(format!("call_{suffix}_{k}")), Out::Str);
        output.push(call_item(
            call_id,
            field("name"),
            field("arguments"),
            "completed",
        ));
    }
    // The item the answer stopped in is the one a token limit or filter cut short.
    if let Some(last) = output.last_mut() {
        last.set_field("status", ending.item_status());
    }
    let usage = object.get("usage").map(usage_from_chat);
    let model = match model {
        Some(model) => Out::Str(model),
        None => model_of(object.get("model"), request),
    };
    Ok(response_object(
        request,
        Head {
            id: Out::String(["resp_", suffix].concat()),
            created: object.get("created").map_or(Out::U64(0), A::out),
            model,
        },
        ending.status(),
        ending.details(),
        output,
        usage,
    ))
}

/// How an answer ended, as a Responses status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Completed,
    /// At the token limit (`finish_reason: length`).
    MaxTokens,
    /// At a content filter.
    ContentFilter,
}

impl Ending {
    fn of(finish_reason: Option<&str>) -> Self {
        match finish_reason {
            Some("length") => Ending::MaxTokens,
            Some("content_filter") => Ending::ContentFilter,
            _ => Ending::Completed,
        }
    }

    fn status(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            _ => "incomplete",
        }
    }

    fn item_status(self) -> &'static str {
        self.status()
    }

    fn details<'a>(self) -> Out<'a> {
        match self {
            Ending::Completed => Out::Null,
            Ending::MaxTokens => obj! {"reason": "max_output_tokens"},
            Ending::ContentFilter => obj! {"reason": "content_filter"},
        }
    }
}

/// The identifying part of a response: its id, creation time and model.
struct Head<'a> {
    id: Out<'a>,
    created: Out<'a>,
    model: Out<'a>,
}

/// The part of a chat completion's id after its `chatcmpl-` prefix, for the ids of the
/// response and its items.
fn id_suffix(id: &str) -> &str {
    let id = id.strip_prefix("chatcmpl-").unwrap_or(id);
    if id.is_empty() { "0" } else { id }
}

/// The model an answer names, else the one the request asked for.
fn model_of<'a, A: Json>(model: Option<&'a A>, request: &'a Value) -> Out<'a> {
    match model.filter(|m| m.as_str().is_some_and(|m| !m.is_empty())) {
        Some(model) => model.out(),
        None => request.get("model").map_or(Out::Str(""), Out::Ref),
    }
}

/// An `output_text` content part.
fn text_part(text: Out<'_>) -> Out<'_> {
    obj! {"type": "output_text", "text": text, "annotations": Vec::new(), "logprobs": Vec::new()}
}

/// A `refusal` content part.
fn refusal_part(refusal: Out<'_>) -> Out<'_> {
    obj! {"type": "refusal", "refusal": refusal}
}

/// An assistant `message` output item.
fn message_item<'a>(id: Out<'a>, content: Vec<Out<'a>>, status: &'a str) -> Out<'a> {
    obj! {
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": content,
    }
}

/// A `reasoning` output item carrying the model's reasoning text.
fn reasoning_item<'a>(id: Out<'a>, text: &'a str, status: &'a str) -> Out<'a> {
    let content = if text.is_empty() {
        Vec::new()
    } else {
        vec![obj! {"type": "reasoning_text", "text": text}]
    };
    obj! {
        "type": "reasoning",
        "id": id,
        "summary": Vec::new(),
        "content": content,
        "status": status,
    }
}

/// A `function_call` output item.
fn call_item<'a>(call_id: Out<'a>, name: &'a str, arguments: &'a str, status: &'a str) -> Out<'a> {
    let id = format!("fc_{}", call_id.as_str().unwrap_or_default());
    obj! {
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
}

/// Chat's `usage` as the Responses API's.
fn usage_from_chat<'a, A: Json>(usage: &A) -> Out<'a> {
    let count = |path: &[&str]| {
        let mut at = usage;
        for key in path {
            match at.get(key) {
                Some(next) => at = next,
                None => return 0,
            }
        }
        at.as_u64().unwrap_or(0)
    };
    let input = count(&["prompt_tokens"]);
    let output = count(&["completion_tokens"]);
    let total = usage
        .get("total_tokens")
        .and_then(A::as_u64)
        .unwrap_or(input.saturating_add(output));
    obj! {
        "input_tokens": input,
        "input_tokens_details": obj! {
            "cached_tokens": count(&["prompt_tokens_details", "cached_tokens"]),
            // Tokens written to a prompt cache (LiteLLM's `cache_creation_input_tokens`, from
            // the upstreams that count them).
            "cache_write_tokens": count(&["cache_creation_input_tokens"]),
        },
        "output_tokens": output,
        "output_tokens_details": obj! {
            "reasoning_tokens": count(&["completion_tokens_details", "reasoning_tokens"]),
        },
        "total_tokens": total,
    }
}

/// The request's fields a response echoes (`response_object` takes them in this order).
const ECHOED: [&str; 13] = [
    "instructions",
    "max_output_tokens",
    "parallel_tool_calls",
    "reasoning",
    "service_tier",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
    "metadata",
];

/// The `response` object: what the answer holds, and the request's settings echoed as OpenAI
/// echoes them (its defaults where the request left them out).
fn response_object<'a>(
    request: &'a Value,
    head: Head<'a>,
    status: &'a str,
    incomplete_details: Out<'a>,
    output: Vec<Out<'a>>,
    usage: Option<Out<'a>>,
) -> Out<'a> {
    // The request's fields the response echoes, found in one pass over it (not a map lookup
    // per field: this is on every Responses answer's path).
    let mut echoed: [Option<&'a Value>; ECHOED.len()] = [None; ECHOED.len()];
    if let Value::Object(fields) = request {
        for (name, value) in fields {
            if let Some(i) = ECHOED.iter().position(|echo| echo == name) {
                echoed[i] = Some(value).filter(|v| !v.is_null());
            }
        }
    }
    let [
        instructions,
        max_output_tokens,
        parallel_tool_calls,
        reasoning,
        service_tier,
        temperature,
        text,
        tool_choice,
        tools,
        top_p,
        truncation,
        user,
        metadata,
    ] = echoed;
    let or = |given: Option<&'a Value>, default: Out<'a>| given.map_or(default, Out::Ref);
    let reasoning = match reasoning {
        Some(r) => obj! {
            "effort": r.get("effort").map_or(Out::Null, Out::Ref),
            "summary": r.get("summary").map_or(Out::Null, Out::Ref),
        },
        None => obj! {"effort": Out::Null, "summary": Out::Null},
    };
    obj! {
        "id": head.id,
        "object": "response",
        "created_at": head.created,
        "status": status,
        "background": false,
        "error": Out::Null,
        "incomplete_details": incomplete_details,
        "instructions": or(instructions, Out::Null),
        "max_output_tokens": or(max_output_tokens, Out::Null),
        "max_tool_calls": Out::Null,
        "model": head.model,
        "output": output,
        "parallel_tool_calls": or(parallel_tool_calls, Out::Bool(true)),
        "previous_response_id": Out::Null,
        "reasoning": reasoning,
        "service_tier": or(service_tier, Out::Str("default")),
        "store": false,
        "temperature": or(temperature, Out::Owned(json!(1.0))),
        "text": or(text, obj! {"format": obj! {"type": "text"}}),
        "tool_choice": or(tool_choice, Out::Str("auto")),
        "tools": or(tools, Out::Array(Vec::new())),
        "top_logprobs": 0u64,
        "top_p": or(top_p, Out::Owned(json!(1.0))),
        "truncation": or(truncation, Out::Str("disabled")),
        "usage": usage.unwrap_or(Out::Null),
        "user": or(user, Out::Null),
        "metadata": or(metadata, Out::Object(Obj::new())),
    }
}

/// A canonical stream as Responses stream events: each event's data, whose `type` names it
/// (`response.created`, `response.output_text.delta`, `response.completed`, ...).
///
/// The events come in the order OpenAI sends them: `response.created` and
/// `response.in_progress` with the first chunk; per output item `response.output_item.added`,
/// its parts' `response.content_part.added`, the deltas (`response.output_text.delta`,
/// `response.refusal.delta`, `response.reasoning_text.delta`,
/// `response.function_call_arguments.delta`), their `.done` events and
/// `response.output_item.done`; then `response.completed` (or `response.incomplete`) with the
/// whole response and its usage, once the chunk with the usage (or [`EventsFromChat::finish`])
/// came after the one with the finish reason. Every event has a `sequence_number`, from 0 up
/// by one.
#[derive(Debug, Default)]
pub struct EventsFromChat {
    request: Value,
    /// The next event's sequence number.
    sequence: u64,
    /// The response's id, creation time and model, from the first chunk.
    head: Option<(String, Value, Value)>,
    /// The output items, in order.
    items: Vec<Item>,
    /// The output index of each chat tool-call index.
    calls: Vec<(u64, usize)>,
    /// The finish reason, once a chunk gave it.
    finish: Option<String>,
    /// The usage, once a chunk gave it (in the Responses API's form).
    usage: Option<Value>,
    /// Whether the last event was sent.
    done: bool,
}

/// An output item of a stream being translated.
#[derive(Debug)]
struct Item {
    id: String,
    kind: ItemKind,
    open: bool,
    /// Its status once done: `completed`, or the response's when the answer stopped in it.
    status: &'static str,
}

#[derive(Debug)]
enum ItemKind {
    Reasoning(String),
    /// An assistant message's parts, in order; the last one open while the message is.
    Message(Vec<Part>),
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Debug)]
struct Part {
    refusal: bool,
    text: String,
}

impl Part {
    fn value(&self) -> Out<'_> {
        if self.refusal {
            refusal_part(Out::Str(&self.text))
        } else {
            text_part(Out::Str(&self.text))
        }
    }
}

impl Item {
    /// The item as `output` shows it.
    fn value(&self, status: &str) -> Value {
        match &self.kind {
            ItemKind::Reasoning(text) => reasoning_item(Out::Str(&self.id), text, status),
            ItemKind::Message(parts) => message_item(
                Out::Str(&self.id),
                parts.iter().map(Part::value).collect(),
                status,
            ),
            ItemKind::Call {
                call_id,
                name,
                arguments,
            } => {
                let mut item = call_item(Out::Str(call_id), name, arguments, status);
                item.set_field("id", Out::Str(&self.id));
                item
            }
        }
        .into_value()
    }
}

impl EventsFromChat {
    /// The translator of one stream answering `request` (the Responses request).
    pub fn new(request: &Value) -> Self {
        EventsFromChat {
            request: request.clone(),
            ..EventsFromChat::default()
        }
    }

    /// The events one canonical chunk makes.
    pub fn push(&mut self, chunk: &Value) -> Result<Vec<Value>, TranslateError> {
        let mut events = Vec::new();
        if self.done {
            return Ok(events);
        }
        let object = chunk
            .as_object()
            .ok_or_else(|| TranslateError::new("", "a chat completion chunk is a JSON object"))?;
        self.start(object, &mut events);
        let choices = match object.get("choices") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(choices)) => choices.as_slice(),
            Some(_) => return Err(TranslateError::new("choices", "is not a list")),
        };
        if let Some(choice) = choices.first() {
            if let Some(delta) = choice.get("delta") {
                self.delta(delta, &mut events);
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(finish.to_string());
                self.close_all(&mut events);
            }
        }
        if let Some(usage) = object.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_from_chat(usage).into_value());
        }
        if self.finish.is_some() && self.usage.is_some() {
            self.end(&mut events);
        }
        Ok(events)
    }

    /// The events that end the stream once the canonical one has ended. A translator that
    /// was given no chunk adds nothing: its stream was not translated (a pass-through stream
    /// carries its own events, `response.completed` included).
    pub fn finish(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        if self.done || self.head.is_none() {
            self.done = true;
            return events;
        }
        self.close_all(&mut events);
        self.end(&mut events);
        events
    }

    /// `data` as an event of type `kind`, numbered.
    fn emit(&mut self, events: &mut Vec<Value>, kind: &str, mut data: Value) {
        data["type"] = Value::String(kind.to_string());
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        events.push(data);
    }

    /// The response as it stands, with `status`.
    fn response(&self, status: &str, details: Value, usage: Option<Value>) -> Value {
        let (id, created, model) = self.head.clone().unwrap_or_default();
        // Each item as its own `output_item.done` showed it.
        let output = if status == "in_progress" {
            Vec::new()
        } else {
            self.items.iter().map(|i| i.value(i.status)).collect()
        };
        response_object(
            &self.request,
            Head {
                id: Out::String(id),
                created: Out::Owned(created),
                model: Out::Owned(model),
            },
            status,
            Out::Owned(details),
            output.into_iter().map(Out::Owned).collect(),
            usage.map(Out::Owned),
        )
        .into_value()
    }

    /// `response.created` and `response.in_progress`, with the first chunk.
    fn start(&mut self, chunk: &Map<String, Value>, events: &mut Vec<Value>) {
        if self.head.is_some() {
            return;
        }
        let suffix = id_suffix(chunk.get("id").and_then(Value::as_str).unwrap_or(""));
        self.head = Some((
            format!("resp_{suffix}"),
            chunk.get("created").cloned().unwrap_or(json!(0)),
            model_of(self.request.get("model"), &self.request).into_value(),
        ));
        let response = self.response("in_progress", Value::Null, None);
        self.emit(events, "response.created", json!({"response": response}));
        let response = self.response("in_progress", Value::Null, None);
        self.emit(
            events,
            "response.in_progress",
            json!({"response": response}),
        );
    }

    /// The id of a new item with `prefix`: the response's suffix, and the item's index after
    /// the first.
    fn item_id(&self, prefix: &str) -> String {
        let suffix = self
            .head
            .as_ref()
            .map_or("0", |(id, _, _)| id.strip_prefix("resp_").unwrap_or(id));
        if self.items.is_empty() {
            format!("{prefix}_{suffix}")
        } else {
            format!("{prefix}_{suffix}_{}", self.items.len())
        }
    }

    /// The events of one chunk's `delta`.
    fn delta(&mut self, delta: &Value, events: &mut Vec<Value>) {
        if let Some(text) = delta
            .get("reasoning_content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.reasoning(text, events);
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.text(text, false, events);
        }
        if let Some(text) = delta
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.text(text, true, events);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (k, call) in calls.iter().enumerate() {
                self.call(call, k, events);
            }
        }
    }

    /// The last item if it is open and `wanted` says it is of the right kind.
    fn open_last(&self, wanted: fn(&ItemKind) -> bool) -> Option<usize> {
        let last = self.items.len().checked_sub(1)?;
        let item = &self.items[last];
        (item.open && wanted(&item.kind)).then_some(last)
    }

    fn reasoning(&mut self, text: &str, events: &mut Vec<Value>) {
        let index = match self.open_last(|k| matches!(k, ItemKind::Reasoning(_))) {
            Some(index) => index,
            None => {
                self.close_all(events);
                let id = self.item_id("rs");
                self.items.push(Item {
                    id: id.clone(),
                    kind: ItemKind::Reasoning(String::new()),
                    open: true,
                    status: "in_progress",
                });
                let index = self.items.len() - 1;
                let item = json!({
                    "type": "reasoning", "id": id, "summary": [], "content": [],
                    "status": "in_progress",
                });
                self.emit(
                    events,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                self.emit(
                    events,
                    "response.content_part.added",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "reasoning_text", "text": ""},
                    }),
                );
                index
            }
        };
        if let ItemKind::Reasoning(all) = &mut self.items[index].kind {
            all.push_str(text);
        }
        let id = self.items[index].id.clone();
        self.emit(
            events,
            "response.reasoning_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
        );
    }

    /// A text (or refusal) delta: to the open message's last part if it is of its kind, else
    /// to a new part (of a new message if none is open).
    fn text(&mut self, text: &str, refusal: bool, events: &mut Vec<Value>) {
        let index = match self.open_last(|k| matches!(k, ItemKind::Message(_))) {
            Some(index) => index,
            None => {
                self.close_all(events);
                let id = self.item_id("msg");
                self.items.push(Item {
                    id: id.clone(),
                    kind: ItemKind::Message(Vec::new()),
                    open: true,
                    status: "in_progress",
                });
                let index = self.items.len() - 1;
                let item = message_item(Out::Str(&id), Vec::new(), "in_progress").into_value();
                self.emit(
                    events,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                index
            }
        };
        let id = self.items[index].id.clone();
        let (same_kind, count) = match &self.items[index].kind {
            ItemKind::Message(parts) => (
                parts.last().is_some_and(|p| p.refusal == refusal),
                parts.len(),
            ),
            _ => (false, 0),
        };
        let content_index = if same_kind {
            count - 1
        } else {
            if count > 0 {
                self.close_part(index, count - 1, events);
            }
            if let ItemKind::Message(parts) = &mut self.items[index].kind {
                parts.push(Part {
                    refusal,
                    text: String::new(),
                });
            }
            let part = if refusal {
                refusal_part(Out::Str(""))
            } else {
                text_part(Out::Str(""))
            }
            .into_value();
            self.emit(
                events,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": count, "part": part}),
            );
            count
        };
        if let ItemKind::Message(parts) = &mut self.items[index].kind {
            if let Some(part) = parts.last_mut() {
                part.text.push_str(text);
            }
        }
        if refusal {
            self.emit(
                events,
                "response.refusal.delta",
                json!({
                    "item_id": id, "output_index": index, "content_index": content_index,
                    "delta": text,
                }),
            );
        } else {
            self.emit(
                events,
                "response.output_text.delta",
                json!({
                    "item_id": id, "output_index": index, "content_index": content_index,
                    "delta": text, "logprobs": [],
                }),
            );
        }
    }

    /// A tool call's delta (the `k`th of its chunk).
    fn call(&mut self, call: &Value, k: usize, events: &mut Vec<Value>) {
        let chat_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(k as u64);
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let known = self
            .calls
            .iter()
            .find(|(i, _)| *i == chat_index)
            .map(|(_, at)| *at);
        let index = match known {
            Some(index) => {
                if let ItemKind::Call { name: known, .. } = &mut self.items[index].kind {
                    if known.is_empty() {
                        *known = name.to_string();
                    }
                }
                index
            }
            None => {
                // Text or reasoning before a call is finished; earlier calls stay open.
                let open_text = self
                    .items
                    .iter()
                    .position(|i| i.open && !matches!(i.kind, ItemKind::Call { .. }));
                if let Some(open) = open_text {
                    self.close(open, events);
                }
                let suffix = self
                    .head
                    .as_ref()
                    .map_or("0", |(id, _, _)| id.strip_prefix("resp_").unwrap_or(id))
                    .to_string();
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| format!("call_{suffix}_{chat_index}"), str::to_string);
                let id = format!("fc_{call_id}");
                self.items.push(Item {
                    id: id.clone(),
                    kind: ItemKind::Call {
                        call_id: call_id.clone(),
                        name: name.to_string(),
                        arguments: String::new(),
                    },
                    open: true,
                    status: "in_progress",
                });
                let index = self.items.len() - 1;
                self.calls.push((chat_index, index));
                let mut item = call_item(Out::Str(&call_id), name, "", "in_progress");
                item.set_field("id", Out::Str(&id));
                let item = item.into_value();
                self.emit(
                    events,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                index
            }
        };
        if arguments.is_empty() {
            return;
        }
        if let ItemKind::Call { arguments: all, .. } = &mut self.items[index].kind {
            all.push_str(arguments);
        }
        let id = self.items[index].id.clone();
        self.emit(
            events,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": arguments}),
        );
    }

    /// The `.done` events of the message `index`'s part `content_index`.
    fn close_part(&mut self, index: usize, content_index: usize, events: &mut Vec<Value>) {
        let id = self.items[index].id.clone();
        let (text, refusal) = match &self.items[index].kind {
            ItemKind::Message(parts) => match parts.get(content_index) {
                Some(part) => (part.text.clone(), part.refusal),
                None => return,
            },
            _ => return,
        };
        if refusal {
            self.emit(
                events,
                "response.refusal.done",
                json!({
                    "item_id": id, "output_index": index, "content_index": content_index,
                    "refusal": text,
                }),
            );
        } else {
            self.emit(
                events,
                "response.output_text.done",
                json!({
                    "item_id": id, "output_index": index, "content_index": content_index,
                    "text": text, "logprobs": [],
                }),
            );
        }
        let part = if refusal {
            refusal_part(Out::Str(&text))
        } else {
            text_part(Out::Str(&text))
        }
        .into_value();
        self.emit(
            events,
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": content_index, "part": part}),
        );
    }

    /// Ends item `index`: its last part's and its own `.done` events.
    fn close(&mut self, index: usize, events: &mut Vec<Value>) {
        if !self.items[index].open {
            return;
        }
        self.items[index].open = false;
        let id = self.items[index].id.clone();
        match &self.items[index].kind {
            ItemKind::Reasoning(text) => {
                let text = text.clone();
                self.emit(
                    events,
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                );
                self.emit(
                    events,
                    "response.content_part.done",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "reasoning_text", "text": text},
                    }),
                );
            }
            ItemKind::Message(parts) => {
                if let Some(last) = parts.len().checked_sub(1) {
                    self.close_part(index, last, events);
                }
            }
            ItemKind::Call {
                name, arguments, ..
            } => {
                let (name, arguments) = (name.clone(), arguments.clone());
                self.emit(
                    events,
                    "response.function_call_arguments.done",
                    json!({
                        "item_id": id, "output_index": index, "name": name,
                        "arguments": arguments,
                    }),
                );
            }
        }
        // The item the answer stopped in is the one a token limit or filter cut short.
        let status = if index + 1 == self.items.len() {
            Ending::of(self.finish.as_deref()).item_status()
        } else {
            "completed"
        };
        self.items[index].status = status;
        let item = self.items[index].value(status);
        self.emit(
            events,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    /// Ends every open item, in order.
    fn close_all(&mut self, events: &mut Vec<Value>) {
        for index in 0..self.items.len() {
            self.close(index, events);
        }
    }

    /// `response.completed` (or `response.incomplete`) with the whole response.
    fn end(&mut self, events: &mut Vec<Value>) {
        if self.done {
            return;
        }
        self.done = true;
        let ending = Ending::of(self.finish.as_deref());
        let response = self.response(
            ending.status(),
            ending.details().into_value(),
            self.usage.clone(),
        );
        let kind = match ending {
            Ending::Completed => "response.completed",
            _ => "response.incomplete",
        };
        self.emit(events, kind, json!({"response": response}));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
        let chat = request_to_chat(&json!({
            "model": "gpt-4o", "instructions": "Be brief.", "input": "Hi",
            "max_output_tokens": 50, "stream": true,
        }))
        .unwrap();
        assert_eq!(
            chat["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        );
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert!(chat.get("max_output_tokens").is_none());
    }
}
