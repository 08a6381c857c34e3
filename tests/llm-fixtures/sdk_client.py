"""Drives an LLM endpoint with the official OpenAI / Anthropic Python SDKs.

    python sdk_client.py --api chat|responses|messages --base-url URL \
        --api-key KEY --model NAME [--stream] [--max-retries 0]
    python sdk_client.py --batch   (one such command line per stdin line, as a JSON array)

Prints one JSON line on stdout:
    {"text", "streamed_text", "tool_calls", "stop", "usage", "error"}
An exception raised by the SDK is reported in "error" (exit status 0); only a
bad command line exits non-zero.
"""

import argparse
import json
import sys

import anthropic
import openai

PROMPT = "please check"
TIMEOUT = 30.0

SCHEMAS = {
    "run_shell": (
        "Run a shell command and return its output.",
        {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command line to run."}},
            "required": ["command"],
            "additionalProperties": False,
        },
    ),
    "read_file": (
        "Read a text file and return its contents.",
        {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Path of the file to read."}},
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
}

CHAT_TOOLS = [
    {"type": "function", "function": {"name": n, "description": d, "parameters": p}}
    for n, (d, p) in SCHEMAS.items()
]
RESPONSES_TOOLS = [
    {"type": "function", "name": n, "description": d, "parameters": p, "strict": False}
    for n, (d, p) in SCHEMAS.items()
]
MESSAGES_TOOLS = [{"name": n, "description": d, "input_schema": p} for n, (d, p) in SCHEMAS.items()]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", required=True, choices=["chat", "responses", "messages", "count_tokens"])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--max-retries", type=int, default=0, choices=[0], help="always 0: a refusal is never retried")
    return ap.parse_args(argv)


def parse_arguments(raw):
    """Tool arguments as a JSON object; the raw string if it is not valid JSON."""
    if isinstance(raw, (dict, list)):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def result(text=None, streamed=None, tool_calls=None, stop=None, usage=None, error=None):
    return {
        "text": text,
        "streamed_text": streamed,
        "tool_calls": tool_calls,
        "stop": stop,
        "usage": usage,
        "error": error,
    }


def run_chat(args):
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=TIMEOUT)
    params = dict(model=args.model, messages=[{"role": "user", "content": PROMPT}], tools=CHAT_TOOLS)
    streamed = None
    if args.stream:
        streamed = ""
        with client.chat.completions.stream(stream_options={"include_usage": True}, **params) as stream:
            for event in stream:
                if event.type == "content.delta":
                    streamed += event.delta
            completion = stream.get_final_completion()
    else:
        completion = client.chat.completions.create(**params)

    text, calls, stop = "", [], None
    for choice in completion.choices:
        text += choice.message.content or ""
        stop = choice.finish_reason
        for call in choice.message.tool_calls or []:
            calls.append({"id": call.id, "name": call.function.name, "arguments": parse_arguments(call.function.arguments)})
    usage = None
    if completion.usage is not None:
        usage = {"input_tokens": completion.usage.prompt_tokens, "output_tokens": completion.usage.completion_tokens}
    return result(text, streamed, calls, stop, usage)


def run_responses(args):
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=TIMEOUT)
    params = dict(model=args.model, input=PROMPT, tools=RESPONSES_TOOLS)
    streamed = None
    if args.stream:
        streamed = ""
        with client.responses.stream(**params) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    streamed += event.delta
                elif event.type == "error":
                    # The helper passes an `error` event through without raising (and
                    # get_final_response() would only say that response.completed never
                    # came), so surface it as the SDK's own in-stream error class.
                    raise openai.APIError(event.message, stream._response.request, body=event.to_dict())
                elif event.type == "response.failed":
                    error = event.response.error
                    message = error.message if error is not None else "response.failed"
                    body = error.to_dict() if error is not None else None
                    raise openai.APIError(message, stream._response.request, body=body)
            response = stream.get_final_response()
    else:
        response = client.responses.create(**params)

    text, calls = "", []
    for item in response.output or []:
        if item.type == "message":
            for part in item.content or []:
                if part.type == "output_text":
                    text += part.text
        elif item.type == "function_call":
            calls.append({"id": item.call_id, "name": item.name, "arguments": parse_arguments(item.arguments)})
    usage = None
    if response.usage is not None:
        usage = {"input_tokens": response.usage.input_tokens, "output_tokens": response.usage.output_tokens}
    return result(text, streamed, calls, response.status, usage)


def run_messages(args):
    client = anthropic.Anthropic(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=TIMEOUT)
    params = dict(model=args.model, max_tokens=1024, messages=[{"role": "user", "content": PROMPT}], tools=MESSAGES_TOOLS)
    streamed = None
    if args.stream:
        streamed = ""
        with client.messages.stream(**params) as stream:
            for event in stream:
                if event.type == "text":
                    streamed += event.text
            message = stream.get_final_message()
    else:
        message = client.messages.create(**params)

    text, calls = "", []
    for block in message.content:
        if block.type == "text":
            text += block.text
        elif block.type == "tool_use":
            calls.append({"id": block.id, "name": block.name, "arguments": parse_arguments(block.input)})
    usage = None
    if message.usage is not None:
        usage = {"input_tokens": message.usage.input_tokens, "output_tokens": message.usage.output_tokens}
    return result(text, streamed, calls, message.stop_reason, usage)


def run_count_tokens(args):
    client = anthropic.Anthropic(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=TIMEOUT)
    count = client.messages.count_tokens(
        model=args.model, messages=[{"role": "user", "content": PROMPT}], tools=MESSAGES_TOOLS
    )
    return result(usage={"input_tokens": count.input_tokens, "output_tokens": 0})


def describe(exc):
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    try:
        json.dumps(body)
    except (TypeError, ValueError):
        body = repr(body)
    return {"class": type(exc).__name__, "status": status, "message": str(exc), "body": body}


def run_one(args):
    run = {
        "chat": run_chat,
        "responses": run_responses,
        "messages": run_messages,
        "count_tokens": run_count_tokens,
    }[args.api]
    try:
        return run(args)
    except Exception as exc:  # noqa: BLE001 - every SDK failure is reported, not raised
        return result(error=describe(exc))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--batch"]:
        # One run per stdin line (its command line as a JSON array), one JSON line out each:
        # the SDKs take seconds to import, so a test pays for that once.
        for line in sys.stdin:
            if line.strip():
                out = run_one(parse_args(json.loads(line)))
                sys.stdout.write(json.dumps(out) + "\n")
                sys.stdout.flush()
        return 0
    sys.stdout.write(json.dumps(run_one(parse_args(argv))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
