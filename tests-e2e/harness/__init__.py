"""Helpers for the end-to-end suite: upstreams, the relay stack, clients.

Plain modules (no pytest imports outside ``conftest.py``), so they can be read, reused by the
recording script, and type-checked on their own.
"""
