"""The pinned coding-agent CLIs of the clients suite (see install.py)."""
