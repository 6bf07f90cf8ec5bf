"""Drives tollgate's /v1/responses with the official `openai` Python SDK and prints what it saw as JSON.

Run by tests/responses.rs with OPENAI_BASE_URL, OPENAI_API_KEY, and the two model names in
TG_NATIVE_MODEL (an upstream that speaks the Responses API) and TG_TRANSLATED_MODEL (an Anthropic
upstream the gateway translates for). `MOCK[...]` directives steer the mock upstream.
"""

import json
import os
import sys

from openai import OpenAI

# base_url and api_key come from the environment; a hung call fails fast instead of retrying.
client = OpenAI(timeout=15.0, max_retries=0)
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look something up.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    "strict": False,
}


def step(name):
    print(f"step: {name}", file=sys.stderr, flush=True)


def whole(model, rid, text, **kw):
    step(rid)
    r = client.responses.create(model=model, input=text, extra_headers={"x-request-id": rid}, **kw)
    out = {"id": r.id, "status": r.status, "text": r.output_text, "types": [o.type for o in r.output]}
    if r.usage is not None:
        out["usage"] = {
            "input": r.usage.input_tokens,
            "cached": r.usage.input_tokens_details.cached_tokens,
            "output": r.usage.output_tokens,
            "reasoning": r.usage.output_tokens_details.reasoning_tokens,
        }
    calls = [o for o in r.output if o.type == "function_call"]
    if calls:
        out["call"] = {"name": calls[0].name, "arguments": json.loads(calls[0].arguments), "call_id": calls[0].call_id}
    return out


def streamed(model, rid, text, **kw):
    step(rid)
    types, deltas, args, final = [], [], [], None
    with client.responses.create(model=model, input=text, stream=True, extra_headers={"x-request-id": rid}, **kw) as s:
        for ev in s:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
            elif ev.type == "response.function_call_arguments.delta":
                args.append(ev.delta)
            elif ev.type in ("response.completed", "response.incomplete", "response.failed"):
                final = ev.response
    out = {"types": types, "text": "".join(deltas), "args": "".join(args)}
    if final is not None:
        out["status"] = final.status
        out["final_text"] = final.output_text
        if final.usage is not None:
            out["usage"] = {"input": final.usage.input_tokens, "output": final.usage.output_tokens}
    return out


def main():
    native = os.environ["TG_NATIVE_MODEL"]
    translated = os.environ["TG_TRANSLATED_MODEL"]
    res = {}
    res["native_whole"] = whole(native, "py-native-whole", "hello MOCK[tokens=4,prompt_tokens=100,cached=40,reasoning=3,web_search=2]")
    res["native_stream"] = streamed(native, "py-native-stream", "hello MOCK[tokens=3,prompt_tokens=20]")
    res["native_tool"] = whole(native, "py-native-tool", "find MOCK[call,tokens=2,prompt_tokens=30]", tools=[TOOL])
    res["native_tool_stream"] = streamed(native, "py-native-tool-stream", "find MOCK[call,tokens=2]", tools=[TOOL])
    res["native_follow"] = whole(
        native, "py-native-follow", "and then MOCK[tokens=1,prompt_tokens=10]", previous_response_id=res["native_whole"]["id"]
    )
    res["translated_whole"] = whole(
        translated, "py-anthropic-whole", "hello MOCK[tokens=5,prompt_tokens=50,cached=10]", instructions="be brief", max_output_tokens=64
    )
    res["translated_stream"] = streamed(translated, "py-anthropic-stream", "hello MOCK[tokens=3,prompt_tokens=20]")
    res["translated_tool"] = whole(translated, "py-anthropic-tool", "find MOCK[call,tokens=2,prompt_tokens=30]", tools=[TOOL])
    res["translated_tool_stream"] = streamed(translated, "py-anthropic-tool-stream", "find MOCK[call,tokens=2]", tools=[TOOL])
    try:
        client.responses.create(model=translated, input="x", tools=[{"type": "web_search"}], extra_headers={"x-request-id": "py-anthropic-refused"})
        res["refused"] = None
    except Exception as e:  # openai.BadRequestError
        res["refused"] = {"status": getattr(e, "status_code", None), "body": getattr(e, "body", None)}
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main()
