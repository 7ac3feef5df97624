"""A real llama.cpp server with a tiny random-weight model, for end-to-end tests.

See README.md in this folder. Stdlib only, so importing it costs nothing.
"""

from .compare import normalized
from .server import LlamaServer, LlamaServerError, start_llama_server

__all__ = ["LlamaServer", "LlamaServerError", "normalized", "start_llama_server"]
