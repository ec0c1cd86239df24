"""The synthetic renderer: scene -> BGR image + exact per-pixel labels.

    image, label = Renderer(height, width).render(scene, rng, noise=True)

How labels stay exact: everything is drawn once, into a single uint8 *material* map (each material
is a colour plus a class id), with ``cv2.fillPoly`` / ``cv2.circle`` and no anti-aliasing, painting
far things first so that nearer ones cover them. The label map and the clean image are then two
table look-ups of that same map (``cv2.LUT``), so the class at every pixel is by construction the
class of the thing whose colour is drawn there.

Modules, in drawing order: ``projection`` (road coordinates -> pixels), ``raster`` (materials and
fills), ``sky``, ``ground`` (road, paint, shadows), ``roadside`` (buildings, trees, poles, signs),
``traffic`` (vehicles, pedestrians, cyclists), ``atmosphere`` (night lights, glow, wet roads, fog,
rain: image only), ``lens`` (roll and distortion of image and labels together, the ego hood),
``sensor`` (texture, blur, white balance, gamma, vignetting, noise, JPEG: image only) and
``renderer`` (the frame, putting the stages together).
"""

from perception.synthetic.render.renderer import Renderer

__all__ = ["Renderer"]
