"""The commands a running mount takes through control.py: `status --writes`, `plan` and
`rollback`, each run in the background (its disk work in a worker thread) while the mount
serves. One plan at a time; none while a reload runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from ..inspect.plan import plan
from ..inspect.writable_rules import writes_report
from .control import ControlError, ReplyStore, parse_request
from .live import ReloadReport, describe_failure
from .requests import Requests


def report_json(report: ReloadReport) -> dict[str, object]:
    return {"generation": report.generation, "error": report.error,
            "trigger": report.trigger, "configuration_of": report.based_on,
            "config_digest": report.digest, "seconds": round(report.seconds, 3),
            "nodes_affected": report.nodes_affected[:1000],
            "paths_changed": report.paths_changed[:1000]}


class Commands:
    """Requests in, answers kept in a ReplyStore until the client reads them."""

    def __init__(self, requests: Requests) -> None:
        self.requests = requests
        self.replies = ReplyStore()
        # How to start a background task (the serving nursery's start_soon); None runs the
        # command inside the request (tests without a nursery).
        self.spawn: Callable[..., Any] | None = None
        self._planning = False

    async def request(self, value: bytes) -> None:
        """A request set on the mount root: started, or ControlError (its errno)."""
        request_id, command = parse_request(value)
        self.replies.start(request_id, time.time())
        if self.spawn is None:
            await self._run(request_id, command)
        else:
            self.spawn(self._run, request_id, command)

    def read(self, name: str) -> bytes | None:
        return self.replies.read(name, time.time())

    async def _run(self, request_id: str, command: str) -> None:
        try:
            answer = await self._answer(command, self.replies.progress(request_id))
        except ControlError as exc:
            answer = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - an answer, never the daemon's end
            answer = {"error": describe_failure(exc)}
        self.replies.finish(request_id, answer)

    async def _answer(self, command: str, progress: dict[str, int] | None = None
                      ) -> dict[str, object]:
        if command == "writes":
            snapshot = self.requests.writes.to_json()
            view = self.requests.tree.view
            report = await trio.to_thread.run_sync(writes_report, view, snapshot)
            return {"generation": self.requests.generations.number, **report}
        if command == "rollback":
            report = await self.requests.rollback()
            return {"report": report_json(report), "status": self.requests.status()}
        return await self._plan({} if progress is None else progress)

    async def _plan(self, progress: dict[str, int]) -> dict[str, object]:
        if self.requests.reloading:
            return {"error": "a reload or rollback is running: run plan again when it is "
                             "done (onesuite status shows the outcome)", "busy": True}
        if self._planning:
            return {"error": "another plan is running", "busy": True}
        self._planning = True
        try:
            generations = self.requests.generations
            number = generations.number
            progress.update(nodes=len(generations.tree.entries["nodes"]), compared=0)
            serving, new = await trio.to_thread.run_sync(generations.build_plan)
            try:
                result = await trio.to_thread.run_sync(_plan_of, serving, new, progress)
            finally:
                new.view.store.close()
            current = generations.history.current()
            return {"generation": number, "switched_meanwhile": generations.number != number,
                    "pinned": generations.history.pinned is not None,
                    "serving_digest": current.digest if current else None, **result}
        finally:
            self._planning = False


def _plan_of(serving, new, progress: dict[str, int]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    def tick() -> None:
        progress["compared"] = progress.get("compared", 0) + 1

    return plan(serving.view, new.view, tick=tick)

