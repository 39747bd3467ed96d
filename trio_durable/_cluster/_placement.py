"""Where each object lives: shards, members, and who should own which shard.

Object IDs are spread over :data:`SHARD_COUNT` shards by the first byte of
their 64-hex form (uniform: an ID's body is random or a keyed hash). Each
shard is owned by at most one member (a worker process) at a time, under a
lease with an epoch (see ``_leases.py``). Which member *should* own a shard
is decided by rendezvous hashing over the live members' *places* (a node
and a slot on it), so a worker that restarts in the same place gets the
same shards back, and adding or removing a worker or a node moves only the
shards it gains or loses. When two live members share a place (a rolling
restart: the successor runs beside its predecessor), the newer one is
preferred, so the old one hands its shards over.

Everything here is pure computation: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import attrs

from .._ids import SHARD_COUNT, shard_of

__all__ = ["SHARD_COUNT", "Member", "desired_owners", "shard_of"]


@attrs.frozen
class Member:
    """One worker process of a deployment, as the lease table records it.

    Attributes:
        member_id: Unique per process incarnation.
        slot: The worker's place on its node (0 to N-1); stable across
            restarts of that worker.
        address: Where its Unix-socket link listens (reached from its node).
        started: When it joined (epoch seconds), to prefer the newest of a place.
        heartbeat: When it last renewed its membership (epoch seconds).
        node: The node (one server of a deployment, usually one machine)
            it runs on; ``""`` when the deployment is one node.
        link: ``host:port`` where its TCP link listens, for members of other
            nodes; ``""`` when it has none.
    """

    member_id: str
    slot: int
    address: str
    started: float
    heartbeat: float = 0.0
    node: str = ""
    link: str = ""

    @property
    def place(self) -> tuple[str, int]:
        """``(node, slot)``: what rendezvous hashing places shards on."""
        return (self.node, self.slot)


def _weight(place: tuple[str, int], shard: int) -> int:
    node, slot = place
    key = f"{slot}/{shard}" if not node else f"{node}\0{slot}/{shard}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def desired_owners(members: Iterable[Member]) -> list[str | None]:
    """For each shard, the member that should own it (``None`` when none is live).

    Rendezvous hashing over places; among members of one place, the newest.
    """
    newest: dict[tuple[str, int], Member] = {}
    for member in members:
        current = newest.get(member.place)
        if current is None or (member.started, member.member_id) > (
            current.started,
            current.member_id,
        ):
            newest[member.place] = member
    candidates: Sequence[Member] = sorted(newest.values(), key=lambda m: m.place)
    owners: list[str | None] = []
    for shard in range(SHARD_COUNT):
        best: Member | None = None
        best_weight = -1
        for member in candidates:
            weight = _weight(member.place, shard)
            if weight > best_weight:
                best, best_weight = member, weight
        owners.append(best.member_id if best is not None else None)
    return owners
