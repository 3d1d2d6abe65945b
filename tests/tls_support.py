"""TLS files for the security tests: a trustme authority's certificate, and a client's, on disk."""

from __future__ import annotations

from pathlib import Path

import trustme

__all__ = ["tls_files"]


def tls_files(authority: trustme.CA, where: Path, *, client: bool) -> dict[str, str]:
    """The worker's ``ssl_*`` settings (file paths under ``where``): ``ssl_cafile``, ``authority``'s
    certificate; with ``client``, ``ssl_certfile`` and ``ssl_keyfile`` of a client certificate it
    issues (``ecs-state-worker``)."""
    ca = where / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    files = {"ssl_cafile": str(ca)}
    if client:
        leaf = authority.issue_cert("ecs-state-worker")
        cert, key = where / "client.pem", where / "client.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        files |= {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    return files
