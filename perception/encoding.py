"""Payload codecs for mask messages: ``mono8``, ``bitpack``, ``rle`` and ``png``.

Each codec turns an H x W uint8 mask into the third frame of a mask message and back. The byte
layouts are the wire format (see ``perception/contracts.py`` and the README's "Wire format"):

- ``mono8``   H*W bytes, row-major (header ``compression: "none"``).
- ``bitpack`` ceil(H*W/8) bytes, ``numpy.packbits`` order (first pixel in the most significant
  bit); a set bit is a mask pixel (255). Binary masks only.
- ``rle``     runs over the row-major pixels, each run 5 bytes: value (uint8) then run length
  (uint32, little-endian). Runs may be split but never zero-length; lengths sum to H*W.
- ``png``     an 8-bit greyscale PNG file (``cv2.imencode``).

Codecs are chosen by name from ``ENCODING_REGISTRY`` (``get_codec("rle")``) and, on the receiving
side, by the header's ``compression`` value (``codec_for_compression("rle")``).

Usage::

    from perception.encoding import get_codec
    payload = get_codec("bitpack").encode(mask)
    mask2 = get_codec("bitpack").decode(payload, height=h, width=w)
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from perception import contracts
from perception.registry import Registry

_RLE_RUN = np.dtype(contracts.RLE_RUN_DTYPE)
#: Runs an rle payload is expanded by at a time (``_decode_rle``): 8 MB of 64-bit counts.
_RLE_CHUNK_RUNS = 1 << 20
#: OpenCV, imported at the first png payload (``_cv2``): about 100 ms that a client which reads no
#: png masks (``import perception.subscribe``) does not pay.
_CV2: ModuleType | None = None


def _cv2() -> ModuleType:
    """The ``cv2`` module, imported once (``OPENCV_IO_MAX_IMAGE_PIXELS`` is set by ``perception``)."""
    global _CV2
    if _CV2 is None:
        import cv2

        _CV2 = cv2
    return _CV2


class DecodeError(ValueError):
    """A payload that does not match its header (wrong size, corrupt data)."""


class MaskOverLimit(DecodeError):
    """A payload whose declared size is over the reader's ``--max-mask-pixels``: a size limit, not
    a damaged message (readers may word it so)."""


@dataclass(frozen=True)
class Codec:
    """One payload encoding: how a mask becomes bytes and back.

    ``name`` is the user-facing encoding name (``contracts.ENCODINGS``), ``compression`` the value
    written into the header, ``binary_only`` whether only 0/255 masks survive the round trip.
    """

    name: str
    compression: str
    binary_only: bool
    _encode: Callable[[np.ndarray], bytes]
    _decode: Callable[[memoryview, int, int], np.ndarray]

    def encode(self, mask: np.ndarray) -> bytes:
        """Encode a 2-D uint8 mask. Raises ValueError for another shape or dtype (a caller bug)."""
        if mask.ndim != 2 or mask.dtype != np.uint8 or mask.size == 0:
            raise ValueError(f"expected a non-empty 2-D uint8 mask, got {mask.dtype} {mask.shape}")
        return self._encode(np.ascontiguousarray(mask))

    def decode(
        self, payload: bytes | memoryview, *, height: int, width: int, max_pixels: int = contracts.MAX_MASK_PIXELS,
    ) -> np.ndarray:
        """Decode a payload into an (height, width) uint8 array.

        Nothing is allocated before the declared size is checked against ``max_pixels`` and the
        payload's length against what that size allows, so a few hostile bytes cannot force a
        large allocation. Raises DecodeError when the payload does not fit its header or the
        declared size exceeds ``max_pixels``.
        """
        if not (isinstance(height, int) and isinstance(width, int)) or height <= 0 or width <= 0:
            raise DecodeError(f"bad image size {height!r}x{width!r}")
        if height * width > max_pixels:
            raise MaskOverLimit(
                f"{self.name} payload declares {height}x{width} = {height * width} pixels, more than the limit of "
                f"{max_pixels}: over --max-mask-pixels, a size limit, not damage (raise --max-mask-pixels to "
                f"{height * width} if such masks are expected, or have the node publish --mask-size model)"
            )
        return self._decode(memoryview(payload).cast("B"), height, width)


def get_codec(name: str) -> Codec:
    """The codec for an encoding name; ConfigError listing the known ones when unknown."""
    return ENCODING_REGISTRY.get(name)


def topic_encoding_error(topic: str, name: str) -> str | None:
    """Why mask topic ``topic`` cannot go out in encoding ``name`` (a known one), or None when it
    can: a codec that keeps only 0/255 (``bitpack``) cannot carry the class map's class ids. The
    one rule the node's settings (checked before anything starts) and the publisher apply."""
    from perception.wire import values_for_topic

    codec = get_codec(name)
    if codec.binary_only and values_for_topic(topic) != contracts.VALUES_BINARY:
        return (f"encoding {codec.name!r} keeps only 0/255 and cannot carry {topic} (class ids); "
                "use mono8, rle or png for class_map")
    return None


def codec_for_compression(compression: str) -> Codec:
    """The codec for a header ``compression`` value; DecodeError when unknown."""
    try:
        return _BY_COMPRESSION[compression]
    except KeyError:
        raise DecodeError(f"unknown compression {compression!r}; known: {', '.join(sorted(_BY_COMPRESSION))}") from None


def _encode_mono8(mask: np.ndarray) -> bytes:
    return mask.tobytes()


def _decode_mono8(payload: memoryview, height: int, width: int) -> np.ndarray:
    if payload.nbytes != height * width:
        raise DecodeError(f"mono8 payload has {payload.nbytes} bytes, {height}x{width} needs {height * width}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(height, width).copy()


def _encode_bitpack(mask: np.ndarray) -> bytes:
    # packbits sets a bit for every non-zero byte, so 255 -> 1; the tail byte is zero-padded.
    return np.packbits(mask.reshape(-1)).tobytes()


def _decode_bitpack(payload: memoryview, height: int, width: int) -> np.ndarray:
    expected = math.ceil(height * width / 8)
    if payload.nbytes != expected:
        raise DecodeError(f"bitpack payload has {payload.nbytes} bytes, {height}x{width} needs {expected}")
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=height * width)
    bits *= 255
    return bits.reshape(height, width)


def _encode_rle(mask: np.ndarray) -> bytes:
    # Vectorised: a run starts wherever a pixel differs from its predecessor. Lengths fit uint32
    # because a mask has far fewer than 2**32 pixels.
    flat = mask.reshape(-1)
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    runs = np.empty(starts.size, dtype=_RLE_RUN)
    runs["value"] = flat[starts]
    runs["length"] = np.diff(np.append(starts, flat.size))
    return runs.tobytes()


def _decode_rle(payload: memoryview, height: int, width: int) -> np.ndarray:
    if payload.nbytes % _RLE_RUN.itemsize:
        raise DecodeError(f"rle payload has {payload.nbytes} bytes, not a multiple of {_RLE_RUN.itemsize}")
    if payload.nbytes > height * width * _RLE_RUN.itemsize:  # more runs than pixels
        raise DecodeError(f"rle payload has {payload.nbytes // _RLE_RUN.itemsize} runs, {height}x{width} has fewer pixels")
    runs = np.frombuffer(payload, dtype=_RLE_RUN)
    lengths = runs["length"]  # a view into the payload: checked and summed without a copy
    if lengths.size and not lengths.all():
        raise DecodeError("rle payload holds a zero-length run")
    total = int(lengths.sum(dtype=np.uint64))  # uint32 lengths cannot overflow a 64-bit sum here
    if total != height * width:
        raise DecodeError(f"rle runs cover {total} pixels, {height}x{width} needs {height * width}")
    if runs.size <= _RLE_CHUNK_RUNS:
        return np.repeat(runs["value"], lengths).reshape(height, width)
    # np.repeat takes its counts as 64-bit integers: for a payload of millions of runs (one a pixel
    # at worst, 16M at 4096 x 4096) that copy would be 8 bytes a run. Expanded a chunk of runs at a
    # time into the mask instead, it is a few MB whatever the payload.
    mask = np.empty(total, dtype=np.uint8)
    at = 0
    for start in range(0, runs.size, _RLE_CHUNK_RUNS):
        chunk = runs[start: start + _RLE_CHUNK_RUNS]
        expanded = np.repeat(chunk["value"], chunk["length"])
        mask[at: at + expanded.size] = expanded
        at += expanded.size
    return mask.reshape(height, width)


def _encode_png(mask: np.ndarray) -> bytes:
    cv2 = _cv2()
    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, contracts.PNG_COMPRESSION_LEVEL])
    if not ok:
        raise ValueError(f"OpenCV could not PNG-encode a {mask.shape} mask")
    return buf.tobytes()


#: PNG signature and the fixed layout of the first chunk (IHDR): length 13, type, width, height,
#: bit depth, colour type. Hand-parsed because OpenCV offers no header-only read: cv2.imdecode
#: would first allocate whatever size the file claims.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR = struct.Struct(">I4sIIBBBB")
_PNG_GREY = 0


def _check_png_header(payload: memoryview, height: int, width: int) -> None:
    """DecodeError unless the payload starts with a PNG signature and an IHDR of an 8-bit
    greyscale ``width`` x ``height`` image; reads 26 bytes and allocates nothing."""
    if payload.nbytes == 0:  # cv2.imdecode asserts (cv2.error) on an empty buffer
        raise DecodeError("png payload is empty")
    head = bytes(payload[: len(_PNG_SIGNATURE) + _PNG_IHDR.size])
    if len(head) < len(_PNG_SIGNATURE) + _PNG_IHDR.size or not head.startswith(_PNG_SIGNATURE):
        raise DecodeError("png payload is not a readable PNG (no PNG signature and IHDR chunk)")
    length, kind, png_w, png_h, depth, colour, method, filtering = _PNG_IHDR.unpack_from(head, len(_PNG_SIGNATURE))
    if kind != b"IHDR" or length != 13:
        raise DecodeError("png payload is not a readable PNG (its first chunk is not IHDR)")
    if (png_h, png_w) != (height, width) or depth != 8 or colour != _PNG_GREY:
        raise DecodeError(
            f"png payload is a {png_w}x{png_h} image of bit depth {depth}, colour type {colour}; "
            f"header says 8-bit greyscale {width}x{height}"
        )
    if method != 0 or filtering != 0:
        raise DecodeError(f"png payload's IHDR has compression method {method} and filter method {filtering}; "
                          "PNG defines only 0")


_PNG_CHUNK_HEAD = struct.Struct(">I4s")
_PNG_IHDR_INTERLACE = len(_PNG_SIGNATURE) + 8 + 12  # offset of IHDR's interlace byte


#: The chunks a reader hands its PNG decoder: ancillary ones (text, ICC profiles, transparency...)
#: are ignored, as the PNG spec allows, and so is a PLTE, which means nothing in a greyscale image.
_PNG_KEPT = (b"IHDR", b"IDAT", b"IEND")
_PNG_CRITICAL = (*_PNG_KEPT, b"PLTE")
_PNG_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
_PNG_FILTERS = 5  # a row's filter byte: none, sub, up, average, Paeth


def _chunk_name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def _check_png_chunks(payload: memoryview, height: int, width: int) -> bytes:
    """The PNG as OpenCV gets it: its signature, IHDR, IDAT chunks and an IEND. DecodeError unless
    the chunks are whole (each within the payload, its CRC right, IEND reached), each of a type of
    four letters, IHDR once, no critical chunk but IHDR, PLTE, IDAT and IEND, the IDAT chunks one
    run, and the image data one whole zlib stream inflating to exactly the rows the header declares,
    each starting with a filter byte of 0..4.

    libpng prints a line to stderr for each PNG it finds cut short, with a bad CRC, a bad filter
    byte, more image data than its IHDR, or an ancillary chunk it does not like (one per hostile
    message, past the subscriber's rate-limited warnings). So a PNG reaches OpenCV only once nothing
    is left for libpng to complain about, and without its ancillary chunks (which the mask does not
    need). The inflation stops one byte past the declared size, so it allocates no more than the
    mask itself.
    """
    data = bytes(payload)
    offset, idat, idat_span = len(_PNG_SIGNATURE), [], [0, 0]
    while True:
        if offset + _PNG_CHUNK_HEAD.size + 4 > len(data):
            raise DecodeError("png payload is cut short (no IEND chunk)")
        length, kind = _PNG_CHUNK_HEAD.unpack_from(data, offset)
        end = offset + _PNG_CHUNK_HEAD.size + length
        if end + 4 > len(data):
            raise DecodeError(f"png payload is cut short (its {_chunk_name(kind)} chunk runs past the end)")
        if zlib.crc32(data[offset + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            raise DecodeError(f"png payload's {_chunk_name(kind)} chunk has a bad CRC")
        if not kind.isalpha():
            raise DecodeError(f"png payload has a chunk of type {_chunk_name(kind)}, not four ASCII letters")
        if kind == b"IHDR" and offset != len(_PNG_SIGNATURE):
            raise DecodeError("png payload has a second IHDR chunk")
        if kind[:1].isupper() and kind not in _PNG_CRITICAL:
            raise DecodeError(f"png payload has an unknown critical chunk {_chunk_name(kind)}")
        if kind == b"IDAT":
            if idat and idat_span[1] != offset:
                raise DecodeError("png payload's IDAT chunks are not consecutive")
            if not idat:
                idat_span[0] = offset
            idat.append(data[offset + _PNG_CHUNK_HEAD.size:end])
            idat_span[1] = end + 4
        offset = end + 4
        if kind == b"IEND":
            break
    if data[_PNG_IHDR_INTERLACE] != 0:  # Adam7 stores the rows in passes of other sizes; no node sends it
        raise DecodeError("png payload is interlaced; masks are sent non-interlaced")
    rows = height * (width + 1)  # 8-bit greyscale: a filter byte and the pixels, each row
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), rows + 1)
        size = len(raw)
        if size == rows and not inflater.eof:  # the stream's end (and checksum) may still follow
            size += len(inflater.decompress(inflater.unconsumed_tail, 1))
    except zlib.error as exc:
        raise DecodeError(f"png payload's image data does not inflate ({exc})") from None
    if size != rows:
        raise DecodeError(f"png payload's image data holds {'more' if size > rows else 'less'} than the "
                          f"{height} rows of {width} pixels its header declares")
    if not inflater.eof or inflater.unused_data:
        raise DecodeError("png payload's image data is not one whole zlib stream "
                          f"({'bytes follow its end' if inflater.eof else 'its end is missing'})")
    filters = np.frombuffer(raw, dtype=np.uint8)[:: width + 1]
    if (bad := np.flatnonzero(filters >= _PNG_FILTERS)).size:
        raise DecodeError(f"png payload has a bad adaptive filter value ({filters[bad[0]]} starts row {bad[0]}; "
                          f"PNG defines 0..{_PNG_FILTERS - 1})")
    ihdr_end = len(_PNG_SIGNATURE) + _PNG_CHUNK_HEAD.size + 13 + 4
    return data[:ihdr_end] + data[idat_span[0]:idat_span[1]] + _PNG_IEND


def _decode_png(payload: memoryview, height: int, width: int) -> np.ndarray:
    _check_png_header(payload, height, width)
    critical = _check_png_chunks(payload, height, width)
    cv2 = _cv2()
    try:
        image = cv2.imdecode(np.frombuffer(critical, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DecodeError(f"png payload is not a readable PNG ({str(exc).strip().splitlines()[-1][:120]})") from None
    if image is None:
        raise DecodeError("png payload is not a readable PNG")
    if image.dtype != np.uint8 or image.shape != (height, width):
        raise DecodeError(f"png payload is {image.dtype} {image.shape}, header says uint8 ({height}, {width})")
    return image


def max_payload_bytes(max_pixels: int) -> int:
    """The largest payload of a valid mask of at most ``max_pixels`` pixels, in any encoding: ``rle``
    at worst one 5-byte run a pixel (``5N``), ``mono8`` ``N``, ``bitpack`` ``N/8``, ``png`` its rows
    (a filter byte and the pixels each) deflated, at worst a little larger than they are, in IDAT
    chunks of 8 KiB (libpng's, as the node writes them) plus signature, IHDR and IEND."""
    n = max_pixels
    rows = n + min(n, contracts.MAX_MASK_SIDE)  # at most MAX_MASK_SIDE rows (or n), a filter byte each
    deflated = rows + rows // 8 + rows // 64 + 11  # zlib's most conservative deflateBound, with its wrapper
    png = len(_PNG_SIGNATURE) + 25 + deflated + 12 * -(-deflated // 8192) + len(_PNG_IEND)
    return max(_RLE_RUN.itemsize * n, n, -(-n // 8), png)


ENCODING_REGISTRY: Registry[Codec] = Registry("encoding")
for _codec in (
    Codec("mono8", contracts.COMPRESSION_OF_ENCODING["mono8"], False, _encode_mono8, _decode_mono8),
    Codec("bitpack", contracts.COMPRESSION_OF_ENCODING["bitpack"], True, _encode_bitpack, _decode_bitpack),
    Codec("rle", contracts.COMPRESSION_OF_ENCODING["rle"], False, _encode_rle, _decode_rle),
    Codec("png", contracts.COMPRESSION_OF_ENCODING["png"], False, _encode_png, _decode_png),
):
    ENCODING_REGISTRY.register(_codec.name)(_codec)
_BY_COMPRESSION = {ENCODING_REGISTRY.get(n).compression: ENCODING_REGISTRY.get(n) for n in ENCODING_REGISTRY}
