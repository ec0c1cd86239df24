"""Launch files: several nodes described as data, validated up front, started and supervised together.

A launch file is YAML in the spirit of ROS 2 launch files (the shipped ones are in ``launch/``)::

    launch:
      - arg: {name: camera, default: 0, description: V4L2 device index}
      - include: {file: common.yaml, args: {endpoint: "tcp://127.0.0.1:5560"}}
      - node:
          name: front                 # unique; output lines are prefixed "[front]"
          kind: pipeline              # pipeline (= perception run), record, replay, view, listen
          parameters:                 # the same names and checks as the command's flags
            source: "camera:$(var camera)"
            model: perception/assets/default.onnx
          respawn: true               # restart when it exits (not after exit code 2 or 3: a bad
                                      # input or a missing dependency, which a restart cannot fix) ...
          respawn_delay: 1.0          # ... after this many seconds; doubled per further quick failure
                                      # in a row (a run under 10 s), from at least 0.5 s, up to 30 s
          respawn_max: 0              # give up after this many restarts in a row that did not stay
                                      # up 10 s (0: never give up)
          required: true              # when it is gone for good, stop everything
          delay: 0.0                  # start this many seconds after the launch (e.g. after a recorder)

``$(var NAME)`` is replaced by a launch argument (``perception launch FILE NAME:=VALUE`` or the
``default``), ``$(env NAME [DEFAULT])`` by an environment variable. A value that is exactly one
substitution keeps the argument's type (``fps: $(var fps)`` stays a number); inside a longer string
it is spliced in as text. An ``arg``'s ``default`` is substituted too, as in ROS 2 launch: it may use
``$(env ...)`` and the arguments declared above it (one declared below, or defaults naming each
other, is an error); a ``NAME:=VALUE`` override replaces it unevaluated. Substitutions nest, innermost
first (``$(env OUT $(var dir)/runs)``, ``$(var $(env WHICH))``); a quoted argument (``'...'``) may
hold spaces and parentheses, ``''`` is empty.

Everything is checked before any process starts: unknown keys, unknown node kinds, missing
arguments, bad parameter values (each kind's parameters against the config dataclass its
command's flags are generated from: ``pipeline`` against ``RunConfig``, ``record`` against
``RecordConfig``, ...; through ``perception.config.load_config``, so a bad value fails with the
message the flag or a YAML file would give), missing include files, two publishing nodes
(``pipeline``, ``replay``) that bind one address, an endpoint that is a number or a host a publisher
cannot bind, two nodes that write one file (``record`` outs and their splits, ``view`` outs,
``listen`` save folders), an arg declared twice, and the limits (``parse.MAX_NODES``,
``MAX_INCLUDES``, ``MAX_ENTRIES``, ``MAX_NAME_CHARS``; ``substitute.MAX_ARG_BYTES`` a value and
``MAX_TOTAL_TEXT`` in all). Each error names the file, the node and the key. ``--check`` also opens the files ``pipeline`` nodes name (``model``, and a
``source`` that is a video, an image or an image folder, and its CURVE key files; with
``per_class_obstacles``, the model's obstacle classes as topics), and the files ``replay`` nodes
read (the recording: there, readable, MCAP, holding a perception message; its CURVE key files;
``checks.check_node_files``).

Modules, in the order a launch goes through them: ``parse`` (file, arguments, includes, validation
-> plan), ``substitute`` (``$(var)``/``$(env)``), ``flags`` (node parameters -> command flags),
``checks`` (across the parsed nodes: no two bind one address or write one file; ``--check``'s files),
``plan`` (node kinds, the resolved plan and its printout), ``supervisor`` (processes, prefixed
output, respawn, signals).

Run: ``perception launch launch/demo.yaml model:=m.onnx`` (``--check`` checks files, prints the plan and exits).
"""

from perception.launch.checks import check_node_files
from perception.launch.parse import load_launch, parse_launch_arguments
from perception.launch.plan import NODE_KINDS, LaunchPlan, NodePlan, format_plan
from perception.launch.supervisor import LaunchSupervisor

__all__ = [
    "NODE_KINDS",
    "LaunchPlan",
    "LaunchSupervisor",
    "NodePlan",
    "check_node_files",
    "format_plan",
    "load_launch",
    "parse_launch_arguments",
]
