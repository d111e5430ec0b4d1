"""Who may open an association, and how many each may hold: the calling-AE allow-list and fair slots.

AE titles travel in clear and anyone who reaches the port can send any of them, so an allow-list entry
bound to no host is open to everyone: a caller using such a title could hold every association slot
(reconnecting after each idle timeout) and keep the PACS out for good. Hence:

* an entry with `hosts` admits its title only from those addresses ("bound"); one without admits it from
  anywhere ("unbound"), and so do `allow_any_calling_ae` and the demo titles (`demo_calling_aes`, dcmtk's
  and the synthetic sender's default), which are further admitted from loopback addresses only unless the
  admin lists them under `allowed_calling_aes`;
* unbound callers share at most `max_associations - reserved_for_bound_aes` slots, so a bound PACS always
  finds one free while they hold theirs; one calling AE title holds at most `max_associations_per_ae`, one
  source address at most `max_connections_per_host`.

The counts must cover every receiving process, so they are taken where all associations are seen (the gate's
hand-over in `receiving_processes`, or this process's own associations) and passed in as `Held`. `refusal`
is a function of the request and those counts alone, so the gate knows at hand-over which associations its
receiving process is about to reject, and does not count them against anyone's slots.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dicom_node.config import NodeSettings
from dicom_node.preflight import is_loopback

# A-ASSOCIATE-RQ: 6-byte header, protocol version, reserved, called AE title, calling AE title (PS3.8 9.3.2)
_CALLED_AE = slice(10, 26)
_CALLING_AE = slice(26, 42)


@dataclass(frozen=True)
class Admission:
    """The allow-list's answer for one calling AE title from one source address."""

    allowed: bool
    bound: bool = False
    """Admitted by an entry naming this source among its hosts (entitled to the reserved slots)."""
    reason: str = ""
    """Why not, when not allowed."""


@dataclass(frozen=True)
class Held:
    """Associations open before a new one: from its source, under its calling AE title, of callers bound to no
    host, and in all."""

    from_peer: int
    with_ae: int
    unbound: int
    in_all: int

    @classmethod
    def among(cls, holders: Iterable[tuple[str, str, bool]], peer: str, calling: str) -> Held:
        """The counts for a new association from `peer` as `calling`, over the open ones given as (source,
        calling AE title, bound to its host)."""
        held = list(holders)
        return cls(from_peer=sum(1 for source, _, _ in held if source == peer),
                   with_ae=sum(1 for _, title, _ in held if title == calling),
                   unbound=sum(1 for _, _, bound in held if not bound), in_all=len(held))


@dataclass(frozen=True)
class Refusal:
    """Why an association request is rejected: by the called or the calling AE title, or a full limit."""

    kind: Literal["called-ae", "calling-ae", "limit"]
    reason: str


def ae_titles(request: bytes) -> tuple[str, str]:
    """(calling, called) AE title of a complete A-ASSOCIATE-RQ (the gate has checked that it decodes)."""
    return (request[_CALLING_AE].decode("ascii", "replace").strip(),
            request[_CALLED_AE].decode("ascii", "replace").strip())


def refusal(node: NodeSettings, calling: str, called: str, peer: str, held: Held) -> Refusal | None:
    """Whether the node rejects this association request, and why (None: it is accepted)."""
    if node.check_called_ae and called != node.ae_title.strip():
        return Refusal("called-ae", f"called AE title {called!r} is not {node.ae_title!r}")
    admission = admit(node, calling, peer)
    if not admission.allowed:
        return Refusal("calling-ae", admission.reason)
    full = slot_refusal(node, calling, peer, admission, held)
    return Refusal("limit", full) if full is not None else None


def host_allowed(peer: str, hosts: list[str]) -> bool:
    """Whether `peer` is one of `hosts` (addresses or networks such as 10.0.0.0/24)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in hosts:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if entry == peer:
                return True
    return False


def admit(node: NodeSettings, calling: str, peer: str) -> Admission:
    """May `calling` associate from `peer`, and does it count as bound to its host?"""
    if node.allow_any_calling_ae:
        return Admission(True)
    entries = [entry for entry in node.allowed_calling_aes if entry.ae_title.strip() == calling]
    if any(entry.hosts and host_allowed(peer, entry.hosts) for entry in entries):
        return Admission(True, bound=True)
    if any(not entry.hosts for entry in entries):
        return Admission(True)
    if entries:
        return Admission(False, reason=f"calling AE title {calling!r} not allowed from {peer}")
    if calling in (title.strip() for title in node.demo_calling_aes):
        if is_loopback(peer):
            return Admission(True)
        return Admission(False, reason=(
            f"calling AE title {calling!r} is a demo title (node.demo_calling_aes), accepted from loopback "
            f"addresses only, not from {peer}: list it under allowed_calling_aes to accept it from there"))
    return Admission(False, reason=f"calling AE title {calling!r} not in allowed_calling_aes")


def slot_refusal(node: NodeSettings, calling: str, peer: str, admission: Admission, held: Held) -> str | None:
    """Why an admitted caller gets no association now (all slots it may take are held), or None."""
    if held.from_peer >= node.max_connections_per_host:
        return (f"{peer} already holds {held.from_peer} associations "
                f"(max_connections_per_host {node.max_connections_per_host})")
    if held.with_ae >= node.max_associations_per_ae:
        return (f"calling AE title {calling!r} already holds {held.with_ae} associations "
                f"(max_associations_per_ae {node.max_associations_per_ae})")
    if not admission.bound and node.reserves_for_bound_aes():
        share = node.max_associations - node.reserved_for_bound_aes
        if held.unbound >= share:
            return (f"callers bound to no host already hold {held.unbound} associations, their share: "
                    f"the other {node.reserved_for_bound_aes} are kept for allowed_calling_aes entries with "
                    "hosts (reserved_for_bound_aes)")
    if held.in_all >= node.max_associations:
        return f"max_associations ({node.max_associations}) reached"
    return None


def unbound_exposure(node: NodeSettings) -> str | None:
    """A warning when calling AE titles bound to no host are allowed on a port the network reaches."""
    if is_loopback(node.bind):
        return None
    if node.allow_any_calling_ae:
        return (f"node.allow_any_calling_ae accepts every calling AE title from every host that reaches "
                f"{node.bind}:{node.port}: turn it off and list the senders under node.allowed_calling_aes")
    unbound = [entry.ae_title for entry in node.allowed_calling_aes if not entry.hosts]
    if not unbound:
        return None
    return (f"calling AE title(s) {', '.join(unbound)} allowed from any host on {node.bind}:{node.port}: "
            "AE titles are not secret, so any host that reaches the port may send as them and hold their "
            "share of the associations; bind each to its sender's addresses (node.allowed_calling_aes[].hosts)")
