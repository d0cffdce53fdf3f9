"""A Kubernetes API emulator on a real HTTP port, for the official client in tests.

kmock's KubernetesEmulator stores objects and serves create/get/list/merge-patch/delete over
real HTTP. A real API server also does optimistic concurrency, which kmock leaves out, so
`ApiServer` adds exactly that: every write bumps metadata.resourceVersion, and a write that
carries a stale resourceVersion gets 409 Conflict, as the API server answers; and a create is
answered 201 Created and a spec change bumps metadata.generation, as the API server does.
Everything else (routing, storage, merge patches, errors) is kmock's. The emulator runs its
asyncio loop in a thread so that the synchronous client can use it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock
import yaml
from kmock._internal import enums


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator + resourceVersion bumps, 409 on a stale resourceVersion, 201 on create."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1000)

    async def _handle(self, request: Any) -> Any:
        action = request.action
        if request.resource is not None and isinstance(request.data, dict) and \
                action in (enums.action.CREATE, enums.action.UPDATE):
            meta = request.data.setdefault("metadata", {})
            if action == enums.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                sent = meta.get("resourceVersion")
                if key in self.objects and not self.objects[key].deleted and sent is not None:
                    current = self.objects[key].get("metadata", {}).get("resourceVersion")
                    if str(sent) != str(current):
                        raise kmock.KubernetesError(
                            status=409, reason="Conflict",
                            message=f"Operation cannot be fulfilled on {request.resource.plural} "
                            f"{request.name!r}: the object has been modified; please apply "
                            "your changes to the latest version and try again")
            if action in (enums.action.CREATE, enums.action.UPDATE):
                meta["resourceVersion"] = str(next(self._versions))
                # metadata.generation counts spec changes, as the API server does.
                if action == enums.action.CREATE and "spec" in request.data:
                    meta["generation"] = 1
                elif "spec" in request.data and request.name is not None:
                    key = (request.resource, request.namespace, request.name)
                    if key in self.objects and not self.objects[key].deleted:
                        old = self.objects[key].get("metadata", {}).get("generation") or 0
                        meta["generation"] = int(old) + 1
                if action == enums.action.CREATE:
                    meta.setdefault("uid", f"uid-{meta['resourceVersion']}")
                    if request.namespace and "namespace" not in meta:
                        meta["namespace"] = request.namespace
        response = await super()._handle(request)
        # The API server answers a create with 201 Created (kmock says 200); the client's
        # custom-object calls only decode a 201.
        if request.action == enums.action.CREATE and response.status == 200 and \
                not response.prepared:
            response.set_status(201)
        return response


class RunningApiServer:
    def __init__(self, emulator: ApiServer, url: str, loop: asyncio.AbstractEventLoop):
        self.emulator = emulator
        self.url = url
        self.loop = loop

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the emulator's loop (to touch kmock state safely)."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def objects(self, group_version_plural: str) -> dict[tuple[str | None, str], dict]:
        def collect() -> dict[tuple[str | None, str], dict]:
            out = {}
            for (resource, namespace, name), obj in self.emulator.objects.items():
                if resource == kmock.resource(group_version_plural) and not obj.deleted:
                    out[(namespace, name)] = dict(obj.raw)
            return out
        return self.call(collect)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emulator", "context": {
                "cluster": "emulator", "user": "tester", "namespace": namespace}}],
        }))
        return path


@contextmanager
def api_server(setup: Callable[[ApiServer], None] | None = None) -> Iterator[RunningApiServer]:
    """Start the emulator on 127.0.0.1:<free port> in a thread; stop it on exit."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    holder: dict[str, Any] = {}

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with ApiServer() as emulator, kmock.Server(emulator) as server:
            if setup is not None:
                setup(emulator)
            holder["server"] = RunningApiServer(emulator, str(server.url).rstrip("/"), loop)
            started.set()
            await stop.wait()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surface start-up failures to the test
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="kmock-apiserver", daemon=True)
    thread.start()
    if not started.wait(timeout=20) or "error" in holder:
        raise RuntimeError(f"the API emulator did not start: {holder.get('error')}")
    try:
        yield holder["server"]
    finally:
        loop.call_soon_threadsafe(lambda: stop and stop.set())
        thread.join(timeout=10)
