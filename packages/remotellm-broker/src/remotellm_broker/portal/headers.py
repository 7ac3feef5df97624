"""The headers every portal page carries, in a module of its own so the "portal off" page
can send them without importing Jinja2 (see ``offpage.py``).

Everything a page needs is inline (CSS and the copy-button script), so the pages work behind
any proxy and load nothing from elsewhere. The Content-Security-Policy allows exactly that:
inline style and script only with this response's nonce, no other origin, forms only to the
broker itself, no framing. Pages are ``no-store``: one of them shows an API key.
"""

from __future__ import annotations

__all__ = ["security_headers"]


def security_headers(nonce: str) -> dict[str, str]:
    csp = (
        "default-src 'none'; "
        f"style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Referrer-Policy": "same-origin",  # no-referrer would make POSTs carry "Origin: null"
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
