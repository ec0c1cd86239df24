"""perception: a real-time road-scene perception node and the training side that feeds it.

Runtime stages (no torch): ``sources`` -> ``frame_queue`` -> ``engines`` -> ``masks`` ->
``publish`` (ZeroMQ) -> ``subscribe``. Training side (``train`` extra): ``synthetic`` data,
``models``, ``training``; the ``export`` package turns checkpoints into ONNX / TensorRT engines.
"""

__version__ = "0.1.0"
