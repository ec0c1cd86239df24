"""The node's send limit (``--sndhwm``): how many messages ZeroMQ queues for each subscriber.

Why a small limit: ZMQ_CONFLATE would keep only the newest message but does not support multipart
messages, so the node's own queue per subscriber is a small high-water mark: once it is full, the
messages sent then are dropped for that subscriber (it sees gaps in ``pub_seq``) and the node never
waits. (The subscriber's own receive queue and the kernel's socket buffers still hold seconds of a
slow reader's messages: README "Delivery" tells readers to drain and keep the newest.)

Why not smaller than a few bursts: a frame is a burst of messages (``messages_per_frame``), and
libzmq updates the writer's view of the queue lazily (the I/O thread acknowledges every ~hwm/2
messages and send() processes acknowledgements at most about once a millisecond), so a limit below
one burst drops the tail of every frame even for a fast subscriber (measured: 4 delivered 199 of
300 messages, 16 all 300). With several cameras on one socket the burst is every camera's frame
(a batch is published back to back): hunt s37 lost 29 of 1200 messages of 3 cameras at 16. So the
default is ``AUTO_BURSTS`` bursts of the node, about 0.17 s of stale data at 30 FPS plus kernel TCP
buffers. It is fixed at the bind (``MaskPublisher``): libzmq gives each connection its socket's
limit as of the bind, and setting SNDHWM later (which libzmq 4.3 applies to the connections made so
far) crashes it when one is closing.

``SendLimit`` holds the limit of one socket (shared by every namespace on it), says once when it
is below two bursts of the node as it runs, and warns of the sends that met a full queue (which the
socket counts, once a send however many queues were full: ``XpubCore.see_full_queues``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from perception import contracts

log = logging.getLogger(__name__)

#: The default send limit: this many bursts of the node (one frame of every camera on the socket).
#: Measured with a subscriber that keeps up (a burst of 24 messages of 150 kB, 100 frames): 3 bursts
#: lost nothing, 2 lost one message in 100, 16 (two thirds of a burst) 37 %; an unpaced file run of 4
#: cameras on a loaded 2-core machine lost 1 message in 3600 at 3 bursts (the I/O thread did not get
#: the CPU for 3 bursts' time), none in 5 runs at 10. 5 bursts is about 0.17 s of each camera at 30 FPS.
AUTO_BURSTS = 5
#: An atomic frame is one message, plus the obstacles and stats documents.
ATOMIC_MESSAGES_PER_FRAME = 3


def messages_per_frame(*, atomic_frames: bool, mask_topics: int = len(contracts.MASK_TOPICS)) -> int:
    """The messages one frame of one namespace makes at most: every mask topic plus the obstacles and
    stats documents, or an atomic frame plus those two."""
    return ATOMIC_MESSAGES_PER_FRAME if atomic_frames else mask_topics + 2


@dataclass
class SendLimit:
    """The send limit of one socket, shared by every namespace on it."""

    asked: int | None  # --sndhwm; None: AUTO_BURSTS bursts of the node
    value: int  # the limit every connection has (set at the bind)
    warned: bool = False  # whether the limit was checked against the node's burst (``warn_once``)

    @classmethod
    def for_node(cls, sndhwm: int | None, *, atomic_frames: bool, namespaces: int) -> SendLimit:
        """``sndhwm`` as given, or ``AUTO_BURSTS`` bursts of ``namespaces`` namespaces of the fixed
        topics (per-class topics are declared after the bind, when the model is known)."""
        per_frame = messages_per_frame(atomic_frames=atomic_frames)
        return cls(asked=sndhwm, value=sndhwm if sndhwm is not None else AUTO_BURSTS * per_frame * namespaces)

    def warn_once(self, burst: int, cameras: int) -> None:
        """Once per socket, at its first frame: a limit below two bursts of the node (``burst``: one
        frame of each of its ``cameras``, per-class topics included) makes subscribers lose messages
        even when they keep up. An explicit ``--sndhwm``, or a default made for fewer namespaces or
        topics than the node has."""
        if self.warned:
            return
        self.warned = True
        if self.value >= 2 * burst:
            return
        log.warning(
            "%s is below two bursts of this node (a burst: one frame of %s, %d messages): subscribers "
            "will lose messages even when they keep up; use --sndhwm %d or more (%d bursts)",
            f"--sndhwm {self.value}" if self.asked is not None else f"the send limit ({self.value} messages)",
            f"each of {cameras} cameras" if cameras > 1 else "its camera", burst,
            AUTO_BURSTS * burst, AUTO_BURSTS,
        )

    def overflowed(self, overflows: int, burst: int) -> None:
        """A send found one or more subscriber queues full, the socket's ``overflows``-th: a warning at
        the 1st, 10th, 100th and every 1000th. It counts sends, not subscribers: libzmq's
        ``XPUB_NODROP`` check says whether any queue of the send is full, not which nor how many, and
        the send made again without it takes every full one out of the send set at once, each until
        its queue has drained by half (``dist_t::check_hwm``, ``dist_t::write``); so subscribers that
        fill on the same send (readers stuck alike) count once."""
        if overflows in (1, 10, 100) or overflows % 1000 == 0:
            log.warning(
                "a send found a subscriber queue full (--sndhwm %d messages; a burst of this node is %d): each "
                "full subscriber loses messages, seen as gaps in its pub_seq (%d such send%s so far; subscribers "
                "that fill on the same send count once). A reader that keeps up needs a larger --sndhwm; a slow one "
                "should drain and keep the newest (--keep-latest)",
                self.value, burst, overflows, "" if overflows == 1 else "s",
            )
