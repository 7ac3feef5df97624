"""remotellm-connector: relays a local OpenAI-compatible LLM server to a remotellm broker."""

from remotellm_connector.__about__ import __version__

__all__ = ["__version__"]
