//! Anthropic's Messages API as clients call the gateway in it (`POST /v1/messages`): a
//! request translated to the canonical chat form ([`request_to_chat`]), canonical answers
//! translated back, whole ([`answer_from_chat`]) and streamed ([`EventsFromChat`]), and errors
//! in Anthropic's shape ([`error_body`]). The mapping is the inverse of [`super::upstream`]'s,
//! following LiteLLM's `LiteLLMAnthropicMessagesAdapter`
//! (`litellm/llms/anthropic/experimental_pass_through/adapters/transformation.py`).

use serde_json::{Map, Value, json};

use crate::TranslateError;
use crate::doc::{Doc, Json};
use crate::out::{self, Obj, Out, obj};
use serde_json::value::RawValue;

use super::stop_reason_of;

/// A Messages request as the canonical chat request.
///
/// - `system` (a string, or text blocks) becomes system messages at the start, one per block
///   (a block with `cache_control` as a one-part message keeping it).
/// - Each turn becomes messages: a user turn's `tool_result` blocks one `tool` message each
///   (first, as the chat form wants them right after the assistant's calls), its other blocks
///   one user message (text parts, images as `image_url` parts with a `data:` URL or the
///   image's URL, base64 PDF documents as `file` parts); an assistant turn's text the content
///   (a string; a list of text parts when a block has `cache_control`), its `tool_use` blocks
///   `tool_calls` with JSON-string arguments, its `thinking` blocks LiteLLM's `thinking_blocks`.
///   `cache_control` stays on the parts, on a tool call, on a tool message.
/// - `tools` become function tools (`input_schema` as `parameters`), `tool_choice` (`auto`,
///   `any` as `required`, `none`, `tool` as a named function) and its
///   `disable_parallel_tool_use` as `parallel_tool_calls`, `stop_sequences` as `stop`,
///   `metadata.user_id` as `user`, `max_tokens`, `temperature`, `top_p`, `top_k`, `stream` as
///   they are, `thinking` as `reasoning_effort` as LiteLLM maps a budget for a model that is not
///   Claude (10,000 tokens or more `high`, 5,000 or more `medium`, less `low`; disabled:
///   none).
///
/// Refused, naming the field: server tools (`tools[i].type` other than `custom`), content
/// blocks the chat form has no part for (documents other than base64 PDFs, search results,
/// ...), other `metadata` than `user_id`, and any top-level field not listed above. Left out
/// as LiteLLM leaves it out: a `tool_result`'s `is_error`.
pub fn request_to_chat(request: &Value) -> Result<Value, TranslateError> {
    let request = request
        .as_object()
        .ok_or_else(|| TranslateError::new("", "the request is not a JSON object"))?;
    let mut out = Map::new();
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                let at = || format!("system[{i}]");
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(TranslateError::new(
                        format!("{}.type", at()),
                        "a system block must be text",
                    ));
                }
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(format!("{}.text", at()), "missing"))?;
                match block.get("cache_control").filter(|v| !v.is_null()) {
                    None => messages.push(json!({"role": "system", "content": text})),
                    Some(cache) => messages.push(json!({"role": "system", "content": [
                        {"type": "text", "text": text, "cache_control": cache},
                    ]})),
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::new(
                "system",
                "not a string or a list of blocks",
            ));
        }
    }
    let turns = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("messages", "a list of messages is required"))?;
    for (i, turn) in turns.iter().enumerate() {
        turn_to_chat(turn, &|| format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));

    for (name, value) in request {
        let name = name.as_str();
        if value.is_null() {
            continue;
        }
        match name {
            "system" | "messages" => {}
            "model" | "max_tokens" | "temperature" | "top_p" | "top_k" | "stream" => {
                out.insert(name.into(), value.clone());
            }
            "stop_sequences" => {
                out.insert("stop".into(), value.clone());
            }
            "metadata" => {
                let metadata = value
                    .as_object()
                    .ok_or_else(|| TranslateError::new("metadata", "not an object"))?;
                for (key, value) in metadata {
                    match key.as_str() {
                        "user_id" if value.is_string() => {
                            out.insert("user".into(), value.clone());
                        }
                        "user_id" if value.is_null() => {}
                        _ => {
                            return Err(TranslateError::new(
                                format!("metadata.{key}"),
                                "the chat form carries only metadata.user_id",
                            ));
                        }
                    }
                }
            }
            "tools" => {
                let tools = value
                    .as_array()
                    .ok_or_else(|| TranslateError::new("tools", "not a list"))?;
                let tools = tools
                    .iter()
                    .enumerate()
                    .map(|(i, tool)| tool_to_chat(tool, &|| format!("tools[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let kind = value
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new("tool_choice.type", "missing"))?;
                let choice = match kind {
                    "auto" => json!("auto"),
                    "any" => json!("required"),
                    "none" => json!("none"),
                    "tool" => {
                        let name = value
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| TranslateError::new("tool_choice.name", "missing"))?;
                        json!({"type": "function", "function": {"name": name}})
                    }
                    other => {
                        return Err(TranslateError::new(
                            "tool_choice.type",
                            format!("unknown tool choice `{other}`"),
                        ));
                    }
                };
                out.insert("tool_choice".into(), choice);
                match value.get("disable_parallel_tool_use") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(disable)) => {
                        out.insert("parallel_tool_calls".into(), (!disable).into());
                    }
                    Some(_) => {
                        return Err(TranslateError::new(
                            "tool_choice.disable_parallel_tool_use",
                            "not a boolean",
                        ));
                    }
                }
            }
            "thinking" => {
                if let Some(effort) = reasoning_effort_of(value)? {
                    out.insert("reasoning_effort".into(), effort.into());
                }
            }
            other => {
                return Err(TranslateError::new(
                    other,
                    "the chat form has no such parameter",
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

/// `thinking` as a `reasoning_effort` (`None`: thinking is off).
fn reasoning_effort_of(thinking: &Value) -> Result<Option<&'static str>, TranslateError> {
    match thinking.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        Some("enabled") => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| TranslateError::new("thinking.budget_tokens", "missing"))?;
            Ok(Some(if budget >= 10_000 {
                "high"
            } else if budget >= 5_000 {
                "medium"
            } else {
                "low"
            }))
        }
        _ => Err(TranslateError::new(
            "thinking.type",
            "not enabled or disabled",
        )),
    }
}

/// A Messages tool as a canonical function tool.
fn tool_to_chat(tool: &Value, at: &dyn Fn() -> String) -> Result<Value, TranslateError> {
    match tool.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => {
            return Err(TranslateError::new(
                format!("{}.type", at()),
                format!("the chat form has no server tool `{other}`"),
            ));
        }
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{}.name", at()), "missing"))?;
    let mut function = Map::new();
    function.insert("name".into(), name.into());
    if let Some(description) = tool.get("description").filter(|v| !v.is_null()) {
        function.insert("description".into(), description.clone());
    }
    let schema = tool
        .get("input_schema")
        .ok_or_else(|| TranslateError::new(format!("{}.input_schema", at()), "missing"))?;
    function.insert("parameters".into(), schema.clone());
    let mut out = Map::new();
    out.insert("type".into(), "function".into());
    out.insert("function".into(), Value::Object(function));
    if let Some(cache) = tool.get("cache_control").filter(|v| !v.is_null()) {
        out.insert("cache_control".into(), cache.clone());
    }
    Ok(Value::Object(out))
}

/// One Messages turn as canonical messages, appended to `out`.
fn turn_to_chat(
    turn: &Value,
    at: &dyn Fn() -> String,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let role = turn
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{}.role", at()), "missing"))?;
    if role != "user" && role != "assistant" {
        return Err(TranslateError::new(
            format!("{}.role", at()),
            format!("unknown role `{role}`"),
        ));
    }
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(TranslateError::new(
                format!("{}.content", at()),
                "not a string or a list of blocks",
            ));
        }
    };
    if role == "user" {
        let mut parts = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = || format!("{}.content[{j}]", at());
            if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                out.push(tool_message(block, &at)?);
            } else {
                parts.push(part_of(block, &at)?);
            }
        }
        if !parts.is_empty() {
            out.push(json!({"role": "user", "content": parts}));
        }
        return Ok(());
    }
    let mut texts = Vec::new();
    let mut cached = false;
    let mut tool_calls = Vec::new();
    let mut thinking = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = || format!("{}.content[{j}]", at());
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                cached |= block.get("cache_control").is_some_and(|c| !c.is_null());
                texts.push(part_of(block, &at)?);
            }
            Some("tool_use") => {
                let id = block
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(format!("{}.id", at()), "missing"))?;
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(format!("{}.name", at()), "missing"))?;
                let arguments = block
                    .get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string);
                let mut call = json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                });
                if let (Some(cache), Some(call)) = (
                    block.get("cache_control").filter(|v| !v.is_null()),
                    call.as_object_mut(),
                ) {
                    call.insert("cache_control".into(), cache.clone());
                }
                tool_calls.push(call);
            }
            Some("thinking") | Some("redacted_thinking") => thinking.push(block.clone()),
            Some(other) => {
                return Err(TranslateError::new(
                    format!("{}.type", at()),
                    format!("the chat form has no `{other}` content in an assistant message"),
                ));
            }
            None => return Err(TranslateError::new(format!("{}.type", at()), "missing")),
        }
    }
    let content = if cached {
        Value::Array(texts)
    } else if texts.is_empty() {
        Value::Null
    } else {
        let mut joined = String::new();
        for part in &texts {
            joined.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
        }
        Value::String(joined)
    };
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), content);
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if !thinking.is_empty() {
        message.insert("thinking_blocks".into(), Value::Array(thinking));
    }
    out.push(Value::Object(message));
    Ok(())
}

/// A `tool_result` block as a `tool` message.
fn tool_message(block: &Value, at: &dyn Fn() -> String) -> Result<Value, TranslateError> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{}.tool_use_id", at()), "missing"))?;
    let content = match block.get("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(blocks)) => Value::Array(
            blocks
                .iter()
                .enumerate()
                .map(|(k, b)| part_of(b, &|| format!("{}.content[{k}]", at())))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => {
            return Err(TranslateError::new(
                format!("{}.content", at()),
                "not a string or a list of blocks",
            ));
        }
    };
    let mut message = json!({"role": "tool", "tool_call_id": id, "content": content});
    if let (Some(cache), Some(object)) = (
        block.get("cache_control").filter(|v| !v.is_null()),
        message.as_object_mut(),
    ) {
        object.insert("cache_control".into(), cache.clone());
    }
    Ok(message)
}

/// A content block as a canonical content part.
fn part_of(block: &Value, at: &dyn Fn() -> String) -> Result<Value, TranslateError> {
    let kind = block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{}.type", at()), "missing"))?;
    let mut part = match kind {
        "text" => {
            let text = block
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(format!("{}.text", at()), "missing"))?;
            json!({"type": "text", "text": text})
        }
        "image" => {
            let url = url_of(block.get("source"), &|| format!("{}.source", at()))?;
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        "document" => {
            let source = block.get("source");
            let media = source
                .and_then(|s| s.get("media_type"))
                .and_then(Value::as_str);
            if source.and_then(|s| s.get("type")).and_then(Value::as_str) != Some("base64")
                || media != Some("application/pdf")
            {
                return Err(TranslateError::new(
                    format!("{}.source", at()),
                    "the chat form carries only base64 PDF documents",
                ));
            }
            let url = url_of(source, &|| format!("{}.source", at()))?;
            json!({"type": "file", "file": {"file_data": url}})
        }
        other => {
            return Err(TranslateError::new(
                format!("{}.type", at()),
                format!("the chat form has no `{other}` content"),
            ));
        }
    };
    if let (Some(cache), Some(object)) = (
        block.get("cache_control").filter(|v| !v.is_null()),
        part.as_object_mut(),
    ) {
        object.insert("cache_control".into(), cache.clone());
    }
    Ok(part)
}

/// An image's or document's source as a URL: base64 as a `data:` URL, a `url` source as its
/// URL.
fn url_of(source: Option<&Value>, at: &dyn Fn() -> String) -> Result<String, TranslateError> {
    let source = source.ok_or_else(|| TranslateError::new(at(), "missing"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(format!("{}.media_type", at()), "missing"))?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(format!("{}.data", at()), "missing"))?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| TranslateError::new(format!("{}.url", at()), "missing")),
        _ => Err(TranslateError::new(
            format!("{}.type", at()),
            "the chat form carries base64 and url sources only",
        )),
    }
}

/// A number in a canonical usage object (absent: 0).
fn count<A: Json>(usage: Option<&A>, path: &[&str]) -> u64 {
    let mut value = usage;
    for name in path {
        value = value.and_then(|v| v.get(name));
    }
    value.and_then(A::as_u64).unwrap_or(0)
}

/// A canonical usage as Anthropic's: `input_tokens` the prompt tokens that were neither read
/// from nor written to the cache, `cache_read_input_tokens` the cached ones
/// (`prompt_tokens_details.cached_tokens`), `cache_creation_input_tokens` LiteLLM's field of
/// that name, `output_tokens` the completion tokens.
fn usage_from_chat<'a, A: Json>(usage: Option<&A>) -> Out<'a> {
    let prompt = count(usage, &["prompt_tokens"]);
    let read = count(usage, &["prompt_tokens_details", "cached_tokens"]);
    let created = count(usage, &["cache_creation_input_tokens"]);
    obj! {
        "input_tokens": prompt.saturating_sub(read).saturating_sub(created),
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
        "output_tokens": count(usage, &["completion_tokens"]),
    }
}

/// The Messages id of a canonical answer's id.
fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        // Not `format!` (its machinery costs more than the copy): on every answer's path.
        Some(id) => ["msg_", id.strip_prefix("chatcmpl-").unwrap_or(id)].concat(),
        None => "msg_".to_string(),
    }
}

/// A canonical `chat.completion` as a Messages answer (`type: message`): the first choice's
/// thinking blocks (or its `reasoning_content` as one), text and tool calls as blocks,
/// `finish_reason` as `stop_reason`, the usage as Anthropic counts it (prompt tokens less the
/// cached ones as `input_tokens`).
pub fn answer_from_chat(answer: &Value) -> Result<Value, TranslateError> {
    Ok(answer_out(answer, None)?.into_value())
}

/// [`answer_from_chat`] written straight to the bytes the client gets, with `model` as the
/// answer's model (the name the client asked for): the same answer, built from the borrowed
/// parts of `answer` without a tree of its own.
pub fn answer_bytes_from_chat(answer: &Value, model: &str) -> Result<Vec<u8>, TranslateError> {
    out::to_bytes(&answer_out(answer, Some(model))?)
}

/// [`answer_bytes_from_chat`] of a canonical answer given as its bytes (a call's body), read
/// without copying its strings into a tree of their own: what the gateway answers a Messages
/// client with.
pub fn answer_bytes_from_chat_bytes(answer: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let answer = Doc::parse(answer).map_err(|e| TranslateError::new("", e.to_string()))?;
    out::to_bytes(&answer_out(&answer, Some(model))?)
}

/// The Messages answer of `answer`, borrowing from it; `model` over the answer's own.
fn answer_out<'a, A: Json>(
    answer: &'a A,
    model: Option<&'a str>,
) -> Result<Out<'a>, TranslateError> {
    let choice = answer
        .get("choices")
        .and_then(A::as_array)
        .and_then(<[A]>::first)
        .ok_or_else(|| TranslateError::new("choices", "the answer has no choice"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| TranslateError::new("choices[0].message", "missing"))?;
    let calls = message
        .get("tool_calls")
        .and_then(A::as_array)
        .unwrap_or_default();
    let mut content = Vec::with_capacity(2 + calls.len());
    match message.get("thinking_blocks").and_then(A::as_array) {
        Some(blocks) if !blocks.is_empty() => content.extend(blocks.iter().map(A::out)),
        _ => {
            if let Some(reasoning) = message
                .get("reasoning_content")
                .and_then(A::as_str)
                .filter(|r| !r.is_empty())
            {
                content.push(obj! {"type": "thinking", "thinking": reasoning, "signature": ""});
            }
        }
    }
    let text = message.get("content");
    match (text.and_then(A::as_str), text.and_then(A::as_array)) {
        (Some(text), _) if !text.is_empty() || calls.is_empty() => {
            content.push(obj! {"type": "text", "text": text});
        }
        (_, Some(parts)) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(A::as_str) {
                    content.push(obj! {"type": "text", "text": text});
                }
            }
        }
        _ => {}
    }
    for (j, call) in calls.iter().enumerate() {
        let function = call.get("function");
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(A::as_str)
            .unwrap_or("");
        let input = if arguments.trim().is_empty() {
            Out::Object(Obj::new())
        } else {
            Out::Raw(serde_json::from_str::<&RawValue>(arguments).map_err(|e| {
                TranslateError::new(
                    format!("choices[0].message.tool_calls[{j}].function.arguments"),
                    format!("not JSON: {e}"),
                )
            })?)
        };
        content.push(obj! {
            "type": "tool_use",
            "id": call.get("id").map_or(Out::Null, A::out),
            "name": function.and_then(|f| f.get("name")).map_or(Out::Null, A::out),
            "input": input,
        });
    }
    let finish = choice
        .get("finish_reason")
        .and_then(A::as_str)
        .unwrap_or("stop");
    let model = match model {
        Some(model) => Out::Str(model),
        None => answer.get("model").map_or(Out::Str(""), A::out),
    };
    Ok(obj! {
        "id": message_id(answer.get("id").and_then(A::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_of(finish),
        "stop_sequence": Out::Null,
        "usage": usage_from_chat(answer.get("usage")),
    })
}

/// The open content block of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call: its index in the chat stream.
    Tool(u64),
}

/// A canonical stream (`chat.completion.chunk`s) as Messages stream events: each event's data,
/// whose `type` names it (`message_start`, `content_block_start`, `content_block_delta`,
/// `content_block_stop`, `message_delta`, `message_stop`).
///
/// The first chunk opens the message; text, reasoning and tool call deltas open (closing the
/// one before) a `text`, `thinking` or `tool_use` block and fill it (`text_delta`,
/// `thinking_delta`, `input_json_delta`); a `finish_reason` closes the open block; the usage
/// chunk after it (or the chunk's own usage) ends the message with `message_delta`
/// (`stop_reason`, the usage) and `message_stop`. [`EventsFromChat::finish`] ends what is still
/// open when the canonical stream ends.
#[derive(Debug, Default)]
pub struct EventsFromChat {
    model: String,
    started: bool,
    ended: bool,
    /// The open block and its index.
    open: Option<(Open, u64)>,
    /// The next block's index.
    next: u64,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
}

impl EventsFromChat {
    /// The translator of one stream, answering for `model` (the name the client asked for).
    pub fn new(model: &str) -> Self {
        EventsFromChat {
            model: model.to_string(),
            ..EventsFromChat::default()
        }
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = message_id(chunk.and_then(|c| c.get("id")).and_then(Value::as_str));
        out.push(json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }));
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        if let Some((_, index)) = self.open.take() {
            out.push(json!({"type": "content_block_stop", "index": index}));
        }
    }

    /// Opens a block of `kind` unless it is the open one.
    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Value>) -> u64 {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some((kind, index));
        out.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
        index
    }

    fn end(&mut self, out: &mut Vec<Value>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.close(out);
        let usage = usage_from_chat(self.usage.as_ref()).into_value();
        out.push(json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": usage,
        }));
        out.push(json!({"type": "message_stop"}));
    }

    /// The events one canonical chunk makes.
    pub fn push(&mut self, chunk: &Value) -> Result<Vec<Value>, TranslateError> {
        let mut out = Vec::new();
        if self.ended {
            return Ok(out);
        }
        self.start(Some(chunk), &mut out);
        let choice = chunk.get("choices").and_then(|c| c.get(0));
        let delta = choice.and_then(|c| c.get("delta"));
        if let Some(reasoning) = delta
            .and_then(|d| d.get("reasoning_content"))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            let index = self.open(
                Open::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                &mut out,
            );
            out.push(json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "thinking_delta", "thinking": reasoning},
            }));
        }
        // A thinking block's signature (and redacted thinking), which a client sends back
        // with its next turn: Bedrock's and Anthropic's streams carry them apart from the text.
        for block in delta
            .and_then(|d| d.get("thinking_blocks"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match block.get("type").and_then(Value::as_str) {
                Some("thinking") => {
                    if let Some(signature) = block
                        .get("signature")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                    {
                        let index = self.open(
                            Open::Thinking,
                            json!({"type": "thinking", "thinking": "", "signature": ""}),
                            &mut out,
                        );
                        out.push(json!({
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "signature_delta", "signature": signature},
                        }));
                    }
                }
                Some("redacted_thinking") => {
                    self.close(&mut out);
                    let index = self.next;
                    self.next += 1;
                    let data = block.get("data").cloned().unwrap_or(Value::Null);
                    out.push(json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "redacted_thinking", "data": data}}));
                    out.push(json!({"type": "content_block_stop", "index": index}));
                }
                _ => {}
            }
        }
        if let Some(text) = delta
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.open(Open::Text, json!({"type": "text", "text": ""}), &mut out);
            out.push(json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": text},
            }));
        }
        if let Some(calls) = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for (j, call) in calls.iter().enumerate() {
                let at = format!("choices[0].delta.tool_calls[{j}]");
                let call_index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| TranslateError::new(format!("{at}.index"), "missing"))?;
                let function = call.get("function");
                let continued = match self.open {
                    Some((Open::Tool(open), index)) if open == call_index => Some(index),
                    _ => None,
                };
                let index = if let Some(index) = continued {
                    index
                } else {
                    let id = call.get("id").cloned().unwrap_or(Value::Null);
                    let name = function
                        .and_then(|f| f.get("name"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    if id.is_null() || name.is_null() {
                        return Err(TranslateError::new(
                            format!("{at}.id"),
                            "a tool call's first piece must carry its id and name",
                        ));
                    }
                    self.open(
                        Open::Tool(call_index),
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        &mut out,
                    )
                };
                if let Some(piece) = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    out.push(json!({
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }));
                }
            }
        }
        if let Some(finish) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.close(&mut out);
            self.stop_reason = Some(stop_reason_of(finish));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
            if self.stop_reason.is_some() {
                self.end(&mut out);
            }
        }
        Ok(out)
    }

    /// The events that end the stream once the canonical one has ended: the open block's
    /// `content_block_stop`, `message_delta` (the finish reason seen, else `end_turn`; the
    /// usage seen) and `message_stop`, unless they were given already. Nothing when no chunk
    /// was pushed (a stream passed through in Messages form never reaches the translator).
    pub fn finish(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if self.started {
            self.end(&mut out);
        }
        out
    }
}

/// Anthropic's error body for an error answered with `status`: `{"type": "error", "error":
/// {"type", "message"}}`, the type Anthropic uses for that status (400
/// `invalid_request_error`, 401 `authentication_error`, 402 `billing_error`, 403
/// `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429
/// `rate_limit_error`, 504 `timeout_error`, 529 `overloaded_error`, any other 5xx
/// `api_error`; any other 4xx `invalid_request_error`).
pub fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}
