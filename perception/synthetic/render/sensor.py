"""What the camera adds after the labels are final: surface texture, lens and motion blur, white
balance, exposure curve (gamma), saturation, vignetting, sensor noise and JPEG compression.

These touch the image only, never the labels. Texture and noise come from tables computed once
per image size (a random window into them per scene or per frame), so a frame costs a couple of
whole-image OpenCV passes and no random sampling per pixel.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from perception.synthetic.world import Lighting

#: Standard deviation (grey levels) of the stored noise and texture tables.
TABLE_SIGMA = 20.0


@functools.lru_cache(maxsize=4)
def noise_table(height: int, width: int) -> np.ndarray:
    """Gaussian sensor noise, 2H x 2W x 3, uint8 centred on 128 (a random window is used per frame)."""
    rng = np.random.default_rng(0x5EED)
    noise = rng.normal(128.0, TABLE_SIGMA, size=(2 * height, 2 * width, 3))
    return np.clip(noise, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def texture_table(height: int, width: int) -> np.ndarray:
    """Blotchy low- and mid-frequency brightness variation (grime, wear), 2H x 2W x 3 uint8 around 128."""
    rng = np.random.default_rng(0x7E47)
    field = np.zeros((2 * height, 2 * width), np.float32)
    for cell, weight in ((48, 1.0), (12, 0.6), (3, 0.35)):
        small = rng.normal(0, 1, size=(2 * height // cell + 2, 2 * width // cell + 2)).astype(np.float32)
        field += weight * cv2.resize(small, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    field *= TABLE_SIGMA / max(float(field.std()), 1e-6)
    grey = np.clip(field + 128.0, 0, 255).astype(np.uint8)
    return cv2.merge((grey, grey, grey))


@functools.lru_cache(maxsize=4)
def vignette_table(height: int, width: int) -> np.ndarray:
    """Squared distance from the image centre in half-diagonals (0 centre .. 1 corners), H x W float32."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xs - (width - 1) / 2) ** 2 + (ys - (height - 1) / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    return r2.astype(np.float32)


def tone_table(light: Lighting) -> np.ndarray:
    """1 x 256 x 3 look-up table: white balance gains per channel, then the gamma curve."""
    x = np.arange(256, dtype=np.float32)[:, None] / 255.0
    gains = np.asarray(light.white_balance_bgr, np.float32)[None, :]
    y = np.clip(x * gains, 0.0, 1.0) ** np.float32(1.0 / light.gamma)
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(1, 256, 3)


class SensorEffects:
    """Texture, blur and noise for images of one size; the tables are shared between instances."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self._noise = noise_table(height, width)
        self._texture = texture_table(height, width)

    def noise_window(self, rng: np.random.Generator) -> tuple[int, int]:
        """Where this frame's noise is cut from the table: the one draw ``apply`` makes from ``rng``
        (``Renderer.skip`` makes it without a picture)."""
        return int(rng.integers(self.height)), int(rng.integers(self.width))

    def apply(self, image: np.ndarray, light: Lighting, rng: np.random.Generator) -> np.ndarray:
        """The clean ``image`` as the camera sees it under ``light``; ``rng`` picks the noise window."""
        h, w = self.height, self.width
        # The texture window belongs to the scene (steady over a drive); the noise window is new each frame.
        oy, ox = int(light.texture_offset[0] * (h - 1)), int(light.texture_offset[1] * (w - 1))
        # Surface grime is reflected light: it fades with the exposure (no blotches on a night sky).
        beta = 7.0 * light.texture_strength * min(1.0, light.ambient * light.gain) / TABLE_SIGMA
        image = cv2.addWeighted(image, 1.0, self._texture[oy : oy + h, ox : ox + w], beta, -128.0 * beta)
        # Blur is specified for a 640-pixel-wide sensor; smaller images get proportionally less.
        blur_px = light.blur_sigma * w / 640.0
        if blur_px > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), blur_px)
        streak_px = light.motion_blur_px * w / 640.0
        if streak_px > 1.0:
            # A box streak along the nearer image axis: a separable box filter costs the same at any
            # length, where a slanted line kernel (filter2D) cost 100 ms a frame at 720p.
            length = max(2, int(round(streak_px)))
            along_rows = abs(light.motion_blur_angle) < 45.0
            image = cv2.blur(image, (length, 1) if along_rows else (1, length))
        if light.white_balance_bgr != (1.0, 1.0, 1.0) or light.gamma != 1.0:
            image = cv2.LUT(image, tone_table(light))
        if light.saturation != 1.0:
            grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
            image = cv2.addWeighted(image, light.saturation, grey, 1.0 - light.saturation, 0.0)
        if light.vignette > 0:
            falloff = 1.0 - light.vignette * vignette_table(h, w)
            image = cv2.multiply(image, cv2.merge((falloff, falloff, falloff)), dtype=cv2.CV_8U)
        oy, ox = self.noise_window(rng)
        beta = light.noise_sigma / TABLE_SIGMA
        image = cv2.addWeighted(image, 1.0, self._noise[oy : oy + h, ox : ox + w], beta, -128.0 * beta)
        if light.jpeg_quality > 0:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(light.jpeg_quality)])
            if ok:
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return image
