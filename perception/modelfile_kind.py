"""What a file given where an ``.onnx`` model belongs is, when it is not one, and its one line.

Read from the file's first bytes, before ``onnx`` is asked (whose error would only say "not a
readable ONNX file"): an OpenVINO IR's ``.xml`` (markup whose root element is ``<net>``), another
XML or HTML document (what a failed download saves: S3's AccessDenied body, a login page), or a
PyTorch checkpoint (``torch.save``'s zip archive or pickle), or an MCAP recording (``perception
record``'s file, which is only ever read whole by ``onnx.load`` otherwise: hundreds of MB before a
misleading "corrupt"). ``modelfile.load_model_proto`` refuses
each with the line named here (``not_onnx_line``), and ``perception bench`` says the same of an IR
(``openvino_ir_line``).

    line = not_onnx_line(path)      # None: an ONNX file, or one for onnx to judge
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from perception.contracts import CONTROL_CHARACTERS


def openvino_ir_line(path: str | Path) -> str:
    """The one line for an OpenVINO IR (``model.xml`` and its ``model.bin``) given where a model
    file goes: what it is and what to pass instead. Every command says it so (``bench``'s
    ``no_engine_reads``, and ``run``, ``inspect``, ``eval`` through ``load_model_proto``)."""
    return (f"{path} is an OpenVINO IR file, which perception does not read; pass the .onnx it was converted "
            "from, or export one with 'perception export' (perception run --engine openvino runs an .onnx on OpenVINO)")


def _markup_root(path: Path) -> str | None:
    """The root element's name when ``path`` starts as markup (XML or HTML, after a byte order mark
    and blanks, its declaration, comments and doctype skipped): "" when none is found in its first
    4 kB; None when it does not start with ``<`` (an ONNX file starts with a protobuf field tag)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return None  # onnx.load names the problem
    text = head.removeprefix(b"\xef\xbb\xbf").decode("latin-1").lstrip()
    if not text.startswith("<"):
        return None
    while text.startswith("<"):
        for start, end in (("<?", "?>"), ("<!--", "-->"), ("<!", ">")):
            if text.startswith(start):
                cut = text.find(end, len(start))
                if cut < 0:
                    return ""
                text = text[cut + len(end):].lstrip()
                break
        else:
            match = re.match(r"<([A-Za-z_][\w.:-]*)", text)
            return match.group(1) if match else ""
    return ""


def is_openvino_ir(path: Path) -> bool:
    """Whether ``path`` is an OpenVINO IR's ``.xml``: markup whose root element is ``<net``
    (``_markup_root``); other XML (a failed download's error body) is ``markup_line``'s."""
    return _markup_root(path) == "net"


def markup_line(path: Path) -> str | None:
    """The one line for a model file that is an XML or HTML document but not an OpenVINO IR (what
    a failed download saves: S3's AccessDenied body, a login page), else None."""
    root = _markup_root(path)
    if root is None or root == "net":
        return None
    kind = "an HTML" if root.lower() == "html" else "an XML"
    what = f" (root element <{CONTROL_CHARACTERS.sub('?', root)[:40]}>)" if root else ""
    return (f"{path} is {kind} document{what}, not a model: perhaps a failed download saved an error page under "
            "this name; download the model again or export it with 'perception export'")


def _is_torch_checkpoint(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file: a zip archive (the default since torch 1.6)
    or a pickle (protocol 2 and up). An ONNX file starts with a protobuf field tag, never these."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False  # onnx.load names the problem
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


#: The first bytes of every MCAP file (the format's magic: ``\x89MCAP`` and the major version ``0``).
MCAP_MAGIC = b"\x89MCAP0\r\n"


def _head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` (b"" when it cannot be read: ``onnx.load`` names the problem)."""
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError:
        return b""


def mcap_line(path: Path) -> str | None:
    """The one line for an MCAP recording (``perception record``'s file) given where an ONNX model
    belongs, read from its first 8 bytes; else None."""
    if _head(path, len(MCAP_MAGIC)) != MCAP_MAGIC:
        return None
    return (f"{path} is an MCAP recording (perception record's file), not an ONNX model: play it back with "
            f"'perception replay {shlex.quote(str(path))}' (and draw what it sends with 'perception view --endpoint "
            "E --namespace NS'); give the .onnx model file here")


def not_onnx_line(path: Path) -> str | None:
    """The one line for a file given where an ONNX model belongs that its first bytes show to be
    another kind (an OpenVINO IR, another XML or HTML document, a PyTorch checkpoint, an MCAP
    recording): what it is and what to pass instead, naming ``path`` as given; None for any other
    file (``onnx`` judges it)."""
    recording = mcap_line(path)
    if recording:
        return recording
    if is_openvino_ir(path):
        return openvino_ir_line(path)
    markup = markup_line(path)
    if markup:
        return markup
    if _is_torch_checkpoint(path):
        return (f"{path} is a PyTorch checkpoint, not an ONNX model: export it (perception export --checkpoint "
                f"{path} --out model.onnx), or run it with --engine torch, or score it with eval --checkpoint")
    return None
