"""remotellm-broker: an OpenAI-compatible API served by remotellm connectors."""

from remotellm_broker.__about__ import __version__

__all__ = ["__version__"]
