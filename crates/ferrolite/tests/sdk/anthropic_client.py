"""The official `anthropic` SDK against the gateway's Messages API.

Usage: FERROLITE_GATEWAY=... FERROLITE_KEY=... FERROLITE_MODEL=... python anthropic_client.py SUITE
with SUITE one of `messages`, `errors` (steps.py says what it prints). The SDK is pointed at the
gateway's root and sends the gateway's key as `x-api-key`.
"""

import anthropic

from steps import KEY, GATEWAY, MODEL, PNG_BASE64, WEATHER_PARAMETERS, prompt, run

client = anthropic.Anthropic(base_url=GATEWAY, api_key=KEY, max_retries=0, timeout=30)

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": WEATHER_PARAMETERS,
}


def message_fields(message):
    return {
        "id": message.id,
        "type": message.type,
        "role": message.role,
        "model": message.model,
        "content": [block.model_dump() for block in message.content],
        "stop_reason": message.stop_reason,
        "usage": message.usage.model_dump(),
    }


def messages_create(step):
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": prompt(step)}],
    )
    return message_fields(message)


def messages_system_tool(step):
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="Answer briefly.",
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": prompt(step)}],
    )
    return message_fields(message)


def messages_tool_result(step):
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": prompt(step)},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_weather",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_weather", "content": "Sunny"}
                ],
            },
        ],
    )
    return message_fields(message)


def messages_image(step):
    message = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
                    },
                    {"type": "text", "text": prompt(step)},
                ],
            }
        ],
    )
    return message_fields(message)


def messages_stream_helper(step):
    with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        system="Answer briefly.",
        messages=[{"role": "user", "content": prompt(step)}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return {"text": text, "final": message_fields(final)}


def messages_stream_tool(step):
    with client.messages.stream(
        model=MODEL,
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": prompt(step)}],
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    return {"types": types, "final": message_fields(final)}


def messages_stream_events(step):
    stream = client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": prompt(step)}],
        stream=True,
    )
    types, deltas = [], []
    for event in stream:
        types.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            deltas.append(event.delta.text)
    return {"types": types, "deltas": deltas}


def count_tokens(step):
    count = client.messages.count_tokens(
        model=MODEL,
        system="Answer briefly.",
        messages=[{"role": "user", "content": prompt(step)}],
    )
    return {"input_tokens": count.input_tokens}


def unknown_model(step):
    message = client.messages.create(
        model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": prompt(step)}]
    )
    return {"unexpected_answer": message.model_dump()}


def wrong_key(step):
    other = anthropic.Anthropic(
        base_url=GATEWAY, api_key="sk-not-the-key", max_retries=0, timeout=30
    )
    message = other.messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": prompt(step)}]
    )
    return {"unexpected_answer": message.model_dump()}


run(
    {
        "messages": [
            messages_create,
            messages_system_tool,
            messages_tool_result,
            messages_image,
            messages_stream_helper,
            messages_stream_tool,
            messages_stream_events,
            count_tokens,
        ],
        "errors": [unknown_model, wrong_key],
    }
)
