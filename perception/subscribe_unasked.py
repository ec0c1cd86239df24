"""Messages a subscriber to exact topics received but did not ask for, and the one line that says so.

ZeroMQ subscriptions match byte prefixes: ``--topic perception/front`` (a namespace given as a
topic) or a typo such as ``--topic perception/front/lan`` receives every message of the topics that
start with it, and the exact-topic filter (``MaskSubscriber``) drops them unread. A reader that then
ends with nothing would blame the node ("is the node running?") although the node sent all along:
``Unasked`` counts those messages and keeps the first few of their topics, and ``unasked_line``
says so instead, naming the fix. An atomic frame none of whose masks was asked for counts as one
such message, on its masks' topics. The C and JavaScript readers (clients/) say the same line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perception.config import cut
from perception.wire import printable

#: The topics of unasked messages kept, to name in the line (the first ones to come).
UNASKED_TOPICS_KEPT = 3
#: Characters of such a topic kept (a topic comes from the network: it may be of any length).
_TOPIC_CHARS = 120


@dataclass
class Unasked:
    """Messages dropped as not asked for: how many, and the first ``UNASKED_TOPICS_KEPT`` distinct
    topics they came on (``more``: they came on other topics as well)."""

    messages: int = 0
    topics: list[str] = field(default_factory=list)
    more: bool = False

    def add(self, *topics: str) -> None:
        """One message dropped unread, on ``topics`` (one; an atomic frame's: its masks' topics)."""
        self.messages += 1
        if self.more:  # every topic kept and more seen: nothing left to learn from this one
            return
        for topic in topics:
            # Cut before escaping: a hostile publisher's topic of megabytes cost 0.5 s a message escaped whole.
            raw = topic if len(topic) <= 2 * _TOPIC_CHARS else topic[:_TOPIC_CHARS] + topic[-_TOPIC_CHARS:]
            topic = cut(printable(raw), _TOPIC_CHARS)
            if topic in self.topics:
                continue
            if len(self.topics) < UNASKED_TOPICS_KEPT:
                self.topics.append(topic)
            else:
                self.more = True


def unasked_line(endpoint: str, asked: list[str], seconds: float, unasked: Unasked) -> str | None:
    """The one line of a reader of exact topics (``asked``: its ``--topic`` values) that took no
    message in ``seconds`` although ``unasked.messages`` came on longer topics that start with
    them (or in atomic frames without an asked-for mask); None when none did (then the node may well not be there: the caller's own hint). It names
    what probably was meant: the namespace given as a topic (the first topic kept that starts with
    one asked for starts with it and a '/'), else that topic (else the first kept: an atomic frame's)."""
    if not unasked.messages or not unasked.topics:
        return None
    names = [printable(cut(t, _TOPIC_CHARS)) for t in asked]
    which = f"the topic {names[0]}" if len(names) == 1 else "the topics " + ", ".join(names)
    seen = ", ".join(unasked.topics) + (", ..." if unasked.more else "")
    first = next((t for t in unasked.topics if any(t.startswith(name) for name in names)), unasked.topics[0])
    namespace = next((name for name in names if first.startswith(name.rstrip("/") + "/")), None)
    meant = f"--namespace {namespace.rstrip('/')}" if namespace is not None else f"--topic {first}"
    return (f"no messages on {which} from {endpoint} in {seconds:.1f} s, but {unasked.messages} on other topics ({seen}): "
            f"--topic takes whole topic names, --namespace a namespace; did you mean {meant}?")
