//! Anthropic's Messages API as ferrolite calls it for an `anthropic/` deployment: a canonical
//! chat request translated to a Messages request ([`request_from_chat`]), a Messages answer
//! translated back ([`answer_to_chat`]), a Messages stream's events translated to canonical
//! chunks ([`ChatChunks`]), and an error answer classified ([`error_class`]). The mapping follows
//! LiteLLM's `AnthropicConfig` (`litellm/llms/anthropic/chat/transformation.py`).

use std::time::Duration;

use ferrolite_types::ErrorClass;
use serde_json::{Map, Value, json};

use crate::TranslateError;
use crate::doc::{Doc, Json};
use crate::out::{self, Obj, Out, obj};
use crate::sse::SseEvent;

use super::finish_reason_of;

/// `max_tokens` when the canonical request gives neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires it): LiteLLM's `DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The tokens added to a thinking budget for `max_tokens` when the canonical request gives no
/// `max_tokens` (LiteLLM's `DEFAULT_MAX_TOKENS`): Anthropic wants `max_tokens` above the budget.
pub const THINKING_ANSWER_TOKENS: u64 = 256;

/// The name of the tool a `response_format` becomes (LiteLLM's `RESPONSE_FORMAT_TOOL_NAME`):
/// the model is made to call it, and its input is the JSON answer.
pub const RESPONSE_FORMAT_TOOL: &str = "json_tool_call";

/// Canonical fields that carry nothing Anthropic's answer depends on, left out as LiteLLM leaves
/// them out (see [`request_from_chat`]).
const DROPPED: &[&str] = &[
    "stream_options",
    "metadata",
    "extra_headers",
    "mock_response",
    "metadata_litellm",
    "caching",
    "cache",
];

/// Canonical fields Anthropic cannot express: a request with one of them set is refused.
const REFUSED: &[&str] = &[
    "logit_bias",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "audio",
    "modalities",
    "prediction",
    "functions",
    "function_call",
    "web_search_options",
    "store",
];

/// A canonical chat request as a Messages request for `model` (the upstream's model name).
///
/// - `system` messages become the `system` blocks (a lone plain one the `system` string), in
///   order, wherever they stood; `cache_control` on a message or part is kept on its block.
/// - user and assistant messages become turns of blocks: text, `image_url` parts (a `data:` URL
///   as a base64 source with its media type, an `http(s)` URL as a `url` source), `file` parts
///   with `file_data` as `document` blocks, assistant `tool_calls` as `tool_use` blocks (their
///   arguments parsed), `tool` messages as `tool_result` blocks of a user turn, assistant
///   `thinking_blocks` (LiteLLM's field) as `thinking` blocks. Consecutive turns of one role are
///   merged into one, as Anthropic requires roles to alternate.
/// - `tools` (function tools as `name`/`description`/`input_schema`; a tool already in
///   Anthropic's form, with `input_schema`, as it is), `tool_choice` (`auto`, `none`,
///   `required` as `any`, a named function as `tool`), `parallel_tool_calls` as
///   `disable_parallel_tool_use`, `max_tokens` / `max_completion_tokens` (else
///   [`DEFAULT_MAX_TOKENS`], or with thinking on its budget and [`THINKING_ANSWER_TOKENS`]),
///   `stop` as `stop_sequences`, `temperature`, `top_p`, `top_k`,
///   `thinking`, `user` as `metadata.user_id`, `stream`.
/// - `response_format` `json_object` / `json_schema` as LiteLLM maps it for Anthropic: a tool
///   named [`RESPONSE_FORMAT_TOOL`] whose input schema is the wanted schema, forced with
///   `tool_choice` unless thinking is on; [`answer_to_chat`] turns its call back into content.
/// - `reasoning_effort` as `thinking` with LiteLLM's budgets (`low` 1024, `medium` 2048, `high`
///   4096 tokens; `minimal` Anthropic's least, 1024; `none` no thinking).
/// - Fields neither OpenAI's nor refused (provider-specific ones such as `top_k`, `thinking`,
///   `service_tier`) are passed as they are, as LiteLLM passes provider parameters.
///
/// Refused, naming the field: `n` above 1, `logprobs: true`, `top_logprobs`, `logit_bias`,
/// `presence_penalty`, `frequency_penalty`, `seed`, `audio`, `modalities`, `prediction`, the
/// legacy `functions` / `function_call`, `web_search_options`, `store`, audio and other content
/// parts Anthropic has no block for, tool call arguments that are not a JSON object, a
/// `reasoning_effort` without a budget, and tool calls or results in the messages without
/// `tools` (Anthropic refuses those; LiteLLM too unless `modify_params` adds a dummy tool).
///
/// Left out as LiteLLM leaves them out (nothing in the answer depends on them): `stream_options`
/// (Anthropic always reports usage), `metadata` (LiteLLM's own request metadata),
/// `extra_headers` (sent as headers by the backend), ferrolite's and LiteLLM's routing fields
/// (`mock_response`, `caching`, `cache`, `metadata_litellm`), a message's `name`, an image's
/// `detail`, a function's `strict`, a `user` that is an e-mail address or a phone number (Anthropic refuses those as `user_id`),
/// `response_format: {"type": "text"}`, `n: 1` and `logprobs: false`.
pub fn request_from_chat(chat: &Value, model: &str) -> Result<Value, TranslateError> {
    Ok(request_out(chat, model)?.into_value())
}

/// [`request_from_chat`] written straight to the bytes sent, with `stream` set as the call is
/// (`true`, else left out): the same body, built from the borrowed parts of `chat` without a
/// tree of its own.
pub fn request_bytes_from_chat(
    chat: &Value,
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, TranslateError> {
    let mut out = request_out(chat, model)?;
    if let Out::Object(object) = &mut out {
        if stream {
            object.insert("stream", true);
        } else {
            object.remove("stream");
        }
    }
    out::to_bytes(&out)
}

/// The Messages request of `chat` for `model`, borrowing from them.
fn request_out<'a>(chat: &'a Value, model: &'a str) -> Result<Out<'a>, TranslateError> {
    let request = chat
        .as_object()
        .ok_or_else(|| TranslateError::new("", "the request is not a JSON object"))?;
    let mut out = Obj::with_capacity(request.len() + 2);
    out.push("model", model);

    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::new("messages", "a list of messages is required"))?;
    let (system, turns, tool_blocks) = messages_of(messages)?;
    out.push("messages", turns);
    if !system.is_empty() {
        let lone_plain = system.len() == 1 && !system[0].has_field("cache_control");
        let lone_text = match system.first() {
            Some(Out::Object(block)) if lone_plain => block.get("text").cloned(),
            Some(Out::Ref(block)) if lone_plain => block.get("text").map(Out::Ref),
            _ => None,
        };
        out.push("system", lone_text.unwrap_or(Out::Array(system)));
    }

    // `reasoning_effort` as a thinking budget, else the caller's own `thinking`.
    let thinking = match request.get("reasoning_effort").filter(|v| !v.is_null()) {
        Some(effort) => thinking_budget(effort)?.map(|budget| {
            (
                obj! {"type": "enabled", "budget_tokens": budget},
                Some(budget),
            )
        }),
        None => request
            .get("thinking")
            .filter(|v| !v.is_null())
            .map(|thinking| {
                let budget = Some(thinking)
                    .filter(|t| t.get("type").and_then(Value::as_str) == Some("enabled"))
                    .and_then(|t| t.get("budget_tokens"))
                    .and_then(Value::as_u64);
                (Out::Ref(thinking), budget)
            }),
    };
    let budget = thinking.as_ref().and_then(|(_, budget)| *budget);
    let thinking_on = budget.is_some();
    if let Some((thinking, _)) = thinking {
        out.push("thinking", thinking);
    }

    let max_tokens = match (
        request
            .get("max_completion_tokens")
            .filter(|v| !v.is_null()),
        request.get("max_tokens").filter(|v| !v.is_null()),
    ) {
        (Some(tokens), _) => positive(tokens, "max_completion_tokens")?,
        (None, Some(tokens)) => positive(tokens, "max_tokens")?,
        // Room for the thinking and an answer, as LiteLLM's
        // `update_optional_params_with_thinking_tokens` leaves.
        (None, None) => budget.map_or(DEFAULT_MAX_TOKENS, |b| {
            b.saturating_add(THINKING_ANSWER_TOKENS)
        }),
    };
    out.push("max_tokens", max_tokens);

    let mut tools = Vec::new();
    if let Some(given) = request.get("tools").filter(|v| !v.is_null()) {
        let given = given
            .as_array()
            .ok_or_else(|| TranslateError::new("tools", "not a list"))?;
        tools.reserve(given.len());
        for (i, tool) in given.iter().enumerate() {
            tools.push(tool_of(tool, i)?);
        }
    }
    let mut tool_choice = match request.get("tool_choice").filter(|v| !v.is_null()) {
        Some(choice) => Some(tool_choice_of(choice)?),
        None => None,
    };
    match request.get("parallel_tool_calls").filter(|v| !v.is_null()) {
        Some(Value::Bool(parallel)) => {
            let none = tool_choice
                .as_ref()
                .is_some_and(|c| c.str_field("type") == Some("none"));
            if !none {
                let choice = tool_choice.get_or_insert_with(|| obj! {"type": "auto"});
                choice.set_field("disable_parallel_tool_use", !parallel);
            }
        }
        Some(_) => return Err(TranslateError::new("parallel_tool_calls", "not a boolean")),
        None => {}
    }
    if let Some(format) = request.get("response_format").filter(|v| !v.is_null()) {
        if let Some(tool) = response_format_tool(format)? {
            tools.push(tool);
            if !thinking_on {
                tool_choice = Some(obj! {"type": "tool", "name": RESPONSE_FORMAT_TOOL});
            }
        }
    }
    if tools.is_empty() && tool_blocks {
        return Err(TranslateError::new(
            "tools",
            "Anthropic needs the tools declared when the messages hold tool calls or results",
        ));
    }
    if !tools.is_empty() {
        out.push("tools", tools);
    }
    if let Some(choice) = tool_choice {
        out.push("tool_choice", choice);
    }

    if let Some(stop) = request.get("stop").filter(|v| !v.is_null()) {
        let sequences: Vec<Out<'_>> = match stop {
            Value::String(s) => vec![Out::Str(s)],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str()
                        .map(Out::Str)
                        .ok_or_else(|| TranslateError::new(format!("stop[{i}]"), "not a string"))
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(TranslateError::new(
                    "stop",
                    "not a string or a list of strings",
                ));
            }
        };
        if !sequences.is_empty() {
            out.push("stop_sequences", sequences);
        }
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        if valid_user_id(user) {
            out.push("metadata", obj! {"user_id": user});
        }
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        out.push("stream", true);
    }
    match request.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(TranslateError::new(
                "n",
                "Anthropic answers with one choice; n above 1 cannot be sent",
            ));
        }
    }
    match request.get("logprobs") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(TranslateError::new(
                "logprobs",
                "Anthropic does not return log probabilities",
            ));
        }
    }
    const HANDLED: &[&str] = &[
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "reasoning_effort",
        "thinking",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stop",
        "user",
        "stream",
        "n",
        "logprobs",
    ];
    for (name, value) in request {
        if HANDLED.contains(&name.as_str()) || DROPPED.contains(&name.as_str()) {
            continue;
        }
        if REFUSED.contains(&name.as_str()) {
            if value.is_null() {
                continue;
            }
            return Err(TranslateError::new(
                name.clone(),
                "Anthropic's Messages API has no such parameter",
            ));
        }
        out.insert(name, value);
    }
    Ok(Out::Object(out))
}

/// A positive whole number of tokens.
fn positive(value: &Value, field: &str) -> Result<u64, TranslateError> {
    value
        .as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| TranslateError::new(field, "not a positive whole number"))
}

/// The thinking budget of a `reasoning_effort` (`None`: no thinking).
fn thinking_budget(effort: &Value) -> Result<Option<u64>, TranslateError> {
    match effort.as_str() {
        Some("none") => Ok(None),
        Some("minimal") | Some("low") => Ok(Some(1024)),
        Some("medium") => Ok(Some(2048)),
        Some("high") => Ok(Some(4096)),
        _ => Err(TranslateError::new(
            "reasoning_effort",
            "not one of none, minimal, low, medium, high",
        )),
    }
}

/// Whether Anthropic takes `user` as a `user_id` (LiteLLM's `_valid_user_id`: not an e-mail
/// address, not a phone number).
fn valid_user_id(user: &str) -> bool {
    let email = user.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !local.contains(char::is_whitespace)
            && domain.contains('.')
            && !domain.contains(char::is_whitespace)
            && domain
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
    });
    let phone_body = user.strip_prefix('+').unwrap_or(user);
    let phone = phone_body.chars().count() >= 7
        && phone_body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '(' | ')' | '-'));
    !email && !phone
}

/// The system blocks, the alternating turns of canonical `messages`, and whether the turns
/// hold `tool_use` or `tool_result` blocks.
type Turns<'a> = (Vec<Out<'a>>, Vec<Out<'a>>, bool);

/// The system blocks and the alternating turns of canonical `messages`.
fn messages_of(messages: &[Value]) -> Result<Turns<'_>, TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Out<'_>>)> = Vec::with_capacity(messages.len());
    // A turn's content as a plain string, when it is one message with string content.
    let mut plain: Vec<Option<&str>> = Vec::with_capacity(messages.len());
    let mut tool_blocks = false;
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::new(at("role"), "missing"))?;
        let cache_control = message.get("cache_control").filter(|v| !v.is_null());
        let content = message.get("content").filter(|v| !v.is_null());
        match role {
            "system" | "developer" => {
                let mut blocks = blocks_of(content, i, role)?;
                mark_last(&mut blocks, cache_control);
                system.extend(blocks);
            }
            "user" | "assistant" => {
                let mut blocks = Vec::new();
                if role == "assistant" {
                    if let Some(thinking) = message.get("thinking_blocks").filter(|v| !v.is_null())
                    {
                        let thinking = thinking.as_array().ok_or_else(|| {
                            TranslateError::new(at("thinking_blocks"), "not a list")
                        })?;
                        tool_blocks |= thinking.iter().any(is_tool_block);
                        blocks.extend(thinking.iter().map(Out::Ref));
                    }
                }
                let text_blocks = blocks_of(content, i, role)?;
                let plain_text = match content {
                    Some(Value::String(s))
                        if cache_control.is_none()
                            && blocks.is_empty()
                            && message.get("tool_calls").is_none_or(Value::is_null) =>
                    {
                        Some(s.as_str())
                    }
                    _ => None,
                };
                // An empty text block is refused by Anthropic: an assistant turn of tool calls
                // with `content: ""` has none.
                blocks.extend(text_blocks.into_iter().filter(|b| {
                    !(b.str_field("type") == Some("text")
                        && b.str_field("text") == Some("")
                        && !b.has_field("cache_control")
                        && plain_text.is_none())
                }));
                if role == "assistant" {
                    if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
                        let calls = calls
                            .as_array()
                            .ok_or_else(|| TranslateError::new(at("tool_calls"), "not a list"))?;
                        blocks.reserve(calls.len());
                        for (j, call) in calls.iter().enumerate() {
                            blocks.push(tool_use_of(call, || {
                                format!("messages[{i}].tool_calls[{j}]")
                            })?);
                            tool_blocks = true;
                        }
                    }
                }
                mark_last(&mut blocks, cache_control);
                let role = if role == "user" { "user" } else { "assistant" };
                push_turn(&mut turns, &mut plain, role, blocks, plain_text);
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(at("tool_call_id"), "missing"))?;
                let mut result = Obj::with_capacity(4);
                result.push("type", "tool_result");
                result.push("tool_use_id", id);
                match content {
                    None => {}
                    Some(Value::String(s)) => {
                        result.push("content", s);
                    }
                    Some(_) => {
                        let blocks = blocks_of(content, i, role)?;
                        result.push("content", blocks);
                    }
                }
                if let Some(cache) = cache_control {
                    result.push("cache_control", cache);
                }
                tool_blocks = true;
                push_turn(
                    &mut turns,
                    &mut plain,
                    "user",
                    vec![Out::Object(result)],
                    None,
                );
            }
            "function" => {
                return Err(TranslateError::new(
                    at("role"),
                    "legacy function messages are not translated; use tool messages",
                ));
            }
            other => {
                return Err(TranslateError::new(
                    at("role"),
                    format!("unknown role `{other}`"),
                ));
            }
        }
    }
    let turns = turns
        .into_iter()
        .zip(plain)
        .map(|((role, blocks), plain)| {
            let content = match plain {
                Some(text) => Out::Str(text),
                None => Out::Array(blocks),
            };
            obj! {"role": role, "content": content}
        })
        .collect();
    Ok((system, turns, tool_blocks))
}

/// Whether a block given as it is is a `tool_use` or `tool_result` block.
fn is_tool_block(block: &Value) -> bool {
    matches!(
        block.get("type").and_then(Value::as_str),
        Some("tool_use" | "tool_result")
    )
}

/// Adds `blocks` to the last turn when it has `role`, else as a new turn.
fn push_turn<'a>(
    turns: &mut Vec<(&'static str, Vec<Out<'a>>)>,
    plain: &mut Vec<Option<&'a str>>,
    role: &'static str,
    blocks: Vec<Out<'a>>,
    plain_text: Option<&'a str>,
) {
    match turns.last_mut() {
        Some((last, existing)) if *last == role => {
            existing.extend(blocks);
            if let Some(p) = plain.last_mut() {
                *p = None;
            }
        }
        _ => {
            turns.push((role, blocks));
            plain.push(plain_text);
        }
    }
}

/// Puts a message's `cache_control` on its last block (as LiteLLM does), unless that block has
/// its own.
fn mark_last<'a>(blocks: &mut [Out<'a>], cache_control: Option<&'a Value>) {
    if let (Some(cache), Some(last)) = (cache_control, blocks.last_mut()) {
        if !last.has_field("cache_control") {
            last.set_field("cache_control", cache);
        }
    }
}

/// The content of `messages[i]` as Messages blocks.
fn blocks_of<'a>(
    content: Option<&'a Value>,
    i: usize,
    role: &str,
) -> Result<Vec<Out<'a>>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![obj! {"type": "text", "text": s}]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                block_of(
                    part,
                    |field| format!("messages[{i}].content[{j}]{field}"),
                    role,
                )
            })
            .collect(),
        Some(_) => Err(TranslateError::new(
            format!("messages[{i}].content"),
            "not a string or a list of parts",
        )),
    }
}

/// One content part as a Messages block; `at(".field")` names a field of it.
fn block_of<'a>(
    part: &'a Value,
    at: impl Fn(&str) -> String,
    role: &str,
) -> Result<Out<'a>, TranslateError> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(at(".type"), "missing"))?;
    let mut block = match kind {
        "text" => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(at(".text"), "missing"))?;
            obj! {"type": "text", "text": text}
        }
        "image_url" if role == "user" || role == "tool" => {
            let url = match part.get("image_url") {
                Some(Value::String(url)) => url.as_str(),
                Some(image) => image
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::new(at(".image_url.url"), "missing"))?,
                None => return Err(TranslateError::new(at(".image_url"), "missing")),
            };
            obj! {"type": "image", "source": source_of(url, || at(".image_url.url"))?}
        }
        "file" if role == "user" => {
            let file = part
                .get("file")
                .ok_or_else(|| TranslateError::new(at(".file"), "missing"))?;
            if file.get("file_id").is_some_and(|v| !v.is_null()) {
                return Err(TranslateError::new(
                    at(".file.file_id"),
                    "Anthropic cannot read OpenAI file ids; send file_data",
                ));
            }
            let data = file
                .get("file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new(at(".file.file_data"), "missing"))?;
            obj! {"type": "document", "source": source_of(data, || at(".file.file_data"))?}
        }
        // Anthropic's own blocks passed in the canonical form (LiteLLM passes them too).
        "thinking" | "redacted_thinking" | "document" | "image" | "search_result" => {
            // Its own `cache_control`, if any, is in it already.
            return Ok(Out::Ref(part));
        }
        other => {
            return Err(TranslateError::new(
                at(".type"),
                format!("Anthropic has no `{other}` content in a {role} message"),
            ));
        }
    };
    if let Some(cache) = part.get("cache_control").filter(|v| !v.is_null()) {
        block.set_field("cache_control", cache);
    }
    Ok(block)
}

/// An image's or document's URL as a Messages source: a `data:` URL as base64 with its media
/// type, an `http(s)` URL as a `url` source.
fn source_of(url: &str, at: impl Fn() -> String) -> Result<Out<'_>, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::new(at(), "a data: URL without data"))?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            TranslateError::new(at(), "a data: URL must be base64 (`data:TYPE;base64,...`)")
        })?;
        return Ok(obj! {"type": "base64", "media_type": media_type, "data": data});
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(obj! {"type": "url", "url": url});
    }
    Err(TranslateError::new(at(), "not a data: or http(s) URL"))
}

/// An assistant tool call as a `tool_use` block; `at()` is its path.
fn tool_use_of(call: &Value, at: impl Fn() -> String) -> Result<Out<'_>, TranslateError> {
    let (id, name, input) = crate::tool_call_parts(call, &at())?;
    if !crate::is_object(input) {
        return Err(TranslateError::new(
            format!("{}.function.arguments", at()),
            "not a JSON object (Anthropic's tool input is one)",
        ));
    }
    let mut block = Obj::with_capacity(5);
    block.push("type", "tool_use");
    block.push("id", id);
    block.push("name", name);
    block.push("input", input);
    if let Some(cache) = call.get("cache_control").filter(|v| !v.is_null()) {
        block.push("cache_control", cache);
    }
    Ok(Out::Object(block))
}

/// A canonical tool (`tools[i]`) as a Messages tool.
fn tool_of(tool: &Value, i: usize) -> Result<Out<'_>, TranslateError> {
    if tool.get("input_schema").is_some() {
        return Ok(Out::Ref(tool)); // already Anthropic's form
    }
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(TranslateError::new(
                format!("tools[{i}].type"),
                format!("Anthropic has no `{other}` tool in the chat form"),
            ));
        }
        None => return Err(TranslateError::new(format!("tools[{i}].type"), "missing")),
    }
    let function = tool
        .get("function")
        .ok_or_else(|| TranslateError::new(format!("tools[{i}].function"), "missing"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("tools[{i}].function.name"), "missing"))?;
    let schema = match function.get("parameters").filter(|v| !v.is_null()) {
        Some(schema) => Out::Ref(schema),
        None => obj! {"type": "object", "properties": Obj::new()},
    };
    let mut out = Obj::with_capacity(4);
    out.push("name", name);
    if let Some(description) = function.get("description").filter(|v| !v.is_null()) {
        out.push("description", description);
    }
    out.push("input_schema", schema);
    let cache = tool
        .get("cache_control")
        .or_else(|| function.get("cache_control"))
        .filter(|v| !v.is_null());
    if let Some(cache) = cache {
        out.push("cache_control", cache);
    }
    Ok(Out::Object(out))
}

/// A canonical `tool_choice` as Anthropic's.
fn tool_choice_of(choice: &Value) -> Result<Out<'_>, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(obj! {"type": "auto"}),
            "none" => Ok(obj! {"type": "none"}),
            "required" => Ok(obj! {"type": "any"}),
            other => Err(TranslateError::new(
                "tool_choice",
                format!("unknown tool choice `{other}`"),
            )),
        },
        Value::Object(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::new("tool_choice.function.name", "missing"))?;
            Ok(obj! {"type": "tool", "name": name})
        }
        _ => Err(TranslateError::new(
            "tool_choice",
            "not a string or an object",
        )),
    }
}

/// The tool a `response_format` becomes (`None` for `text`).
fn response_format_tool(format: &Value) -> Result<Option<Out<'_>>, TranslateError> {
    let kind = format
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new("response_format.type", "missing"))?;
    let schema = match kind {
        "text" => return Ok(None),
        "json_object" => {
            obj! {"type": "object", "additionalProperties": true, "properties": Obj::new()}
        }
        "json_schema" => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    TranslateError::new("response_format.json_schema.schema", "missing")
                })?;
            let mut out = Obj::with_capacity(schema.len() + 1);
            out.push("type", "object");
            for (k, v) in schema {
                out.insert(k, v);
            }
            Out::Object(out)
        }
        other => {
            return Err(TranslateError::new(
                "response_format.type",
                format!("unknown response format `{other}`"),
            ));
        }
    };
    Ok(Some(
        obj! {"name": RESPONSE_FORMAT_TOOL, "input_schema": schema},
    ))
}

/// Now as Unix seconds: the canonical `created`, which Anthropic's answers do not carry.
fn unix_now() -> u64 {
    // `created` is wall-clock time by definition.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A number field of a usage object (absent or null: 0).
fn count<A: Json>(usage: Option<&A>, name: &str) -> u64 {
    usage
        .and_then(|u| u.get(name))
        .and_then(A::as_u64)
        .unwrap_or(0)
}

/// Anthropic's usage as the canonical one, as LiteLLM's `calculate_usage` counts it:
/// `prompt_tokens` = `input_tokens` + `cache_read_input_tokens` +
/// `cache_creation_input_tokens`, `prompt_tokens_details.cached_tokens` = the cache reads,
/// `completion_tokens` = `output_tokens`; the two cache counts are kept under their own names.
/// The cache writes' split by lifetime (`cache_creation`: `ephemeral_5m_input_tokens`,
/// `ephemeral_1h_input_tokens`), when given, is kept as LiteLLM keeps it:
/// `prompt_tokens_details.cache_creation_token_details` (one-hour writes cost more).
pub fn usage_to_chat(usage: Option<&Value>) -> Value {
    usage_out(usage).into_value()
}

/// [`usage_to_chat`] of either tree, to be written.
fn usage_out<'a, A: Json>(usage: Option<&A>) -> Out<'a> {
    let input = count(usage, "input_tokens");
    let read = count(usage, "cache_read_input_tokens");
    let created = count(usage, "cache_creation_input_tokens");
    let output = count(usage, "output_tokens");
    let prompt = input.saturating_add(read).saturating_add(created);
    let mut details = Obj::with_capacity(2);
    details.push("cached_tokens", read);
    if let Some(lifetimes) = usage
        .and_then(|u| u.get("cache_creation"))
        .filter(|c| c.is_object())
    {
        let count = |name| count(Some(lifetimes), name);
        details.push(
            "cache_creation_token_details",
            obj! {
                "ephemeral_5m_input_tokens": count("ephemeral_5m_input_tokens"),
                "ephemeral_1h_input_tokens": count("ephemeral_1h_input_tokens"),
            },
        );
    }
    obj! {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt.saturating_add(output),
        "prompt_tokens_details": details,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": created,
    }
}

/// A Messages answer (`type: message`) as a canonical `chat.completion`, reported as `model`
/// when the answer names none (it names the model that answered otherwise).
///
/// Text blocks are joined into `content` (`null` when there is none), `tool_use` blocks become
/// `tool_calls` with JSON-string arguments, `thinking` blocks the `reasoning_content` (joined)
/// and `thinking_blocks` (as they are), as LiteLLM does. A lone call of the
/// [`RESPONSE_FORMAT_TOOL`] (a `response_format` request's) is the answer's content, its input
/// as JSON text, finishing with `stop`. `stop_reason` is mapped by [`finish_reason_of`], the
/// usage by [`usage_to_chat`].
pub fn answer_to_chat(answer: &Value, model: &str) -> Result<Value, TranslateError> {
    Ok(answer_out(answer, model)?.into_value())
}

/// [`answer_to_chat`] written straight to the bytes of the canonical answer: the same answer,
/// built from the borrowed parts of `answer` without a tree of its own.
pub fn answer_bytes_to_chat(answer: &Value, model: &str) -> Result<Vec<u8>, TranslateError> {
    out::to_bytes(&answer_out(answer, model)?)
}

/// [`answer_bytes_to_chat`] of a Messages answer given as its bytes (what the Anthropic backend
/// reads): read without copying its strings into a tree of their own. Bytes that are not a
/// JSON object are refused with the parser's message.
pub fn answer_bytes_to_chat_bytes(answer: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let answer =
        Doc::parse(answer).map_err(|e| TranslateError::new("", format!("not JSON: {e}")))?;
    if !answer.is_object() {
        return Err(TranslateError::new("", "not a JSON object"));
    }
    out::to_bytes(&answer_out(&answer, model)?)
}

/// The `chat.completion` of a Messages answer, borrowing from it.
fn answer_out<'a, A: Json>(answer: &'a A, model: &'a str) -> Result<Out<'a>, TranslateError> {
    if answer.get("type").and_then(A::as_str) == Some("error") {
        return Err(TranslateError::new(
            "error",
            error_message(&out::to_string(&answer.out())?),
        ));
    }
    let blocks = answer
        .get("content")
        .and_then(A::as_array)
        .ok_or_else(|| TranslateError::new("content", "missing"))?;
    let mut texts: Vec<&str> = Vec::with_capacity(1);
    let mut has_text = false;
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut calls: Vec<&A> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(A::as_str) {
            Some("text") => {
                has_text = true;
                texts.push(block.get("text").and_then(A::as_str).unwrap_or(""));
            }
            Some("tool_use") => calls.push(block),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(A::as_str).unwrap_or(""));
                thinking_blocks.push(block.out());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.out()),
            // Server tools' blocks (web search results, ...) carry nothing the chat form has.
            Some(_) => {}
            None => return Err(TranslateError::new(format!("content[{i}].type"), "missing")),
        }
    }
    let mut finish_reason = answer
        .get("stop_reason")
        .and_then(A::as_str)
        .map(finish_reason_of)
        .unwrap_or("stop");
    let mut content = match texts.as_slice() {
        _ if !has_text => Out::Null,
        [text] => Out::Str(text),
        texts => Out::String(texts.concat()),
    };
    // A call's input as JSON text (none: `{}`).
    let arguments = |call: &A| -> Result<String, TranslateError> {
        call.get("input").map_or_else(
            || Ok("{}".to_string()),
            |input| out::to_string(&input.out()),
        )
    };
    if let [call] = calls.as_slice() {
        if call.get("name").and_then(A::as_str) == Some(RESPONSE_FORMAT_TOOL) {
            let json_text = match call.get("input").and_then(|input| input.get("values")) {
                Some(values) => out::to_string(&values.out())?,
                None => arguments(call)?,
            };
            content = Out::String(json_text);
            calls.clear();
            finish_reason = "stop";
        }
    }
    let mut message = Obj::with_capacity(5);
    message.push("role", "assistant");
    message.push("content", content);
    if !calls.is_empty() {
        let tool_calls = calls
            .iter()
            .map(|call| {
                Ok(obj! {
                    "id": call.get("id").map_or(Out::Null, A::out),
                    "type": "function",
                    "function": obj! {
                        "name": call.get("name").map_or(Out::Null, A::out),
                        "arguments": arguments(call)?,
                    },
                })
            })
            .collect::<Result<Vec<Out<'_>>, TranslateError>>()?;
        message.push("tool_calls", tool_calls);
    }
    if !thinking_blocks.is_empty() {
        message.push("reasoning_content", reasoning);
        message.push("thinking_blocks", thinking_blocks);
    }
    Ok(obj! {
        "id": answer.get("id").map_or(Out::Str("msg_"), A::out),
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.get("model").and_then(A::as_str).unwrap_or(model),
        "choices": vec![obj! {
            "index": 0u64,
            "message": message,
            "finish_reason": finish_reason,
        }],
        "usage": usage_out(answer.get("usage")),
    })
}

/// A Messages stream as canonical `chat.completion.chunk`s: [`ChatChunks::push`] takes each
/// event and returns the chunks it makes. The first chunk carries `delta.role`; text, tool call
/// (`input_json_delta` as argument pieces) and thinking (`reasoning_content`) deltas follow;
/// `message_delta` gives the chunk with `finish_reason`; `message_stop` the last chunk, with
/// empty `choices` and the usage (as OpenAI's with `stream_options.include_usage`). `ping`s
/// make nothing; an `error` event is an error whose field is `error` (the backend classifies
/// the event's data with [`error_class`]).
#[derive(Debug)]
pub struct ChatChunks {
    model: String,
    id: String,
    created: u64,
    /// The message's usage so far (`message_start`'s, updated by `message_delta`'s).
    usage: Map<String, Value>,
    /// Each content block's tool call index, by block index (`None` for other blocks).
    tool_index: Vec<Option<usize>>,
    tools: usize,
    /// The block index of the response-format tool's call, whose input is streamed as content.
    json_block: Option<usize>,
    started: bool,
    done: bool,
}

impl ChatChunks {
    /// The translator of one stream, reporting `model` until `message_start` names the model.
    pub fn new(model: &str) -> Self {
        ChatChunks {
            model: model.to_string(),
            id: String::from("msg_"),
            created: unix_now(),
            usage: Map::new(),
            tool_index: Vec::new(),
            tools: 0,
            json_block: None,
            started: false,
            done: false,
        }
    }

    /// Whether `message_stop` has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The usage so far, in the canonical form.
    pub fn usage(&self) -> Value {
        usage_to_chat(Some(&Value::Object(self.usage.clone())))
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    fn start(&mut self, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    /// The chunks one event makes.
    pub fn push(&mut self, event: &SseEvent) -> Result<Vec<Value>, TranslateError> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| TranslateError::new("data", format!("an event is not JSON: {e}")))?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let message = data.get("message");
                if let Some(id) = message.and_then(|m| m.get("id")).and_then(Value::as_str) {
                    self.id = id.to_string();
                }
                if let Some(model) = message.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.model = model.to_string();
                }
                if let Some(usage) = message
                    .and_then(|m| m.get("usage"))
                    .and_then(Value::as_object)
                {
                    merge_usage(&mut self.usage, usage);
                }
                self.start(&mut out);
            }
            "content_block_start" => {
                self.start(&mut out);
                let index = block_index(&data)?;
                let block = data.get("content_block").cloned().unwrap_or(Value::Null);
                if self.tool_index.len() <= index {
                    self.tool_index.resize(index + 1, None);
                }
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") if block["name"] == RESPONSE_FORMAT_TOOL => {
                        self.json_block = Some(index);
                    }
                    Some("tool_use") => {
                        let tool = self.tools;
                        self.tools += 1;
                        self.tool_index[index] = Some(tool);
                        out.push(self.chunk(
                            json!({"tool_calls": [{
                                "index": tool,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {
                                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                                    "arguments": "",
                                },
                            }]}),
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(text) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(self.chunk(json!({ "content": text }), None));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.start(&mut out);
                let index = block_index(&data)?;
                let delta = data.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").cloned().unwrap_or_else(|| "".into());
                        out.push(self.chunk(json!({ "content": text }), None));
                    }
                    Some("input_json_delta") => {
                        let piece = delta
                            .get("partial_json")
                            .cloned()
                            .unwrap_or_else(|| "".into());
                        if self.json_block == Some(index) {
                            out.push(self.chunk(json!({ "content": piece }), None));
                        } else if let Some(Some(tool)) = self.tool_index.get(index) {
                            out.push(self.chunk(
                                json!({"tool_calls": [{
                                    "index": tool,
                                    "function": {"arguments": piece},
                                }]}),
                                None,
                            ));
                        } else {
                            return Err(TranslateError::new(
                                "delta.partial_json",
                                "tool input for a block that is not a tool call",
                            ));
                        }
                    }
                    Some("thinking_delta") => {
                        let thinking = delta.get("thinking").cloned().unwrap_or_else(|| "".into());
                        out.push(self.chunk(json!({ "reasoning_content": thinking }), None));
                    }
                    // signature_delta, citations_delta: nothing the chat form carries.
                    _ => {}
                }
            }
            "content_block_stop" | "ping" => {}
            "message_delta" => {
                self.start(&mut out);
                if let Some(usage) = data.get("usage").and_then(Value::as_object) {
                    merge_usage(&mut self.usage, usage);
                }
                if let Some(stop) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    let finish = if self.json_block.is_some() && self.tools == 0 {
                        "stop"
                    } else {
                        finish_reason_of(stop)
                    };
                    out.push(self.chunk(json!({}), Some(finish)));
                }
            }
            "message_stop" => {
                self.done = true;
                out.push(json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage(),
                }));
            }
            "error" => {
                return Err(TranslateError::new("error", error_message(&event.data)));
            }
            other => {
                // Event types added later are skipped, as Anthropic's versioning policy asks.
                let _ = other;
            }
        }
        Ok(out)
    }
}

/// A content block event's `index`.
fn block_index(data: &Value) -> Result<usize, TranslateError> {
    data.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < 4096)
        .ok_or_else(|| TranslateError::new("index", "missing or out of range"))
}

/// Takes a stream event's usage numbers (and the cache writes' split by lifetime) into the
/// running usage of a Messages stream, later values replacing earlier ones: what the chunks'
/// usage and a passed-through stream's usage are read from.
pub fn merge_usage(usage: &mut Map<String, Value>, update: &Map<String, Value>) {
    for (name, value) in update {
        // The counts, and the cache writes' split by lifetime (`cache_creation`).
        if value.is_u64() || (name == "cache_creation" && value.is_object()) {
            usage.insert(name.clone(), value.clone());
        }
    }
}

/// The HTTP status Anthropic answers with an error of `kind` (its `error.type`).
pub fn status_of_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// An Anthropic error body's `error.message` (the body's first 500 characters when it has
/// none).
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    parsed
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| body.chars().take(500).collect(), str::to_string)
}

/// Classifies an Anthropic error answer (`{"type": "error", "error": {"type", "message"}}`)
/// as LiteLLM's exception mapping does for Anthropic: "prompt is too long" (and other
/// context-length messages) a context-window error; a content-filtering refusal a
/// content-policy error; "credit balance is too low" a rate limit (LiteLLM maps it to
/// `RateLimitError` so that the router falls back); 529 and `overloaded_error` a server error
/// (LiteLLM's `InternalServerError`: retried, and counted towards cooldowns like a 500); any
/// other by its status (429 with `Retry-After`). A stream's `error` event, sent with a 200,
/// is classified by its error type's status.
pub fn error_class(status: u16, retry_after: Option<Duration>, body: &str) -> ErrorClass {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|b| b.get("error"));
    let kind = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let lower = error_message(body).to_ascii_lowercase();
    let status = if (200..400).contains(&status) && !kind.is_empty() {
        status_of_error_type(kind)
    } else {
        status
    };
    if lower.contains("prompt is too long")
        || lower.contains("context window")
        || lower.contains("context length")
        || lower.contains("exceed context limit")
        || lower.contains("too many total text bytes")
    {
        ErrorClass::ContextWindowExceeded
    } else if lower.contains("content filtering") || lower.contains("usage policy") {
        ErrorClass::ContentPolicy
    } else if lower.contains("credit balance is too low") {
        ErrorClass::RateLimited { retry_after }
    } else if status == 529 || kind == "overloaded_error" {
        ErrorClass::ServerError { status: 529 }
    } else {
        ErrorClass::from_status(status, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_that_is_an_email_or_a_phone_number_is_not_sent() {
        assert!(valid_user_id("user-123"));
        assert!(!valid_user_id("ada@example.com"));
        assert!(!valid_user_id("+1 (555) 123-4567"));
        assert!(valid_user_id("12"));
    }

    #[test]
    fn error_types_have_anthropics_statuses() {
        assert_eq!(status_of_error_type("overloaded_error"), 529);
        assert_eq!(status_of_error_type("rate_limit_error"), 429);
        assert_eq!(status_of_error_type("something_new"), 500);
    }
}
