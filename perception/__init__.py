"""perception: a real-time road-scene perception node and the training side that feeds it.

Runtime stages (no torch): ``sources`` -> ``frame_queue`` -> ``engines`` -> ``masks`` ->
``publish`` (ZeroMQ) -> ``subscribe``. Training side (``train`` extra): ``synthetic`` data,
``models``, ``training``; the ``export`` package turns checkpoints into ONNX / TensorRT engines.
"""

import os

__version__ = "0.1.0"

#: Most pixels of one source frame (an image file or a video frame): four times 8K UHD, 201 MB as
#: BGR. A 730 KB PNG can hold 16000 x 16000 pixels and took the node to 1.6 GB for one frame.
MAX_SOURCE_PIXELS = 8192 * 8192
# OpenCV's own decoder limit (imread refuses larger images before allocating them). It is read
# once, when cv2 loads, so it is set here, before any perception module imports cv2; a user's
# own value wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_SOURCE_PIXELS))
