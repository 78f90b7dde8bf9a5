"""A tenant's webhook signing secret: its format and how a new one is made.

A basic module rather than part of shared.webhooks.signing (which uses and re-exports
it) because a tenant is given its secret when it is created, by shared.tenants, a basic
module that may not import webhooks.
"""

from __future__ import annotations

import base64
import secrets as _secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 24 random bytes.

    The prefix is the Standard Webhooks convention, which receivers' libraries strip
    before decoding; 24 bytes (192 bits) from the OS CSPRNG is well beyond guessing.
    """
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")
