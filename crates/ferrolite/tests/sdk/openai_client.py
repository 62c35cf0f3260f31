"""The official `openai` SDK against the gateway: chat completions and the Responses API.

Usage: FERROLITE_GATEWAY=... FERROLITE_KEY=... FERROLITE_MODEL=... python openai_client.py SUITE
with SUITE one of `chat`, `responses`, `errors`, `conversation` (steps.py says what it prints).
"""

import openai

from steps import KEY, GATEWAY, MODEL, PNG_BASE64, WEATHER_PARAMETERS, prompt, run

client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=KEY, max_retries=0, timeout=30)


def usage_of(usage):
    return None if usage is None else usage.model_dump()


def chat(step):
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt(step)}]
    )
    choice = answer.choices[0]
    return {
        "model": answer.model,
        "text": choice.message.content,
        "finish_reason": choice.finish_reason,
        "usage": usage_of(answer.usage),
    }


def chat_stream(step):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt(step)}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish_reason, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish_reason = choice.finish_reason or finish_reason
        if chunk.usage is not None:
            usage = usage_of(chunk.usage)
    return {"text": text, "finish_reason": finish_reason, "usage": usage, "chunks": chunks}


def response_fields(response):
    return {
        "id": response.id,
        "object": response.object,
        "status": response.status,
        "model": response.model,
        "text": response.output_text,
        "output": [item.model_dump() for item in response.output],
        "usage": usage_of(response.usage),
    }


def responses_create(step):
    response = client.responses.create(
        model=MODEL,
        input=prompt(step),
        instructions="Answer briefly.",
        temperature=0.5,
        max_output_tokens=50,
    )
    return response_fields(response)


def responses_stream(step):
    stream = client.responses.create(
        model=MODEL, input=prompt(step), instructions="Answer briefly.", stream=True
    )
    types, deltas, completed = [], [], None
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            completed = response_fields(event.response)
    return {"types": types, "deltas": deltas, "completed": completed}


def responses_tool(step):
    response = client.responses.create(
        model=MODEL,
        input=prompt(step),
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_PARAMETERS,
            }
        ],
    )
    return response_fields(response)


def responses_stream_tool(step):
    with client.responses.stream(
        model=MODEL,
        input=prompt(step),
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_PARAMETERS,
            }
        ],
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    return {"types": types, "final": response_fields(final)}


def responses_tool_output(step):
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": prompt(step)},
            {
                "type": "function_call",
                "call_id": "call_weather",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_weather", "output": "Sunny"},
        ],
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_PARAMETERS,
            }
        ],
    )
    return response_fields(response)


def responses_image(step):
    response = client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_BASE64}"},
                    {"type": "input_text", "text": prompt(step)},
                ],
            }
        ],
    )
    return response_fields(response)


def responses_helper(step):
    deltas = []
    with client.responses.stream(
        model=MODEL, input=prompt(step), instructions="Answer briefly."
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    return {"deltas": deltas, "final": response_fields(final)}


def responses_unknown_model(step):
    response = client.responses.create(model="no-such-model", input=prompt(step))
    return {"unexpected_answer": response.model_dump()}


def responses_previous_response_id(step):
    response = client.responses.create(
        model=MODEL, input=prompt(step), previous_response_id="resp_earlier"
    )
    return response_fields(response)


def chat_unknown_model(step):
    answer = client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": prompt(step)}]
    )
    return {"unexpected_answer": answer.model_dump()}


run(
    {
        "chat": [chat, chat_stream],
        "responses": [
            responses_create,
            responses_stream,
            responses_tool,
            responses_stream_tool,
            responses_tool_output,
            responses_image,
            responses_helper,
        ],
        "errors": [chat_unknown_model, responses_unknown_model],
        "conversation": [responses_previous_response_id],
    }
)
