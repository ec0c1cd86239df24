"""``--wait-subscribers N``: a node's first frame held until its subscribers have joined.

A PUB socket sends nothing to a subscriber that has not joined yet, so a lossless run with a
recorder would lose its first frames. ``wait_for_subscribers`` holds every camera of a node (one
``Pipeline`` each) until each has N subscriptions to its own namespace, or raises
``SubscribersMissingError`` naming the cameras still short of them.

Imported by the runtime node: free of torch.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from perception.errors import SubscribersMissingError
from perception.sources.base import quoted

if TYPE_CHECKING:
    from perception.pipeline import Pipeline

log = logging.getLogger(__name__)

#: What counts towards ``--wait-subscribers``, said in its first line.
COUNTED = ("a recorder or listen --namespace counts once, listen --topic once per topic; one that receives none of "
           "the node's topics not at all")


def wait_for_subscribers(pipelines: list[Pipeline], *, poll_s: float) -> bool:
    """Hold the first frame of every one of ``pipelines`` (a node's cameras, not started yet) until
    each has ``wait_subscribers`` subscriptions to its own namespace (a PUB socket sends nothing to
    a subscriber that has not joined yet, so a lossless run with a recorder would lose its first
    frames). No camera starts before all have them: a camera that started alone would publish
    frames that a restart (the exit status 4 below) publishes again. False when stopped meanwhile.

    Raises:
        SubscribersMissingError: ``wait_timeout_s`` passed first; one line naming the cameras
            still short of subscribers (with several).
    """
    publish = pipelines[0].config.publish_options
    want, timeout_s = publish.wait_subscribers, publish.wait_timeout_s
    endpoint = pipelines[0].publisher.endpoint
    several = len(pipelines) > 1
    namespaces = ", ".join(p.config.publish_options.resolved_namespace for p in pipelines)
    log.info("waiting up to %g s for %d subscription(s) to %s on %s (%s)", timeout_s, want,
             f"each camera's namespace ({namespaces})" if several else namespaces, endpoint, COUNTED)
    deadline = time.monotonic() + timeout_s
    pending = list(pipelines)
    while pending:
        # One camera's wait polls the socket (and returns early once it has them); every camera
        # shares that socket, so the others only need a look at the counts it read.
        pending = [p for p in pending
                   if not p.publisher.wait_for_subscribers(want, timeout_s=poll_s if p is pending[0] else 0)]
        if not pending:
            break
        if any(p.stopping for p in pipelines):
            return False
        if time.monotonic() >= deadline:
            raise SubscribersMissingError(_missing_subscribers(pending, want, several=several, timeout_s=timeout_s))
    log.info("%d subscription(s) to %s reached the node; starting", want,
             "each camera's namespace" if several else namespaces)
    return True


def _missing_subscribers(pending: list[Pipeline], want: int, *, several: bool, timeout_s: float) -> str:
    """The one line of ``SubscribersMissingError``: who is missing, where, and the fix."""
    endpoint = pending[0].publisher.endpoint
    fix = "start the recorder first or drop --wait-subscribers"
    if not several:
        have = pending[0].publisher.stats()["subscriptions"]
        readers = _readers(pending[0].publisher) if have == 0 else 0
        if readers:  # connected, but to topics this node does not send (a mistyped --topic)
            return (f"no subscription to the node's topics reached {endpoint} within {timeout_s:g} s: {readers} "
                    f"connected reader{'s' * (readers != 1)} subscribed only to topics it does not send (check their "
                    f"--topic: whole topic names such as {pending[0].config.publish_options.resolved_namespace}/lane, "
                    f"or --namespace); {fix}")
        who = "no subscriber" if have == 0 else f"only {have} of {want} subscriptions"
        return f"{who} connected to {endpoint} within {timeout_s:g} s; {fix}"
    parts = []
    for p in pending:
        have = p.publisher.stats()["subscriptions"]
        options = p.config.publish_options
        who = "no subscriber" if have == 0 else f"only {have} of {want} subscriptions"
        parts.append(f"{who} to camera {quoted(options.camera_name)} ({options.resolved_namespace})")
    parent = pending[0].config.publish_options.resolved_namespace.rpartition("/")[0]
    return (f"{' and '.join(parts)} connected to {endpoint} within {timeout_s:g} s (--wait-subscribers {want} "
            f"counts each camera's own namespace; a recorder of {parent} counts for every camera); {fix}")


def _readers(publisher) -> int:
    """``publisher.connected_readers()``, 0 for a publisher without it (a test's stand-in)."""
    count = getattr(publisher, "connected_readers", None)
    return int(count()) if callable(count) else 0
