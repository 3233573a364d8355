"""Who sent the body, and how much of it we are willing to read: HMAC-SHA256 and a bounded body read.

The sender signs the exact bytes it posts: `X-Signature: sha256=<hex of HMAC-SHA256(secret, raw
body)>` (the form GitHub uses for its webhooks). The server recomputes it over the raw bytes
before any parsing, and compares in constant time (`hmac.compare_digest`), so a forger learns
nothing from how long a refusal takes.

The body is read before it is verified, so its size is bounded first: a declared
`Content-Length` above the limit is refused without reading a byte, and the bytes actually
received are counted as they stream in (a chunked body declares no length, and a declared one
may lie), stopping at the first byte past the limit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator

HEADER = "X-Signature"
PREFIX = "sha256="
_FORM = re.compile(r"sha256=([0-9a-fA-F]{64})")


class SignatureError(ValueError):
    """The signature is missing, malformed or does not match the body (the message says which)."""


class BodyTooLarge(ValueError):
    """The body is, or declares itself, larger than the limit."""


def sign(secret: str | bytes, body: bytes) -> str:
    """The header value for `body`: `sha256=` + the hex HMAC-SHA256 of it under `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None) -> str:
    """The signature's hex digest (lower case) when `header` signs `body`; else SignatureError."""
    if header is None or not header.strip():
        raise SignatureError(f"missing {HEADER} header (expected {PREFIX}<hex HMAC-SHA256 of the raw body>)")
    m = _FORM.fullmatch(header.strip())
    if m is None:
        raise SignatureError(f"malformed {HEADER} header: expected {PREFIX} followed by 64 hex digits")
    given = bytes.fromhex(m.group(1))
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError(f"{HEADER} does not match the body (wrong secret, or the body was changed)")
    return given.hex()


def declared_length(value: str | None, limit: int) -> int | None:
    """The Content-Length header as a number (None when absent); BodyTooLarge above `limit`.

    A header that is not a plain non-negative integer is refused as too large as well: the server
    cannot know how much it would have to read.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise BodyTooLarge(f"Content-Length {value[:40]!r} is not a byte count")
    n = int(text)
    if n > limit:
        raise BodyTooLarge(f"the body declares {n} bytes; the limit is {limit}")
    return n


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body from a stream of chunks, refusing (BodyTooLarge) at the first byte past `limit`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
