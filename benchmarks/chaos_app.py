"""The app ``benchmarks/chaos.py`` serves on three nodes: objects that log every write.

Every object of the ``logs`` namespace is a :class:`Log`. Each write appends
one entry at the next sequence number, in one commit with the new sequence
number, and the entry says which activation wrote it: a random *nonce*
drawn when the activation was built, and the epoch of the object's shard in
the process that runs it (the fencing token its commits prove). From the
log alone, a checker can then see two activations of one object that were
live at once: their entries interleave, or two nonces share an epoch, or
an epoch goes down.

Routes (every answer is JSON):

* ``/w/NAME?c=CLIENT&n=N``: append one entry (an HTTP write); the answer
  ``{"seq", "nonce", "epoch", "pid"}`` is the acknowledgement;
* ``/ws/NAME``: a WebSocket to ``NAME``; each message ``{"c", "n"}``
  appends one entry and is answered with the same fields;
* ``/chain/NAME?period=P``: start an alarm chain (if not started): each
  alarm records when it fired and sets the next one ``P`` seconds later,
  recording when it is due, in one commit;
* ``/log/NAME``: the whole log, the chain's due and fired times.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

import attrs

import trio_durable as td
from trio_durable._ids import shard_of
from trio_durable._runtime import runtime_of

__all__ = ["Log", "app"]


def shard_epoch(ctx: td.ObjectContext) -> int:
    """The epoch at which this process holds the object's shard (-1: one process, or none).

    Read from the cluster member's fence (what every commit of the object
    proves to the database): introspection for this benchmark only.
    """
    member = runtime_of(ctx.namespace("logs")).cluster
    if member is None:
        return -1
    return member.fence().epochs.get(shard_of(ctx.id.hex), -1)


@attrs.define(eq=False)
class Log(td.DurableObject):
    """An append-only log of writes, each tagged with its activation and shard epoch."""

    nonce: str = attrs.field(factory=lambda: secrets.token_hex(6))

    async def _append(self, source: str, client: str, n: int) -> dict[str, Any]:
        storage = self.ctx.storage
        seq = int(await storage.get("seq") or 0) + 1
        epoch = shard_epoch(self.ctx)
        pid = os.getpid()
        entry = [self.nonce, epoch, source, client, n, pid, time.time()]
        await storage.put({"seq": seq, f"e{seq:09d}": entry})
        return {"seq": seq, "nonce": self.nonce, "epoch": epoch, "pid": pid}

    async def write(self, client: str, n: int) -> dict[str, Any]:
        """Append an HTTP write; the answer is sent once it is committed."""
        return await self._append("h", client, n)

    async def fetch(self, request: td.Request) -> td.Response:
        client, server = td.WebSocketPair()
        self.ctx.accept_websocket(server)
        return td.Response.websocket(client)

    async def websocket_message(self, ws: td.WebSocket, message: str | bytes) -> None:
        body = json.loads(message)
        # The reply waits on the output gate: it leaves only once the entry is committed.
        await ws.send(json.dumps(await self._append("w", str(body["c"]), int(body["n"]))))

    async def start_chain(self, period: float) -> bool:
        """Start the alarm chain (once); False if it runs already."""
        storage = self.ctx.storage
        if await storage.get("k") is not None:
            return False
        due = self.ctx.now() + period
        await storage.put({"k": 0, "period": period, f"due{0:06d}": due})
        await storage.set_alarm(due)
        return True

    async def alarm(self, info: td.AlarmInfo) -> None:
        storage = self.ctx.storage
        k = int(await storage.get("k"))
        period = float(await storage.get("period"))
        now = self.ctx.now()
        await self._append("a", "alarm", k)
        due = now + period
        await storage.put(
            {
                f"fired{k:06d}": [now, self.nonce, shard_epoch(self.ctx), os.getpid()],
                f"due{k + 1:06d}": due,
                "k": k + 1,
            }
        )
        await storage.set_alarm(due)

    async def read(self) -> dict[str, Any]:
        """The log's entries ``[seq, nonce, epoch, source, client, n, pid, time]``, and the chain."""
        storage = self.ctx.storage
        entries = [
            [int(key[1:]), *value] for key, value in (await storage.list(prefix="e")).items()
        ]
        dues = {int(key[3:]): value for key, value in (await storage.list(prefix="due")).items()}
        fired = {int(key[5:]): value for key, value in (await storage.list(prefix="fired")).items()}
        return {"entries": entries, "dues": dues, "fired": fired, "pid": os.getpid()}


async def worker(request: td.Request, runtime: td.Runtime) -> td.Response:
    parts = request.path.strip("/").split("/")
    if len(parts) != 2:
        return td.Response.text("not found\n", status=404)
    route, name = parts
    log = runtime.namespace("logs").get_by_name(name)
    if route == "w":
        return td.Response.json(await log.write(request.query["c"], int(request.query["n"])))
    if route == "ws":
        return await log.fetch(request)  # type: ignore[no-any-return]
    if route == "chain":
        return td.Response.json(await log.start_chain(float(request.query["period"])))
    if route == "log":
        return td.Response.json(await log.read())
    return td.Response.text("not found\n", status=404)


app = td.App(worker=worker, objects={"logs": Log})
