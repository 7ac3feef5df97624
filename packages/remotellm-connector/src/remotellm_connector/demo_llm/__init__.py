"""The demo LLM: one fake OpenAI-compatible upstream for the demo, the tests and the benchmark.

It answers like vLLM's or llama.cpp's ``/v1`` — ``GET /v1/models`` (with ``max_model_len``),
``GET /v1/models/{id}``, ``POST /v1/chat/completions``, ``/v1/completions`` (streaming SSE or
not, usage chunk on ``stream_options.include_usage``, tool calls when ``tools`` are given),
``/v1/embeddings``, the Responses API (``/v1/responses``, ``responses_api``) and Anthropic's
Messages API (``/v1/messages`` and ``/count_tokens``, ``messages_api``) — with deterministic
content (``content``), controllable cadence, injectable faults (``x_*`` body fields, see
``request``) and scripted replies for driving agents (``script``). ``GET /_demo/stats`` (and
``app[DEMO_STATS]`` in-process) tell what the server saw.

    async with serve_demo_llm(DemoLLMConfig(tokens=3)) as llm:
        client = AsyncOpenAI(base_url=llm.base_url, api_key="none")
"""

from remotellm_connector.demo_llm.app import (
    MAX_BODY_BYTES,
    DemoLLMServer,
    make_app,
    run_demo_llm,
    serve_demo_llm,
)
from remotellm_connector.demo_llm.cli import demo_llm_command
from remotellm_connector.demo_llm.config import (
    DEMO_CONFIG,
    DEMO_STATS,
    DemoLLMConfig,
    DemoStats,
    Disconnect,
)
from remotellm_connector.demo_llm.content import (
    embedding_vector,
    expected_text,
    expected_tokens,
    expected_tool_arguments,
    stream_tag,
)

__all__ = [
    "DEMO_CONFIG",
    "DEMO_STATS",
    "MAX_BODY_BYTES",
    "DemoLLMConfig",
    "DemoLLMServer",
    "DemoStats",
    "Disconnect",
    "demo_llm_command",
    "embedding_vector",
    "expected_text",
    "expected_tokens",
    "expected_tool_arguments",
    "make_app",
    "run_demo_llm",
    "serve_demo_llm",
    "stream_tag",
]
