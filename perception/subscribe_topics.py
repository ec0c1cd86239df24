"""What a ``MaskSubscriber`` subscribes to: its ``topics``, ``namespace`` and ``masks`` arguments
checked (each mistake that would subscribe to nothing the node sends is a ConfigError naming the
fix), and the topics, info and frame topics and ZeroMQ prefixes they come to (``subscriptions``)."""

from __future__ import annotations

from typing import Any, NamedTuple

from perception import contracts
from perception.config import short
from perception.errors import ConfigError
from perception.options import leading_slash_error
from perception.subscribe_decode import frame_topics_of

#: The names ``masks=`` takes: a node's mask topics, its per-class ``obstacle/<class>`` masks,
#: JSON documents and atomic frames (any other topic by its exact name in ``topics=``).
_KNOWN_MASK_NAMES = (*contracts.MASK_TOPICS, contracts.PER_CLASS_OBSTACLE_PREFIX + "<class>",
                     *contracts.JSON_TOPICS, contracts.FRAME_TOPIC)


class Subscriptions(NamedTuple):
    """What ``subscriptions`` makes of a subscriber's topic arguments."""

    #: The exact topics asked for, None for a prefix subscription (everything under the namespace,
    #: or everything).
    topics: list[str] | None
    #: ``<namespace>/info`` when only some masks of a namespace are asked for: subscribed, kept in
    #: ``info``, not returned.
    info_topics: set[str]
    #: The ``<namespace>/frame`` topics an ``--atomic-frames`` node sends the asked-for masks in.
    frame_topics: set[str]
    #: The ZeroMQ subscription prefixes, in the order they are subscribed.
    prefixes: list[str]


def _name_list(what: str, value: Any) -> list[str] | None:
    """``topics`` or ``masks`` as a list of names (None for None); a ConfigError for one string (it
    would subscribe to each of its characters) or an item that is not a non-empty string."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise ConfigError(f"{what}={short(value)} is one string; {what} takes a list of names, e.g. {what}=[{short(value)}]")
    try:
        names = list(value)
    except TypeError:
        raise ConfigError(f"{what}={short(value)} is not a list of names; e.g. {what}=['lane']") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{what}={short(names)} holds {short(name)}, not a name; give non-empty strings")
    return names


def _mask_name_unknown(name: str) -> bool:
    """Whether ``name`` is none of ``_KNOWN_MASK_NAMES`` (a class name after ``obstacle/`` is any
    name a topic may end in)."""
    if name in contracts.MASK_TOPICS or name in contracts.RESERVED_TOPIC_NAMES:
        return False
    prefix = contracts.PER_CLASS_OBSTACLE_PREFIX
    return not (name.startswith(prefix) and contracts.topic_segment_error(name[len(prefix):]) is None)


def subscriptions(topics: Any, namespace: Any, masks: Any) -> Subscriptions:
    """The ``Subscriptions`` of a ``MaskSubscriber``'s ``topics``, ``namespace`` and ``masks``
    arguments; a ConfigError for each of them that would subscribe to nothing the node sends, without
    a word: one string for a list, a namespace that is no string or starts with ``/``, topics and a
    namespace together, masks without a namespace, a mask name that is none of a node's."""
    topics = _name_list("topics", topics)
    masks = _name_list("masks", masks)
    if namespace is not None and not isinstance(namespace, str):
        raise ConfigError(f"namespace={short(namespace)} must be a string, e.g. namespace='perception/front'")
    for what, name in [("namespace", namespace), *(("topics", t) for t in topics or ())]:
        if problem := leading_slash_error(what, name, publishing=False):
            raise ConfigError(problem)
    if topics and namespace:
        raise ConfigError("give either topics or a namespace, not both")
    if masks and not namespace:
        raise ConfigError("masks need a namespace, e.g. namespace='perception/front'")
    for name in masks or ():
        if _mask_name_unknown(name):
            raise ConfigError(f"masks: {short(name)} is not a topic of a node; masks takes "
                              f"{', '.join(_KNOWN_MASK_NAMES)} (other topics by their exact names in topics=[...])")
    info_topics: set[str] = set()
    frame_topics: set[str] = set()
    if topics:
        exact: list[str] | None = list(topics)
        # A node with --atomic-frames sends mask <ns>/X inside <ns>/frame: subscribe to that
        # too, and keep only the asked-for masks of each frame.
        frame_topics = set().union(*map(frame_topics_of, exact)) - set(exact)
        prefixes = exact + sorted(frame_topics)
    elif namespace and masks:
        exact = [contracts.topic_name(namespace, m) for m in masks]
        info_topics = {contracts.topic_name(namespace, contracts.INFO_TOPIC)} - set(exact)
        frame_topics = {contracts.topic_name(namespace, contracts.FRAME_TOPIC)} - set(exact)
        prefixes = exact + sorted(info_topics) + sorted(frame_topics)
    else:
        exact = None  # prefix subscription: everything under the namespace (or everything)
        prefixes = [namespace.rstrip("/") + "/"] if namespace else [""]
    return Subscriptions(exact, info_topics, frame_topics, prefixes)
