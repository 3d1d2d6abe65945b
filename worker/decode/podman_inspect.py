"""What a Podman event's inspect data gives that events alone cannot: the image digest and the
port bindings.

With ``events_container_create_inspect_data = true`` in containers.conf, Podman adds the
container's ``podman inspect`` document, as a JSON string, to its ``create`` events
(``ContainerInspectData``; ``libpod/events.go``, ``newContainerEventWithInspectData``). The ECS
agent reads the same two facts from inspect: the resolved image digest (``ImageDigest``) and the
published ports (``NetworkSettings.Ports``: ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``;
Podman assigns random host ports when the container is created, so they are known then). Only
TCP and UDP ports with a numeric host port are reported; an unbound ``HostIp`` is ``0.0.0.0``, as
the agent reports it. Nothing else is read, and nothing is made up: without inspect data both stay
unknown.
"""

from __future__ import annotations

import msgspec

from schemas.ecs import NetworkBinding, TransportProtocol
from worker.decode.event_builder import image_digest

__all__ = ["InspectFacts", "inspect_facts"]

_PROTOCOLS: dict[str, TransportProtocol] = {"tcp": "tcp", "udp": "udp"}
_UNBOUND_IP = "0.0.0.0"
"""The address the agent reports for a port bound on every interface."""

InspectFacts = tuple["str | None", "tuple[NetworkBinding, ...] | None"]
"""(image digest, network bindings): None for what the inspect data does not give."""


class _HostPort(msgspec.Struct, kw_only=True, gc=False):
    HostIp: str = ""
    HostPort: str = ""


class _NetworkSettings(msgspec.Struct, kw_only=True, gc=False):
    Ports: dict[str, list[_HostPort] | None] | None = None


class _Inspect(msgspec.Struct, kw_only=True, gc=False):
    ImageDigest: str = ""
    NetworkSettings: _NetworkSettings | None = None


_decoder = msgspec.json.Decoder(_Inspect)


def _is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def inspect_facts(inspect_json: str) -> InspectFacts:
    """The image digest and the port bindings of ``ContainerInspectData``.

    Raises msgspec's errors when it is not a JSON object of inspect's shape (a bad item).
    """
    data = _decoder.decode(inspect_json)
    digest = image_digest("@" + data.ImageDigest) if data.ImageDigest else None
    ports = data.NetworkSettings.Ports if data.NetworkSettings else None
    bindings: list[NetworkBinding] = []
    for key, hosts in sorted((ports or {}).items()):
        port, _, protocol = key.partition("/")
        transport = _PROTOCOLS.get(protocol or "tcp")
        if transport is None or not _is_number(port):
            continue
        for host in hosts or ():
            if _is_number(host.HostPort):
                bindings.append(
                    NetworkBinding(
                        bindIP=host.HostIp or _UNBOUND_IP,
                        containerPort=int(port),
                        hostPort=int(host.HostPort),
                        protocol=transport,
                    )
                )
    return digest, tuple(bindings) or None
