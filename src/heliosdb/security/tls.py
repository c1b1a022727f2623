"""The server-side TLS context every TCP listener uses when the node serves TLS (tls.*)."""

from __future__ import annotations

import ssl

from heliosdb.settings import TlsSettings

_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}


def server_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """None when TLS is off (or no certificate is configured)."""
    if not tls.enabled or tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_ca_file is not None:
        context.load_verify_locations(str(tls.client_ca_file))
    context.verify_mode = _VERIFY[tls.client_auth]
    return context
