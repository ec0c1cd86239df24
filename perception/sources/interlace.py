"""Interlaced video that OpenCV 5's FFmpeg converter cannot turn into pictures (``VideoFileSource``
refuses it): told by the codec headers (MPEG-2's progressive flags, H.264's ``frame_mbs_only_flag``
in its sequence parameter set, read here because OpenCV exposes no field order and the project has
no container library) together with the first decoded frames being one and the same bytes.
"""

from __future__ import annotations

import re

import numpy as np

#: Frames the interlace check decodes (``stale_frames``).
INTERLACE_CHECK_FRAMES = 3
#: Codecs whose streams can flag their frames interlaced (``CAP_PROP_FOURCC`` as ``codec_of`` gives it).
MPEG2_CODECS = frozenset({"mpg2", "MPG2", "mpeg", "MPEG", "mp2v", "MP2V", "hdv2"})
H264_CODECS = frozenset({"h264", "H264", "avc1", "AVC1", "x264", "X264"})


class _Bits:
    """A big-endian bit reader over ``data`` (H.264 ``u(n)``, ``ue(v)``, ``se(v)``); ValueError past its end."""

    def __init__(self, data: bytes) -> None:
        self.value, self.size, self.pos = int.from_bytes(data, "big"), len(data) * 8, 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise ValueError("past the end")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


#: H.264 profiles whose SPS carries chroma format, bit depths and scaling lists.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_field_coding(nal: bytes) -> bool | None:
    """Whether the H.264 sequence parameter set ``nal`` (header byte included) allows field or
    MBAFF coding (``frame_mbs_only_flag`` 0: an interlaced stream, or x264's fake-interlaced); None
    when it is not an SPS or cannot be read."""
    if len(nal) < 4 or nal[0] & 0x1F != 7:
        return None
    rbsp = re.sub(b"\x00\x00\x03", b"\x00\x00", nal[1:])  # emulation prevention bytes out
    try:
        bits = _Bits(rbsp)
        profile = bits.u(8)
        bits.u(16)  # constraint flags, level
        bits.ue()  # seq_parameter_set_id
        if profile in _HIGH_PROFILES:
            chroma = bits.ue()
            if chroma == 3:
                bits.u(1)
            bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime_y_zero_transform_bypass
            if bits.u(1):  # seq_scaling_matrix_present_flag
                for i in range(12 if chroma == 3 else 8):
                    if bits.u(1):
                        last = following = 8
                        for _ in range(16 if i < 6 else 64):
                            if following:
                                following = (last + bits.se() + 256) % 256
                            last = following or last
        bits.ue()  # log2_max_frame_num_minus4
        poc_type = bits.ue()
        if poc_type == 0:
            bits.ue()
        elif poc_type == 1:
            bits.u(1), bits.se(), bits.se()
            for _ in range(min(bits.ue(), 255)):
                bits.se()
        bits.ue(), bits.u(1), bits.ue(), bits.ue()  # max refs, gaps, width and height in macroblocks
        return bits.u(1) == 0
    except ValueError:
        return None


def _annexb_units(data: bytes) -> list[bytes]:
    """The NAL units (or MPEG-2 start-code units) of an Annex B byte stream."""
    return [unit.rstrip(b"\x00") for unit in data.split(b"\x00\x00\x01")[1:]]


def _avcc_units(data: bytes) -> list[bytes]:
    """The SPS units of an MP4's ``avcC`` record."""
    units, at = [], 6
    for _ in range(data[5] & 0x1F if len(data) > 5 else 0):
        size = int.from_bytes(data[at: at + 2], "big")
        units.append(data[at + 2: at + 2 + size])
        at += 2 + size
    return units


def interlaced_headers(codec: str, chunks: list[bytes]) -> bool:
    """Whether the codec headers in ``chunks`` (extradata, first packets) say the stream is, or may
    be, interlaced: MPEG-2 ``progressive_sequence`` 0 in its sequence extension, or a picture coding
    extension with ``progressive_frame`` 0; H.264 an SPS with ``frame_mbs_only_flag`` 0."""
    for data in chunks:
        if codec in MPEG2_CODECS:
            for unit in _annexb_units(data):
                if unit[:1] == b"\xb5" and len(unit) >= 6:
                    kind = unit[1] >> 4
                    if (kind == 1 and not (unit[2] >> 3) & 1) or (kind == 8 and not unit[5] >> 7):
                        return True
        elif codec in H264_CODECS:
            units = _avcc_units(data) if data[:1] == b"\x01" else _annexb_units(data)
            if any(h264_field_coding(unit) for unit in units):
                return True
    return False


def stale_frames(frames: list[np.ndarray]) -> bool:
    """Whether the decoded ``frames`` (the first of a clip) are one and the same buffer's bytes: what
    OpenCV returns when FFmpeg's converter refused every frame ("Cannot convert interlaced to
    progressive frames") and left its output buffer as it was (zeros, or whatever memory held).
    A clip whose first frames really are the same picture (a black lead-in) looks the same, which is
    why this is only asked of a stream whose headers say it is interlaced (``interlaced_headers``)."""
    return len(frames) >= 2 and all(np.array_equal(frames[0], f) for f in frames[1:])
