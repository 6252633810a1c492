"""asyncio compatibility: the stock policy's ``get_event_loop()`` makes a loop only in
the main thread. The embedding contract calls it from an operator's own thread
(``asyncio.get_event_loop_policy().get_event_loop()``), so opd lets every thread
get one the same way. Nothing else about the policy changes, and only once a handler is declared
in the process-wide default registry (``opd.registry``): never at import, never for the daemon's
plugins (each has a registry of its own) or for an operator run with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import sys


class _AnyThreadPolicy(asyncio.DefaultEventLoopPolicy):
    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        try:
            return super().get_event_loop()
        except RuntimeError:
            loop = self.new_event_loop()
            self.set_event_loop(loop)
            return loop


def install() -> None:
    if sys.version_info >= (3, 14):  # policies are deprecated there; nothing to adapt
        return
    policy = asyncio.get_event_loop_policy()
    # Only the stock policy, and in place: loops already set in it stay where they are.
    if type(policy) is asyncio.DefaultEventLoopPolicy:
        policy.__class__ = _AnyThreadPolicy
