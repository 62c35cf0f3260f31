//! Amazon Bedrock's Converse and ConverseStream APIs, as an upstream protocol: canonical chat
//! requests to Converse request bodies ([`request_from_chat`]), Converse answers to
//! `chat.completion`s ([`answer_to_chat`]) and ConverseStream events to
//! `chat.completion.chunk`s ([`ChatChunks`]). The mapping follows LiteLLM's
//! `AmazonConverseConfig` (its `bedrock/converse_transformation.py`) and its Converse stream
//! parser.
//!
//! | chat | Converse |
//! |---|---|
//! | `system` messages (text, or text parts) | `system: [{text}]` (a `cache_control` adds `{cachePoint}`) |
//! | `user` / `assistant` messages | `messages: [{role, content: [...]}]`, consecutive turns of one role merged |
//! | `tool` messages | `toolResult` blocks of a `user` turn |
//! | text parts | `{text}` |
//! | `image_url` with a `data:image/{png,jpeg,gif,webp};base64,` URL | `{image: {format, source: {bytes}}}` |
//! | assistant `tool_calls` | `{toolUse: {toolUseId, name, input}}` |
//! | assistant `thinking_blocks` | `{reasoningContent: {reasoningText: {text, signature}}}` |
//! | `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `stop` | `inferenceConfig.{maxTokens, temperature, topP, stopSequences}` |
//! | `tools` (functions) | `toolConfig.tools[].toolSpec {name, description, inputSchema.json}` |
//! | `tool_choice` `auto` / `required` / `{function: {name}}` | `toolConfig.toolChoice` `{auto}` / `{any}` / `{tool: {name}}` |
//! | `response_format` `json_object` / `json_schema` | one tool named `json_tool_call` with the schema, forced with `toolChoice.tool` (LiteLLM's JSON mode); its call comes back as the message's content |
//! | `thinking`, `reasoning_effort` | `additionalModelRequestFields.thinking` (`reasoning_effort` low/medium/high as budgets of 1024/2048/4096 tokens) |
//! | `top_k` | `additionalModelRequestFields.top_k` |
//! | `guardrailConfig`, `performanceConfig`, `requestMetadata`, `additionalModelRequestFields` | passed as they are |
//! | `service_tier` | `serviceTier: {type}` (`auto` as `default`) |
//!
//! Refused (a [`TranslateError`] naming the field): what Converse cannot express — `n` above
//! 1, `logprobs`, `top_logprobs`, `logit_bias`, `presence_penalty`, `frequency_penalty`,
//! `seed`, `audio`, `modalities`, `prediction`, `functions` / `function_call`,
//! `tool_choice: "none"`, `parallel_tool_calls: false` —, an image by an `http(s)` URL
//! (LiteLLM downloads it first; a translator does no I/O), content part types other than text
//! and image, a conversation whose first turn is not the user's, and tool calls or results
//! without `tools` (Converse needs a tool configuration for them, as LiteLLM says).
//! Request fields with no meaning upstream (`model`, `stream`, `stream_options`, `user`,
//! `metadata`, `store`, and the router's own) are left out.

use serde_json::{Value, json};

use crate::TranslateError;
use crate::doc::{Doc, Json};
use crate::out::{self, Obj, Out, obj};

/// The tool a `response_format` is asked through (LiteLLM's `RESPONSE_FORMAT_TOOL_NAME`).
pub const RESPONSE_FORMAT_TOOL_NAME: &str = "json_tool_call";

/// Request fields Converse cannot express, refused when set to anything but their default.
const REFUSED: &[&str] = &[
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "functions",
    "function_call",
    "web_search_options",
];

/// Request fields with no meaning upstream: left out.
const IGNORED: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "mock_response",
    "mock_timeout",
    "metadata_litellm",
    "caching",
    "cache",
];

/// Request fields of Converse's own, passed through as they are.
const PASSED: &[&str] = &["guardrailConfig", "performanceConfig", "requestMetadata"];

/// The image formats Converse takes.
const IMAGE_FORMATS: &[&str] = &["png", "jpeg", "gif", "webp"];

/// The `max_tokens` LiteLLM adds to a thinking budget when the request sets none
/// (its `DEFAULT_MAX_TOKENS`).
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A canonical chat request as a Converse request body (see the module documentation).
pub fn request_from_chat(chat: &Value) -> Result<Value, TranslateError> {
    Ok(request_out(chat)?.into_value())
}

/// [`request_from_chat`] written straight to the bytes sent: the same body, built from the
/// borrowed parts of `chat` without a tree of its own.
pub fn request_bytes_from_chat(chat: &Value) -> Result<Vec<u8>, TranslateError> {
    out::to_bytes(&request_out(chat)?)
}

/// The Converse request body of `chat`, borrowing from it.
fn request_out(chat: &Value) -> Result<Out<'_>, TranslateError> {
    let object = chat
        .as_object()
        .ok_or_else(|| TranslateError::new("", "a chat request is a JSON object"))?;
    let mut body = Obj::with_capacity(6);
    let mut inference = Obj::new();
    let mut additional = Obj::new();
    let mut tools: Vec<Out<'_>> = Vec::new();
    let mut tool_choice: Option<Out<'_>> = None;
    let mut thinking: Option<Out<'_>> = None;
    // The tool a `response_format` forces, over any `tool_choice`.
    let mut forced: Option<Out<'_>> = None;

    for (name, value) in object {
        let name = name.as_str();
        if value.is_null() || IGNORED.contains(&name) {
            continue;
        }
        match name {
            "messages" => {}
            "n" => {
                if value.as_u64() != Some(1) {
                    return Err(TranslateError::new(
                        "n",
                        "Converse returns one choice: `n` must be 1",
                    ));
                }
            }
            "logprobs" => {
                if value != &Value::Bool(false) {
                    return Err(TranslateError::new(
                        "logprobs",
                        "Converse does not return log probabilities",
                    ));
                }
            }
            "parallel_tool_calls" => {
                if value != &Value::Bool(true) {
                    return Err(TranslateError::new(
                        "parallel_tool_calls",
                        "Converse cannot turn parallel tool calls off",
                    ));
                }
            }
            "max_tokens" | "max_completion_tokens" => {
                let tokens = value
                    .as_u64()
                    .ok_or_else(|| TranslateError::new(name, "expected a non-negative integer"))?;
                inference.insert("maxTokens", tokens);
            }
            "temperature" => {
                inference.insert("temperature", number(name, value)?);
            }
            "top_p" => {
                inference.insert("topP", number(name, value)?);
            }
            "stop" => match value {
                Value::String(stop) if stop.is_empty() => {}
                Value::String(stop) => {
                    inference.insert("stopSequences", vec![Out::Str(stop)]);
                }
                Value::Array(stops) if stops.iter().all(Value::is_string) => {
                    inference.insert("stopSequences", value);
                }
                _ => {
                    return Err(TranslateError::new(
                        "stop",
                        "expected a string or an array of strings",
                    ));
                }
            },
            "tools" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| TranslateError::new("tools", "expected an array"))?;
                tools.reserve(list.len());
                for (i, tool) in list.iter().enumerate() {
                    tools.push(tool_spec(tool, i)?);
                }
            }
            "tool_choice" => tool_choice = Some(tool_choice_of(value)?),
            "response_format" => {
                if let Some((tool, choice)) = response_format_tool(value)? {
                    tools.push(tool);
                    forced = Some(choice);
                }
            }
            "thinking" => thinking = Some(Out::Ref(value)),
            "reasoning_effort" => {
                let budget: u64 = match value.as_str() {
                    Some("low" | "minimal") => 1024,
                    Some("medium") => 2048,
                    Some("high") => 4096,
                    _ => {
                        return Err(TranslateError::new(
                            "reasoning_effort",
                            "expected low, medium or high",
                        ));
                    }
                };
                thinking.get_or_insert(obj! {"type": "enabled", "budget_tokens": budget});
            }
            "top_k" => {
                additional.insert("top_k", value);
            }
            "service_tier" => {
                let tier = match value.as_str() {
                    Some("auto" | "default") => "default",
                    Some(tier @ ("flex" | "priority")) => tier,
                    _ => {
                        return Err(TranslateError::new(
                            "service_tier",
                            "expected auto, default, flex or priority",
                        ));
                    }
                };
                body.insert("serviceTier", obj! {"type": tier});
            }
            "additionalModelRequestFields" => {
                let fields = value.as_object().ok_or_else(|| {
                    TranslateError::new("additionalModelRequestFields", "expected an object")
                })?;
                for (k, v) in fields {
                    additional.insert(k, v);
                }
            }
            _ if PASSED.contains(&name) => {
                body.insert(name, value);
            }
            _ if REFUSED.contains(&name) => {
                return Err(TranslateError::new(
                    name,
                    "Amazon Bedrock's Converse API cannot express it",
                ));
            }
            // Anything else is the model's own (LiteLLM sends such fields in
            // `additionalModelRequestFields`).
            _ => {
                additional.insert(name, value);
            }
        }
    }

    if forced.is_some() {
        tool_choice = forced;
    }
    if let Some(thinking) = thinking {
        let enabled = thinking.str_field("type") == Some("enabled");
        if enabled {
            // Claude refuses a forced tool while it thinks; LiteLLM relaxes it to `auto`.
            if tool_choice
                .as_ref()
                .is_some_and(|c| c.has_field("any") || c.has_field("tool"))
            {
                tool_choice = Some(obj! {"auto": Obj::new()});
            }
            if !inference.contains_key("maxTokens") {
                let budget = match &thinking {
                    Out::Ref(t) => t.get("budget_tokens").and_then(Value::as_u64),
                    Out::Object(t) => match t.get("budget_tokens") {
                        Some(Out::U64(n)) => Some(*n),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(budget) = budget {
                    inference.insert("maxTokens", budget + DEFAULT_MAX_TOKENS);
                }
            }
        }
        additional.insert("thinking", thinking);
    }

    let messages = object
        .get("messages")
        .ok_or_else(|| TranslateError::new("messages", "required"))?
        .as_array()
        .ok_or_else(|| TranslateError::new("messages", "expected an array"))?;
    let (system, turns) = messages_of(messages, !tools.is_empty())?;
    if !system.is_empty() {
        body.insert("system", system);
    }
    body.insert("messages", turns);
    if !inference.is_empty() {
        body.insert("inferenceConfig", inference);
    }
    if !tools.is_empty() {
        let mut config = Obj::with_capacity(2);
        config.push("tools", tools);
        if let Some(choice) = tool_choice {
            config.push("toolChoice", choice);
        }
        body.insert("toolConfig", config);
    }
    if !additional.is_empty() {
        body.insert("additionalModelRequestFields", additional);
    }
    Ok(Out::Object(body))
}

/// Whether `chat` asks for JSON through `response_format` (LiteLLM's JSON mode): then the
/// answer's one call of the [`RESPONSE_FORMAT_TOOL_NAME`] tool is its content
/// ([`answer_to_chat_in`]).
pub fn json_mode(chat: &Value) -> bool {
    chat.get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "text")
}

fn number<'a>(field: &str, value: &'a Value) -> Result<Out<'a>, TranslateError> {
    if value.is_number() {
        Ok(Out::Ref(value))
    } else {
        Err(TranslateError::new(field, "expected a number"))
    }
}

/// An OpenAI function tool (`tools[i]`) as a Converse `toolSpec`.
fn tool_spec(tool: &Value, i: usize) -> Result<Out<'_>, TranslateError> {
    if let Some(kind) = tool.get("type").and_then(Value::as_str) {
        if kind != "function" {
            return Err(TranslateError::new(
                format!("tools[{i}].type"),
                format!("Converse takes function tools, not `{kind}`"),
            ));
        }
    }
    let function = tool
        .get("function")
        .ok_or_else(|| TranslateError::new(format!("tools[{i}].function"), "required"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("tools[{i}].function.name"), "required"))?;
    let schema = match function.get("parameters") {
        Some(schema) => Out::Ref(schema),
        None => empty_object_schema(),
    };
    let mut spec = Obj::with_capacity(3);
    spec.push("name", name);
    if let Some(description) = function.get("description").and_then(Value::as_str) {
        spec.push("description", description);
    }
    spec.push("inputSchema", obj! {"json": schema});
    Ok(obj! {"toolSpec": spec})
}

/// `{"type": "object", "properties": {}}`.
fn empty_object_schema<'a>() -> Out<'a> {
    obj! {"type": "object", "properties": Obj::new()}
}

/// `tool_choice` as Converse's `toolChoice`.
fn tool_choice_of(value: &Value) -> Result<Out<'_>, TranslateError> {
    match value {
        Value::String(choice) if choice == "auto" => Ok(obj! {"auto": Obj::new()}),
        Value::String(choice) if choice == "required" => Ok(obj! {"any": Obj::new()}),
        Value::String(choice) if choice == "none" => Err(TranslateError::new(
            "tool_choice",
            "Converse has no `none` tool choice: leave the tools out instead",
        )),
        Value::Object(choice) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new("tool_choice.function.name", "required"))?;
            Ok(obj! {"tool": obj! {"name": name}})
        }
        _ => Err(TranslateError::new(
            "tool_choice",
            "expected auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )),
    }
}

/// The tool and the tool choice of a `response_format`.
type FormatTool<'a> = (Out<'a>, Out<'a>);

/// `response_format` as LiteLLM asks it of Converse: a tool of the wanted schema, forced.
fn response_format_tool(value: &Value) -> Result<Option<FormatTool<'_>>, TranslateError> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new("response_format.type", "required"))?;
    let (schema, description) = match kind {
        "text" => return Ok(None),
        "json_object" => (None, None),
        "json_schema" => {
            let spec = value
                .get("json_schema")
                .ok_or_else(|| TranslateError::new("response_format.json_schema", "required"))?;
            (
                spec.get("schema"),
                spec.get("description").and_then(Value::as_str),
            )
        }
        other => {
            return Err(TranslateError::new(
                "response_format.type",
                format!("expected text, json_object or json_schema, got `{other}`"),
            ));
        }
    };
    let schema = match value.get("response_schema").or(schema) {
        Some(schema) => Out::Ref(schema),
        None => obj! {"type": "object", "additionalProperties": true, "properties": Obj::new()},
    };
    let mut spec = Obj::with_capacity(3);
    spec.push("name", RESPONSE_FORMAT_TOOL_NAME);
    if let Some(description) = description {
        spec.push("description", description);
    }
    spec.push("inputSchema", obj! {"json": schema});
    Ok(Some((
        obj! {"toolSpec": spec},
        obj! {"tool": obj! {"name": RESPONSE_FORMAT_TOOL_NAME}},
    )))
}

/// The system blocks and the alternating turns of `messages`.
fn messages_of(
    messages: &[Value],
    have_tools: bool,
) -> Result<(Vec<Out<'_>>, Vec<Out<'_>>), TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Out<'_>>)> = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let at = Path::Message(i);
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::new(format!("messages[{i}].role"), "required"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let (turn_role, blocks) = match role {
            "system" | "developer" => {
                text_blocks(content, at, &mut system)?;
                continue;
            }
            "user" => ("user", user_blocks(content, at)?),
            "assistant" => ("assistant", assistant_blocks(message, i, have_tools)?),
            "tool" => {
                if !have_tools {
                    return Err(TranslateError::new(
                        "tools",
                        format!(
                            "messages[{i}] is a tool result: Converse needs the `tools` it answers"
                        ),
                    ));
                }
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        TranslateError::new(format!("messages[{i}].tool_call_id"), "required")
                    })?;
                let mut result = Vec::new();
                text_blocks(content, at, &mut result)?;
                result.retain(|b| !b.has_field("cachePoint"));
                if result.is_empty() {
                    result.push(obj! {"text": ""});
                }
                (
                    "user",
                    vec![obj! {"toolResult": obj! {"toolUseId": id, "content": result}}],
                )
            }
            other => {
                return Err(TranslateError::new(
                    format!("messages[{i}].role"),
                    format!("Converse has no `{other}` role"),
                ));
            }
        };
        if turns.is_empty() && turn_role != "user" {
            return Err(TranslateError::new(
                format!("messages[{i}].role"),
                "a Converse conversation starts with the user's turn",
            ));
        }
        match turns.last_mut() {
            Some((last, content)) if *last == turn_role => content.extend(blocks),
            _ => turns.push((turn_role, blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| obj! {"role": role, "content": content})
        .collect();
    Ok((system, turns))
}

/// Where a content list stands, for the error naming a part of it: built only on failure.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `messages[i].content`.
    Message(usize),
    /// `messages[i].content[j]`, a part given alone.
    Part(usize, usize),
}

impl Path {
    /// The path of the content's part `j` (`field` after it when not empty).
    fn part(self, j: usize, field: &str) -> String {
        let dot = if field.is_empty() { "" } else { "." };
        match self {
            Path::Message(i) => format!("messages[{i}].content[{j}]{dot}{field}"),
            // A part given alone is its own list's item 0.
            Path::Part(i, k) => format!("messages[{i}].content[{k}][{j}]{dot}{field}"),
        }
    }

    /// The path of the content itself.
    fn whole(self) -> String {
        match self {
            Path::Message(i) => format!("messages[{i}].content"),
            Path::Part(i, k) => format!("messages[{i}].content[{k}]"),
        }
    }
}

/// A `cachePoint` block when `part` has `cache_control`.
fn cache_point<'a>(part: &Value) -> Option<Out<'a>> {
    part.get("cache_control")
        .filter(|c| !c.is_null())
        .map(|_| obj! {"cachePoint": obj! {"type": "default"}})
}

/// One text part (`at` names it) as a `{text}` block and its `cachePoint`, added to `blocks`;
/// an empty text left out.
fn text_part<'a>(
    part: &'a Value,
    at: impl Fn(&str) -> String,
    blocks: &mut Vec<Out<'a>>,
) -> Result<(), TranslateError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(at("text"), "required"))?;
            if !text.is_empty() {
                blocks.push(obj! {"text": text});
                blocks.extend(cache_point(part));
            }
            Ok(())
        }
        _ => Err(TranslateError::new(
            at("type"),
            "only text parts are taken here",
        )),
    }
}

/// Text content (a string or text parts) as `{text}` blocks added to `blocks`; empty texts
/// left out.
fn text_blocks<'a>(
    content: &'a Value,
    at: Path,
    blocks: &mut Vec<Out<'a>>,
) -> Result<(), TranslateError> {
    match content {
        Value::Null => Ok(()),
        Value::String(text) if text.is_empty() => Ok(()),
        Value::String(text) => {
            blocks.push(obj! {"text": text});
            Ok(())
        }
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                text_part(part, |field| at.part(j, field), blocks)?;
            }
            Ok(())
        }
        _ => Err(TranslateError::new(
            at.whole(),
            "expected a string or an array of parts",
        )),
    }
}

/// A user message's content as Converse blocks.
fn user_blocks(content: &Value, at: Path) -> Result<Vec<Out<'_>>, TranslateError> {
    let Value::Array(parts) = content else {
        let mut blocks = Vec::with_capacity(1);
        text_blocks(content, at, &mut blocks)?;
        return Ok(blocks);
    };
    let Path::Message(i) = at else {
        return Err(TranslateError::new(at.whole(), "a part of parts"));
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                // As a list of its own (the error names its item 0).
                text_part(part, |field| Path::Part(i, j).part(0, field), &mut blocks)?;
            }
            Some("image_url") => {
                let url = part
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(at.part(j, "image_url.url"), "required"))?;
                blocks.push(image_block(url, || at.part(j, "image_url.url"))?);
                blocks.extend(cache_point(part));
            }
            Some(other) => {
                return Err(TranslateError::new(
                    at.part(j, "type"),
                    format!("Converse takes text and image parts, not `{other}`"),
                ));
            }
            None => return Err(TranslateError::new(at.part(j, "type"), "required")),
        }
    }
    Ok(blocks)
}

/// A `data:image/{format};base64,...` URL as a Converse image block.
fn image_block(url: &str, at: impl Fn() -> String) -> Result<Out<'_>, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(TranslateError::new(
            at(),
            "Converse takes images as base64 data URLs (data:image/png;base64,...), not by URL",
        ));
    };
    let (media, data) = rest
        .split_once(',')
        .ok_or_else(|| TranslateError::new(at(), "a data URL has a `,` before its data"))?;
    let media = media
        .strip_suffix(";base64")
        .ok_or_else(|| TranslateError::new(at(), "the image's data URL is not base64"))?;
    let format = media
        .strip_prefix("image/")
        .map(|f| if f == "jpg" { "jpeg" } else { f })
        .filter(|f| IMAGE_FORMATS.contains(f))
        .ok_or_else(|| {
            TranslateError::new(at(), "Converse takes png, jpeg, gif and webp images")
        })?;
    Ok(obj! {"image": obj! {"format": format, "source": obj! {"bytes": data}}})
}

/// An assistant message (`messages[i]`) as Converse blocks: reasoning, text, tool uses.
fn assistant_blocks(
    message: &Value,
    i: usize,
    have_tools: bool,
) -> Result<Vec<Out<'_>>, TranslateError> {
    let mut blocks = Vec::new();
    if let Some(thinking) = message.get("thinking_blocks").and_then(Value::as_array) {
        for block in thinking {
            match block.get("type").and_then(Value::as_str) {
                Some("thinking") => {
                    let mut text = Obj::with_capacity(2);
                    text.push("text", block.get("thinking").map_or(Out::Str(""), Out::Ref));
                    // An empty signature is none (Bedrock refuses it).
                    if let Some(signature) = block
                        .get("signature")
                        .filter(|s| !s.is_null() && s.as_str() != Some(""))
                    {
                        text.push("signature", signature);
                    }
                    blocks.push(obj! {"reasoningContent": obj! {"reasoningText": text}});
                }
                Some("redacted_thinking") => {
                    let data = block.get("data").map_or(Out::Str(""), Out::Ref);
                    blocks.push(obj! {"reasoningContent": obj! {"redactedContent": data}});
                }
                _ => {}
            }
        }
    }
    text_blocks(
        message.get("content").unwrap_or(&Value::Null),
        Path::Message(i),
        &mut blocks,
    )?;
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or_else(|| {
            TranslateError::new(format!("messages[{i}].tool_calls"), "expected an array")
        })?;
        if !calls.is_empty() && !have_tools {
            return Err(TranslateError::new(
                "tools",
                format!("messages[{i}] calls tools: Converse needs the `tools` it called"),
            ));
        }
        for (k, call) in calls.iter().enumerate() {
            let (id, name, input) =
                crate::tool_call_parts(call, &format!("messages[{i}].tool_calls[{k}]"))?;
            blocks.push(obj! {"toolUse": obj! {"toolUseId": id, "name": name, "input": input}});
        }
    }
    Ok(blocks)
}

/// A Converse `stopReason` as a chat `finish_reason` (LiteLLM's `map_finish_reason`).
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence, and whatever a newer API adds.
        _ => "stop",
    }
}

/// Converse's `usage` as chat usage (LiteLLM's `_transform_usage`): cache reads and writes
/// count as prompt tokens, the reads also as `prompt_tokens_details.cached_tokens`.
pub fn usage_to_chat(usage: &Value) -> Value {
    usage_out(usage).into_value()
}

/// [`usage_to_chat`] of either tree, to be written.
fn usage_out<'a, A: Json>(usage: &A) -> Out<'a> {
    let count = |name: &str| usage.get(name).and_then(A::as_u64).unwrap_or(0);
    let read = count("cacheReadInputTokens");
    let write = count("cacheWriteInputTokens");
    let prompt = count("inputTokens")
        .saturating_add(read)
        .saturating_add(write);
    let completion = count("outputTokens");
    let total = usage
        .get("totalTokens")
        .and_then(A::as_u64)
        .unwrap_or(prompt.saturating_add(completion));
    let mut out = Obj::with_capacity(6);
    out.push("prompt_tokens", prompt);
    out.push("completion_tokens", completion);
    out.push("total_tokens", total);
    if usage.get("cacheReadInputTokens").is_some() || usage.get("cacheWriteInputTokens").is_some() {
        out.push("prompt_tokens_details", obj! {"cached_tokens": read});
        out.push("cache_read_input_tokens", read);
        out.push("cache_creation_input_tokens", write);
    }
    Out::Object(out)
}

/// A Converse answer as a `chat.completion` (see [`answer_to_chat_in`]; not in JSON mode).
pub fn answer_to_chat(answer: &Value, model: &str) -> Result<Value, TranslateError> {
    answer_to_chat_in(answer, model, false)
}

/// A Converse answer as a `chat.completion`: the texts joined as the content, tool uses as
/// `tool_calls`, reasoning as `reasoning_content` and `thinking_blocks`, the stop reason as
/// `finish_reason`, the usage with its cache reads. In JSON mode ([`json_mode`]) an answer
/// whose one tool use is the [`RESPONSE_FORMAT_TOOL_NAME`] tool has that call's input as its
/// content (unwrapped from a lone `properties` object, as LiteLLM does). The `id` is
/// `chatcmpl-` and the caller's to complete; `created` is the time of translation.
pub fn answer_to_chat_in(
    answer: &Value,
    model: &str,
    json_mode: bool,
) -> Result<Value, TranslateError> {
    Ok(answer_out(answer, model, json_mode, "chatcmpl-")?.into_value())
}

/// [`answer_to_chat_in`] written straight to the bytes of the canonical answer, with `id` as
/// its id: the same answer, built from the borrowed parts of `answer` without a tree of its
/// own.
pub fn answer_bytes_to_chat(
    answer: &Value,
    model: &str,
    json_mode: bool,
    id: &str,
) -> Result<Vec<u8>, TranslateError> {
    out::to_bytes(&answer_out(answer, model, json_mode, id)?)
}

/// [`answer_bytes_to_chat`] of a Converse answer given as its bytes (what the Bedrock backend
/// reads): read without copying its strings into a tree of their own. Bytes that are not JSON
/// are refused with the parser's message.
pub fn answer_bytes_to_chat_bytes(
    answer: &[u8],
    model: &str,
    json_mode: bool,
    id: &str,
) -> Result<Vec<u8>, TranslateError> {
    let answer =
        Doc::parse(answer).map_err(|e| TranslateError::new("", format!("not JSON: {e}")))?;
    out::to_bytes(&answer_out(&answer, model, json_mode, id)?)
}

/// The `chat.completion` of a Converse answer, borrowing from it.
fn answer_out<'a, A: Json>(
    answer: &'a A,
    model: &'a str,
    json_mode: bool,
    id: &'a str,
) -> Result<Out<'a>, TranslateError> {
    let content = answer
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .map(|c| {
            c.as_array()
                .ok_or_else(|| TranslateError::new("output.message.content", "expected an array"))
        })
        .transpose()?
        .unwrap_or(&[]);
    let mut texts: Vec<&str> = Vec::with_capacity(1);
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    // Each tool use's id, name and input.
    let mut calls: Vec<(&str, &str, Option<&A>)> = Vec::new();
    for (i, block) in content.iter().enumerate() {
        if let Some(t) = block.get("text").and_then(A::as_str) {
            texts.push(t);
        }
        if let Some(tool) = block.get("toolUse") {
            let at = |field: &str| format!("output.message.content[{i}].toolUse.{field}");
            let id = tool
                .get("toolUseId")
                .and_then(A::as_str)
                .ok_or_else(|| TranslateError::new(at("toolUseId"), "required"))?;
            let name = tool
                .get("name")
                .and_then(A::as_str)
                .ok_or_else(|| TranslateError::new(at("name"), "required"))?;
            calls.push((id, name, tool.get("input")));
        }
        if let Some(r) = block.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                let t = rt.get("text").and_then(A::as_str).unwrap_or("");
                reasoning.push_str(t);
                let mut b = Obj::with_capacity(3);
                b.push("type", "thinking");
                b.push("thinking", t);
                if let Some(sig) = rt.get("signature") {
                    b.push("signature", sig.out());
                }
                thinking_blocks.push(Out::Object(b));
            } else if let Some(data) = r.get("redactedContent") {
                thinking_blocks.push(obj! {"type": "redacted_thinking", "data": data.out()});
            }
        }
    }
    // A call's input as JSON text (none: `{}`).
    let arguments = |input: Option<&A>| -> Result<String, TranslateError> {
        input.map_or_else(
            || Ok("{}".to_string()),
            |input| out::to_string(&input.out()),
        )
    };
    let text = match texts.as_slice() {
        [text] => Out::Str(text),
        texts => Out::String(texts.concat()),
    };
    let mut message = Obj::with_capacity(5);
    message.push("role", "assistant");
    let json_call = json_mode
        && matches!(calls.as_slice(), [(_, name, _)] if *name == RESPONSE_FORMAT_TOOL_NAME);
    if json_call {
        let input = calls.first().and_then(|(_, _, input)| *input);
        let content = match input.and_then(only_properties) {
            Some(properties) => out::to_string(&properties.out())?,
            None => arguments(input)?,
        };
        message.push("content", content);
    } else {
        message.push("content", text);
        if !calls.is_empty() {
            let tool_calls = calls
                .iter()
                .map(|(id, name, input)| {
                    Ok(obj! {
                        "id": *id,
                        "type": "function",
                        "function": obj! {"name": *name, "arguments": arguments(*input)?},
                    })
                })
                .collect::<Result<Vec<Out<'_>>, TranslateError>>()?;
            message.push("tool_calls", tool_calls);
        }
    }
    if !thinking_blocks.is_empty() {
        message.push("reasoning_content", reasoning);
        message.push("thinking_blocks", thinking_blocks);
    }
    let stop = answer
        .get("stopReason")
        .and_then(A::as_str)
        .ok_or_else(|| TranslateError::new("stopReason", "required"))?;
    let finish = if json_call && stop == "tool_use" {
        "stop"
    } else {
        finish_reason(stop)
    };
    let mut out = obj! {
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": vec![obj! {"index": 0u64, "message": message, "finish_reason": finish}],
    };
    if let Some(usage) = answer.get("usage") {
        out.set_field("usage", usage_out(usage));
    }
    Ok(out)
}

/// The `properties` of a tool input that holds nothing else (the JSON-mode tool's input as
/// some models wrap it).
fn only_properties<A: Json>(input: &A) -> Option<&A> {
    let mut others = false;
    // A field other than `properties` makes the input more than its properties.
    let _ = input.each_field(&mut |name, _| {
        others |= name != "properties";
        Ok(())
    });
    if others {
        None
    } else {
        input.get("properties")
    }
}

/// Now as Unix seconds: OpenAI's `created`.
fn unix_now() -> u64 {
    // `created` is wall-clock time by definition.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The exception events a ConverseStream can end with (`:message-type: exception`), by their
/// `:exception-type`.
pub const STREAM_EXCEPTIONS: &[&str] = &[
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
];

/// Why a ConverseStream event gave no chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFailure {
    /// The stream ended with an exception event (`throttlingException`, ...): its type and
    /// message.
    #[error("{exception_type}: {message}")]
    Exception {
        /// The `:exception-type` (`throttlingException`, `validationException`, ...).
        exception_type: String,
        /// The exception's `message`.
        message: String,
    },
    /// An event that is not what ConverseStream sends.
    #[error(transparent)]
    Bad(#[from] TranslateError),
}

/// ConverseStream events to `chat.completion.chunk`s, event by event: `messageStart` the
/// first chunk (`delta.role`), `contentBlockStart` with a `toolUse` a tool call's id and
/// name, `contentBlockDelta` text, tool input (`arguments`) and reasoning
/// (`reasoning_content`) deltas, `messageStop` the chunk with `finish_reason`, `metadata` the
/// last chunk, with empty `choices` and the `usage`. An exception event
/// ([`STREAM_EXCEPTIONS`]) is a [`StreamFailure::Exception`].
#[derive(Debug, Clone)]
pub struct ChatChunks {
    id: String,
    model: String,
    created: u64,
    /// The chat tool call index of each Converse content block that is a tool use.
    tool_blocks: Vec<(u64, usize)>,
    tools: usize,
    started: bool,
}

impl ChatChunks {
    /// A translator of one stream's events, answering for `model`.
    pub fn new(model: &str) -> Self {
        Self::with_id(model, "chatcmpl-")
    }

    /// Likewise, with the chunks' `id`.
    pub fn with_id(model: &str, id: &str) -> Self {
        ChatChunks {
            id: id.to_string(),
            model: model.to_string(),
            created: unix_now(),
            tool_blocks: Vec::new(),
            tools: 0,
            started: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// The chunks of one event: its `:event-type` (or an exception's `:exception-type`) and
    /// its JSON payload.
    pub fn push(&mut self, event_type: &str, payload: &Value) -> Result<Vec<Value>, StreamFailure> {
        let mut out = Vec::new();
        if STREAM_EXCEPTIONS.contains(&event_type) || event_type.ends_with("Exception") {
            let message = payload
                .get("message")
                .or_else(|| payload.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(StreamFailure::Exception {
                exception_type: event_type.to_string(),
                message,
            });
        }
        let block_index = payload.get("contentBlockIndex").and_then(Value::as_u64);
        match event_type {
            "messageStart" => {
                self.started = true;
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "contentBlockStart" => {
                self.start(&mut out);
                if let Some(tool) = payload.get("start").and_then(|s| s.get("toolUse")) {
                    let index = self.tools;
                    self.tools += 1;
                    self.tool_blocks.push((block_index.unwrap_or(0), index));
                    let id = tool.get("toolUseId").cloned().unwrap_or(Value::Null);
                    let name = tool.get("name").cloned().unwrap_or(Value::Null);
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": index, "id": id, "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }]}),
                        None,
                    ));
                }
            }
            "contentBlockDelta" => {
                self.start(&mut out);
                let delta = payload
                    .get("delta")
                    .ok_or_else(|| TranslateError::new("contentBlockDelta.delta", "required"))?;
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    out.push(self.chunk(json!({"content": text}), None));
                } else if let Some(tool) = delta.get("toolUse") {
                    let block = block_index.unwrap_or(0);
                    let index = self
                        .tool_blocks
                        .iter()
                        .find(|(b, _)| *b == block)
                        .map(|(_, i)| *i)
                        .ok_or_else(|| {
                            TranslateError::new(
                                "contentBlockDelta.contentBlockIndex",
                                "a tool input delta of a block that started no tool use",
                            )
                        })?;
                    let input = tool.get("input").and_then(Value::as_str).unwrap_or("");
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": input}}]}),
                        None,
                    ));
                } else if let Some(reasoning) = delta.get("reasoningContent") {
                    if let Some(text) = reasoning.get("text").and_then(Value::as_str) {
                        out.push(self.chunk(json!({"reasoning_content": text}), None));
                    } else if let Some(signature) = reasoning.get("signature") {
                        out.push(self.chunk(
                            json!({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": signature}]}),
                            None,
                        ));
                    } else if let Some(data) = reasoning.get("redactedContent") {
                        out.push(self.chunk(
                            json!({"thinking_blocks": [{"type": "redacted_thinking", "data": data}]}),
                            None,
                        ));
                    }
                }
            }
            "messageStop" => {
                self.start(&mut out);
                let stop = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new("messageStop.stopReason", "required"))?;
                out.push(self.chunk(json!({}), Some(finish_reason(stop))));
            }
            "metadata" => {
                if let Some(usage) = payload.get("usage") {
                    out.push(json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage_to_chat(usage),
                    }));
                }
            }
            // contentBlockStop, and events a newer API adds.
            _ => {}
        }
        Ok(out)
    }

    /// A first chunk (`delta.role`) when the stream did not start with `messageStart`.
    fn start(&mut self, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_token_counts_saturate_instead_of_overflowing() {
        let max = u64::MAX;
        let usage = usage_to_chat(&json!({"inputTokens": max, "outputTokens": max,
            "cacheReadInputTokens": max, "cacheWriteInputTokens": 5}));
        assert_eq!(usage["prompt_tokens"], max);
        assert_eq!(usage["completion_tokens"], max);
        assert_eq!(usage["total_tokens"], max);
    }

    #[test]
    fn an_http_image_url_is_refused_naming_the_field() {
        let chat = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}]});
        let error = request_from_chat(&chat).unwrap_err();
        assert_eq!(error.field, "messages[0].content[0].image_url.url");
    }

    #[test]
    fn consecutive_turns_merge_and_tool_results_are_user_turns() {
        let chat = json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "t1", "content": "42"},
                {"role": "user", "content": "thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        });
        let body = request_from_chat(&chat).unwrap();
        assert_eq!(body["system"], json!([{"text": "be brief"}]));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[0]["content"],
            json!([{"text": "a"}, {"text": "b"}])
        );
        assert_eq!(
            messages[1]["content"][0]["toolUse"],
            json!({"toolUseId": "t1", "name": "f", "input": {"x": 1}})
        );
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(
            messages[2]["content"][0]["toolResult"],
            json!({"toolUseId": "t1", "content": [{"text": "42"}]})
        );
        assert_eq!(messages[2]["content"][1], json!({"text": "thanks"}));
    }

    #[test]
    fn what_converse_cannot_express_is_refused() {
        for (field, value) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("presence_penalty", json!(0.5)),
            ("tool_choice", json!("none")),
        ] {
            let mut chat = json!({"messages": [{"role": "user", "content": "hi"}]});
            chat[field] = value;
            assert_eq!(request_from_chat(&chat).unwrap_err().field, field);
        }
    }

    #[test]
    fn response_format_is_a_forced_tool_and_its_call_the_content() {
        let chat = json!({
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        });
        let body = request_from_chat(&chat).unwrap();
        assert_eq!(
            body["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "json_tool_call"}})
        );
        assert!(json_mode(&chat));
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "t", "name": "json_tool_call", "input": {"a": 1}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
        });
        let chat = answer_to_chat_in(&answer, "m", true).unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(chat["choices"][0]["finish_reason"], "stop");
        assert!(chat["choices"][0]["message"].get("tool_calls").is_none());
        // An input that is only `properties` is unwrapped; one with more is not. Read from the
        // answer's bytes (as the backend reads it) the same as from its `Value`.
        for (input, content) in [
            (json!({"a": 1}), "{\"a\":1}"),
            (json!({"properties": {"b": [1, "x"]}}), "{\"b\":[1,\"x\"]}"),
            (
                json!({"properties": {"b": 2}, "c": 3}),
                "{\"c\":3,\"properties\":{\"b\":2}}",
            ),
        ] {
            let mut answer = answer.clone();
            answer["output"]["message"]["content"][0]["toolUse"]["input"] = input;
            let chat = answer_to_chat_in(&answer, "m", true).unwrap();
            assert_eq!(chat["choices"][0]["message"]["content"], content);
            let bytes = serde_json::to_vec(&answer).unwrap();
            let written = answer_bytes_to_chat_bytes(&bytes, "m", true, "chatcmpl-1").unwrap();
            let written: Value = serde_json::from_slice(&written).unwrap();
            assert_eq!(written["choices"][0]["message"]["content"], content);
            assert_eq!(written["choices"][0]["finish_reason"], "stop");
        }
        assert!(answer_bytes_to_chat_bytes(b"{\"output\": ", "m", true, "c").is_err());
    }

    #[test]
    fn a_stream_becomes_chunks_ending_with_usage() {
        let mut chunks = ChatChunks::new("m");
        let mut all = Vec::new();
        for (kind, payload) in [
            ("messageStart", json!({"role": "assistant"})),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
            ),
            (
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\""}}}),
            ),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12, "cacheReadInputTokens": 2}, "metrics": {"latencyMs": 10}}),
            ),
        ] {
            all.extend(chunks.push(kind, &payload).unwrap());
        }
        assert_eq!(all[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(all[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(all[2]["choices"][0]["delta"]["tool_calls"][0]["id"], "t");
        assert_eq!(
            all[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\""
        );
        assert_eq!(all[4]["choices"][0]["finish_reason"], "tool_calls");
        let last = all.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 7);
        assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
        let failure = chunks
            .push("throttlingException", &json!({"message": "slow down"}))
            .unwrap_err();
        assert_eq!(
            failure,
            StreamFailure::Exception {
                exception_type: "throttlingException".into(),
                message: "slow down".into()
            }
        );
    }
}
