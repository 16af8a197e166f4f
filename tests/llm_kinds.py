"""How real LLM servers behave beyond the wire format, for `LLMTestServer` (tests/llm_server.py).

Measured on these machines with Gemma 3 270M (/work/shared/llm/README.md):

- **llama-cpp-python** (``kind="llama-cpp-python"``): serves one request at a time and, with its default
  ``--interrupt_requests``, ends the stream that is running as soon as any other request arrives, with
  ``data: [DONE]`` and no ``finish_reason`` (the other request is served after it). A streamed request longer
  than its window (``--n_ctx``, default 2048) gets **200 with an empty body**; the same not streamed, a 400
  ``context_length_exceeded`` naming the window. No ``/props``; ``POST /extras/tokenize`` ``{"input"}``,
  listed in its ``/openapi.json``. It sends no ``usage`` in a stream, even when asked.
- **llama.cpp's llama-server** (``kind="llama.cpp"``): several requests at once, never cuts one;
  ``GET /props`` (``default_generation_settings.n_ctx`` per slot, ``total_slots``); ``POST /tokenize``
  ``{"content"}``; an over-long request (streamed or not) gets 400 ``exceed_context_size_error`` with
  ``n_prompt_tokens`` and ``n_ctx``; ``usage`` in the last chunk when asked, ``timings`` always.
- **Ollama** (the Ollama wire): queues requests, never cuts one; its window is ``options.num_ctx`` (default
  ``ollama_default_ctx``), and a longer prompt is cut from the front **silently** (counted here in
  ``srv.dropped_tokens``); ``/api/show`` has ``model_info["<arch>.context_length"]``; the final line has
  ``prompt_eval_count``, ``eval_count`` and durations.
- Any other OpenAI-compatible server (``kind="generic"``, the default): no window unless ``srv.window`` is
  set (then a 400 naming it, as OpenAI and vLLM do), ``usage`` in the last chunk when asked.

Tokens are counted the same way by ``/tokenize`` and by the window check: one per word or punctuation
mark (``count_tokens``), plus ``PER_MESSAGE`` per chat message.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

PER_MESSAGE = 4
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text or ""))


def prompt_tokens(body: dict) -> int:
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    return sum(count_tokens(m.get("content") or "") + PER_MESSAGE for m in messages if isinstance(m, dict))


def configure(srv: Any, kind: str) -> None:
    """Set the defaults of a kind of server on `srv` (each attribute may be changed afterwards)."""
    srv.kind = kind
    srv.interrupt = kind == "llama-cpp-python"
    srv.window = {"llama-cpp-python": 2048, "llama.cpp": 2048}.get(kind)
    srv.slots = 2 if kind == "llama.cpp" else 1
    srv.trained_context = 32768
    srv.ollama_default_ctx = 2048
    srv.dropped_tokens = 0
    srv.prompt_tokens = []  # per chat request, as this server counted it
    srv.interrupted = 0
    srv.running = set()  # events that end the streams running now (interrupt)


async def interrupt_running(srv: Any) -> None:
    """A request arrived: on a server that interrupts, every running stream ends now, and the request is
    served once they have."""
    if not srv.interrupt or not srv.running:
        return
    ended = [event for event in srv.running]
    for event in ended:
        event.set()
        srv.interrupted += 1
    for _ in range(200):  # the streams notice between two frames
        if not any(event in srv.running for event in ended):
            return
        await asyncio.sleep(0.005)


async def route(srv: Any, req: Any, send_json: Any, writer: Any) -> bool:
    """The kind's own endpoints; True when it answered the request."""
    body = req.json if isinstance(req.json, dict) else {}
    if srv.kind == "llama.cpp" and (req.method, req.path) == ("GET", "/props"):
        settings = {"n_ctx": srv.window, "temperature": 0.8}
        await send_json(writer, 200, {"default_generation_settings": settings, "total_slots": srv.slots,
                                      "model_path": srv.models[0] if srv.models else ""})
    elif srv.kind == "llama.cpp" and (req.method, req.path) == ("POST", "/tokenize"):
        await send_json(writer, 200, {"tokens": list(range(count_tokens(str(body.get("content", "")))))})
    elif srv.kind == "llama-cpp-python" and (req.method, req.path) == ("POST", "/extras/tokenize"):
        await send_json(writer, 200, {"tokens": list(range(count_tokens(str(body.get("input", "")))))})
    elif srv.kind == "llama-cpp-python" and (req.method, req.path) == ("GET", "/openapi.json"):
        paths = {p: {} for p in ("/v1/chat/completions", "/v1/models", "/extras/tokenize", "/extras/detokenize")}
        await send_json(writer, 200, {"openapi": "3.1.0", "paths": paths})
    else:
        return False
    return True


def model_info(srv: Any) -> dict:
    return {"general.architecture": "gemma3", "gemma3.context_length": srv.trained_context}


def over_window(srv: Any, body: dict, openai: bool) -> tuple[int, Any] | None:
    """What the server answers instead of streaming a request longer than its window: (status, body) —
    status 200 with body None is an empty 200 —, or None to stream it. Ollama cuts the prompt silently."""
    tokens = prompt_tokens(body)
    srv.prompt_tokens.append(tokens)
    if not openai:
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        window = options.get("num_ctx") or srv.ollama_default_ctx
        srv.dropped_tokens += max(0, tokens - window)
        return None
    if srv.window is None or tokens < srv.window:  # (a max_tokens past the window only shortens the answer)
        return None
    if srv.kind == "llama-cpp-python":
        if body.get("stream"):
            return 200, None
        message = (f"This model's maximum context length is {srv.window} tokens. However, you requested "
                   f"{tokens} tokens ({tokens} in the messages, 0 in the completion).")
        return 400, {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                               "code": "context_length_exceeded"}}
    if srv.kind == "llama.cpp":
        return 400, {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                               "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": tokens,
                               "n_ctx": srv.window}}
    message = f"This model's maximum context length is {srv.window} tokens. However, you requested {tokens} tokens."
    return 400, {"error": {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}}


def openai_usage_chunk(srv: Any, body: dict, model: str, written: int) -> dict | None:
    """The chunk after the finish one: usage (when asked and the server sends it), llama.cpp's timings."""
    asked = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")
    if srv.kind == "llama-cpp-python" or not asked:
        return None
    read = srv.prompt_tokens[-1] if srv.prompt_tokens else 0
    chunk: dict = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [], "usage": {"prompt_tokens": read, "completion_tokens": written,
                                            "total_tokens": read + written}}
    if srv.kind == "llama.cpp":
        chunk["timings"] = {"prompt_n": read, "prompt_ms": 12.5, "predicted_n": written, "predicted_ms": 100.0,
                            "predicted_per_second": written * 10.0}
    return chunk


def ollama_final(srv: Any, written: int) -> dict:
    read = srv.prompt_tokens[-1] if srv.prompt_tokens else 0
    return {"prompt_eval_count": read, "prompt_eval_duration": 20_000_000, "eval_count": written,
            "eval_duration": 500_000_000, "load_duration": 1_000_000}
