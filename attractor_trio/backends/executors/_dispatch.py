"""One driver thread that follows every remote attempt of a :class:`RayExecutor`.

Why not a thread per attempt: a 1,000-branch fan-out would keep 1,000 threads calling
``ray.wait`` on one generator each. Here one thread waits on all of them at once
(``ray.wait`` over the list, in short rounds) and hands each generator's items, in order, to
the trio task that follows it through a memory channel. Cancellation needs nothing from this
thread: the attempt stops listening (:meth:`Dispatcher.forget`) and cancels its task.
"""

from __future__ import annotations

import math
import threading
from typing import Any, final

import trio

__all__ = ["END", "Dispatcher", "Stream"]

#: The generator is exhausted.
END: Any = object()
#: One round of ``ray.wait`` over every followed generator.
_ROUND_S = 0.05


@final
class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@final
class Stream:
    """What one attempt receives: its generator's items, then :data:`END` (or an error)."""

    def __init__(self, gen: Any, token: trio.lowlevel.TrioToken) -> None:
        self.gen = gen
        self._token = token
        self._send, self._receive = trio.open_memory_channel[Any](math.inf)

    async def next_item(self) -> Any:
        item = await self._receive.receive()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def deliver(self, item: Any) -> None:
        """From the dispatcher thread."""
        try:
            self._token.run_sync_soon(self._send_nowait, item)
        except trio.RunFinishedError:
            pass

    def _send_nowait(self, item: Any) -> None:
        try:
            self._send.send_nowait(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@final
class Dispatcher:
    """Follows generators for one executor; see the module docstring."""

    def __init__(self, advance: Any) -> None:
        #: ``advance(gen) -> item | END``, raising the attempt's typed error (from ray.py).
        self._advance = advance
        self._lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def follow(self, gen: Any) -> Stream:
        stream = Stream(gen, trio.lowlevel.current_trio_token())
        with self._lock:
            self._streams[id(gen)] = stream
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="attractor-ray-dispatch", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return stream

    def forget(self, stream: Stream) -> None:
        with self._lock:
            if self._streams.get(id(stream.gen)) is stream:
                del self._streams[id(stream.gen)]

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        import ray

        while not self._closed:
            with self._lock:
                streams = list(self._streams.values())
            if not streams:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            gens = [s.gen for s in streams]
            try:
                ready, _ = ray.wait(gens, num_returns=len(gens), timeout=_ROUND_S)
            except Exception as exc:  # Ray shut down under us: every follower hears it
                for stream in streams:
                    self._finish(stream, _Failure(exc))
                continue
            ready_ids = {id(gen) for gen in ready}
            for stream in streams:
                if id(stream.gen) in ready_ids:
                    self._step(stream)

    def _step(self, stream: Stream) -> None:
        try:
            item = self._advance(stream.gen)
        except BaseException as exc:
            self._finish(stream, _Failure(exc))
            return
        if item is END:
            self._finish(stream, END)
        else:
            stream.deliver(item)

    def _finish(self, stream: Stream, last: Any) -> None:
        self.forget(stream)
        stream.deliver(last)
