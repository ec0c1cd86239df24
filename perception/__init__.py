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
# OpenCV's own console lines (a decoder's "[ERROR:...] ... IHDR chunk shall be first" for a damaged
# PNG, once per read) are silenced in every command, set here for the same reason: the commands
# that read datasets (eval, train) never load ``sources.base``. Our own log line or error says what
# happened; OpenCV's failures still reach the code as return values and cv2.error. A user's own
# value wins (``OPENCV_LOG_LEVEL=INFO``).
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
