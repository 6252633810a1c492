"""Contender "raw": the API server's limit for this work, with no framework at all.

LIST + WATCH the namespace, and send one merge-PATCH to /status per object that lacks
the result, 32 in flight. Usage: ``python contender_raw.py NAMESPACE`` with $KUBECONFIG set;
``BENCH_RESULT_KEY=KEY`` stores the result in .status.KEY instead (the paired scenario: its own field);
``BENCH_FIRST_LIST=FILE`` notes the CPU spent by the first LIST (firstlist.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import firstlist
from kubeapi import CONNECTION_ERRORS, MERGE_PATCH, RESULT_KEY, Api, ApiError, objects_path

IN_FLIGHT = 32
RESULT_KEY_ENV = "BENCH_RESULT_KEY"


class RawOperator:
    def __init__(self, api: Api, namespace: str, key: str = RESULT_KEY) -> None:
        self.api = api
        self.namespace = namespace
        self.key = key
        self.result = {"status": {key: {"message": "created"}}}
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.claimed: set[str] = set()  # uids patched or being patched: each object once
        self.tasks: set[asyncio.Task[None]] = set()

    def consider(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if self.key in (obj.get("status") or {}) or meta["uid"] in self.claimed:
            return
        self.claimed.add(meta["uid"])
        task = asyncio.get_running_loop().create_task(self.patch(meta["name"]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def patch(self, name: str) -> None:
        async with self.slots:
            for _ in range(5):
                try:
                    await self.api.request("PATCH", objects_path(self.namespace, name, "status"), body=self.result,
                                           content_type=MERGE_PATCH)
                    return
                except (ApiError, *CONNECTION_ERRORS) as exc:
                    if isinstance(exc, ApiError) and exc.status == 404:
                        return
                    await asyncio.sleep(0.5)

    async def run(self) -> None:
        path = objects_path(self.namespace)
        resource_version = ""
        async for items, page_version in self.api.list_all(path):
            for item in items:
                self.consider(item)
            resource_version = page_version
        while True:
            params = {"resourceVersion": resource_version, "allowWatchBookmarks": "true", "timeoutSeconds": "600"}
            async for event in self.api.watch(path, params):
                obj = event.get("object") or {}
                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self.consider(obj)


async def main(namespace: str) -> None:
    firstlist.install()
    async with Api(Path(os.environ["KUBECONFIG"]), connections=IN_FLIGHT + 4) as api:
        await RawOperator(api, namespace, os.environ.get(RESULT_KEY_ENV) or RESULT_KEY).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
