"""Road users: cars, vans and trucks (side face, rear or front, lamps, plate, rims, underbody), pedestrians and cyclists.

Each ``draw_*`` paints one road user into the material map; the renderer calls them in painter's
order (furthest first).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from perception.synthetic.render.projection import NEAR_CLIP_M, View
from perception.synthetic.render.raster import CLASS_ID, SCALE, SHIFT, Palette, fill, rects
from perception.synthetic.world import Person, Scene, Vehicle

#: Vehicles nearer than this get the road-tinted lower panels (further ones are a few pixels tall).
LOW_PANEL_MAX_M = 30.0
#: The road-tinted band ends at most this high (a box truck's side is not all lower panel).
LOW_PANEL_TOP_M = 0.75


def draw_vehicle(mat: np.ndarray, scene: Scene, view: View, pal: Palette, v: Vehicle) -> None:
    """A vehicle: its visible side, then the face towards the camera (rear or front) with lamps and plate."""
    if v.d_m < NEAR_CLIP_M:
        return
    road = scene.road
    s_c = road.lane_centre(v.lane) + v.lateral_m
    u, vg, k = view.anchor(s_c, v.d_m)
    half = v.width_m / 2
    body_bgr = np.asarray(v.body_bgr, np.float32)
    car = CLASS_ID["car"]
    body = pal.object(body_bgr, car)
    side_body = pal.object(body_bgr * 0.78, car)
    glass = pal.object((45, 40, 38), car)
    trim = pal.object((35, 35, 38), car)
    tyre = pal.object((22, 22, 24), car)
    # Real paint is glossy: the lower panels mirror the road and sit in the body's own shade, the
    # gap under the body is near black, and wheels show rims (silver or dark; from the body colour,
    # so the world's random stream is unchanged). Annotated datasets draw a vehicle's outline from
    # the bumpers down to the tyres, so the gap between the wheels is labelled car too. The panel
    # tint takes two palette slots per vehicle, so only vehicles near enough to show it get it (a
    # full palette would draw the nearest objects, painted last, in stand-in colours).
    if v.d_m < LOW_PANEL_MAX_M:
        low_bgr = (0.6 * body_bgr + 0.4 * np.asarray(road.asphalt_bgr, np.float32)) * 0.8
        body_low, side_low = pal.object(low_bgr, car), pal.object(low_bgr * 0.78, car)
    else:
        body_low, side_low = body, side_body
    underbody = pal.object((14, 14, 16), car)
    rim = pal.object((150, 152, 156) if int(body_bgr.sum()) % 3 else (60, 60, 64), car)
    truck = v.kind in ("truck", "bus")  # box bodies: the side face runs the full height
    bus = v.kind == "bus"
    belt = v.height_m * (0.58 if v.kind in ("sedan", "suv", "hatchback", "pickup") else 0.5)
    # Visible side face (from the face towards us back to the far end of the vehicle).
    x_c = view.lateral(s_c, v.d_m)
    if abs(x_c) > half:
        s_side = s_c - half if x_c > 0 else s_c + half
        far = v.d_m + v.length_m
        top = v.height_m if truck else belt
        span = np.array([v.d_m, far])
        # The shadowed gap and the sill between the tyres' outer edges (the road shows under the
        # overhangs), then the door panels: the lower part reflects the road.
        between_tyres = np.array([v.d_m + 0.55, far - 0.55])
        fill(mat, view.strip(s_side, s_side, between_tyres, 0.0, 0.3), underbody)
        fill(mat, view.strip(s_side, s_side, between_tyres, 0.18, 0.32), trim)
        low = min(0.3 + 0.4 * (top - 0.3), LOW_PANEL_TOP_M)
        fill(mat, view.strip(s_side, s_side, span, 0.3, low), side_low)
        fill(mat, view.strip(s_side, s_side, span, low, top), side_body)
        if bus:  # a band of passenger windows
            fill(mat, view.strip(s_side, s_side, np.array([v.d_m + 0.4, far - 0.4]), 1.25, v.height_m - 0.3), glass)
        elif not truck:
            cab = np.array([v.d_m + 0.3 * v.length_m, v.d_m + 0.8 * v.length_m])
            fill(mat, view.strip(s_side, s_side, cab, belt, v.height_m * 0.93), glass)
        for dw in (v.d_m + 0.9, far - 0.9):
            fill(mat, view.strip(s_side, s_side, np.array([dw - 0.35, dw + 0.35]), 0.0, 0.6), tyre)
            fill(mat, view.strip(s_side, s_side, np.array([dw - 0.2, dw + 0.2]), 0.12, 0.48), rim)
    # The face towards the camera: rear of same-direction traffic, front of oncoming traffic.
    wheel_w = 0.24
    wheels = np.array([[-half + 0.05, -half + 0.05 + wheel_w, 0.0, 0.5], [half - 0.05 - wheel_w, half - 0.05, 0.0, 0.5]])
    fill(mat, rects(u, vg, k, np.array([[-half + 0.05, half - 0.05, 0.0, 0.3]])), underbody)
    fill(mat, rects(u, vg, k, wheels), tyre)
    fill(mat, rects(u, vg, k, np.array([[-half, half, 0.28, 0.5]])), trim)
    face_top = v.height_m if truck else belt
    panel = min(0.48 + 0.35 * (face_top - 0.48), LOW_PANEL_TOP_M)
    fill(mat, rects(u, vg, k, np.array([[-half, half, 0.48, panel]])), body_low)
    fill(mat, rects(u, vg, k, np.array([[-half, half, panel, face_top]])), body)
    if bus:  # windscreen (front) or rear window
        low = 1.0 if v.oncoming else 1.9
        fill(mat, rects(u, vg, k, np.array([[-half + 0.12, half - 0.12, low, v.height_m - 0.25]])), glass)
        fill(mat, rects(u, vg, k, np.array([[-half + 0.3, half - 0.3, v.height_m - 0.22, v.height_m - 0.05]])), trim)
    elif truck:
        fill(mat, rects(u, vg, k, np.array([[-0.02, 0.02, 0.5, v.height_m - 0.05]])), trim)
    else:
        inset = 0.12 if v.kind != "van" else 0.05
        top = v.height_m
        cabin = np.array([[u + (-half + 0.05) * k, vg - belt * k], [u + (half - 0.05) * k, vg - belt * k],
                          [u + (half - 0.05 - 2 * inset) * k, vg - top * k], [u + (-half + 0.05 + 2 * inset) * k, vg - top * k]])
        fill(mat, cabin, body)
        wy0, wy1 = belt + 0.06, top - 0.08
        win = np.array([[u + (-half + 0.15) * k, vg - wy0 * k], [u + (half - 0.15) * k, vg - wy0 * k],
                        [u + (half - 0.1 - 2 * inset) * k, vg - wy1 * k], [u + (-half + 0.1 + 2 * inset) * k, vg - wy1 * k]])
        fill(mat, win, glass)
        # Roof edge catching the sky light: a lighter strip, so a car's outline reads against trees.
        roof = pal.object(np.minimum(body_bgr * 1.2 + 25, 255), car)
        fill(mat, np.array([win[3], win[2], cabin[2], cabin[3]]), roof)
    night = scene.lighting.time_of_day in ("night", "dusk") and not v.parked
    if v.oncoming:
        lamp = pal.object((225, 245, 255) if night else (200, 210, 215), car, emissive=night)
    else:
        lamp = pal.object((40, 40, 255) if night else (30, 30, 170), car, emissive=night)
    ly = 0.62 if truck else belt - 0.25
    lights = np.array([[-half + 0.06, -half + 0.36, ly, ly + 0.16], [half - 0.36, half - 0.06, ly, ly + 0.16]])
    fill(mat, rects(u, vg, k, lights), lamp)
    plate = pal.object((220, 225, 225) if not v.oncoming else (210, 215, 215), car)
    fill(mat, rects(u, vg, k, np.array([[-0.26, 0.26, 0.32, 0.46]])), plate)


def draw_pedestrian(mat: np.ndarray, view: View, pal: Palette, p: Person) -> None:
    """A pedestrian facing the camera, legs swinging with the walking phase; build, coat and bag vary."""
    u, vg, k = view.anchor(p.s_m, p.d_m)
    h = p.height_m
    ped = CLASS_ID["pedestrian"]
    w = h / 1.75 * p.build
    swing = math.sin(p.phase) * (0.22 if p.crossing else 0.05) * w
    pants = pal.object(p.pants_bgr, ped)
    shirt = pal.object(p.shirt_bgr, ped)
    skin = pal.object(p.skin_bgr, ped)
    hair = pal.object((25, 28, 32), ped)
    hip = 0.5 * h
    for side, sw in ((-1, swing), (1, -swing)):
        leg = np.array([[u + (side * 0.03 - 0.065) * w * k, vg - hip * k], [u + (side * 0.03 + 0.075) * w * k, vg - hip * k],
                        [u + (side * 0.08 + sw + 0.06) * w * k, vg], [u + (side * 0.08 + sw - 0.06) * w * k, vg]])
        fill(mat, leg, pants)
    if p.bag:  # a backpack or shoulder bag sticking out at one side
        bag = pal.object(np.asarray(p.pants_bgr, np.float32) * 0.6 + 20, ped)
        fill(mat, rects(u, vg, k, np.array([[0.12 * w, 0.33 * w, 0.5 * h, 0.72 * h]])), bag)
    low = 0.28 * h if p.coat else hip - 0.03 * h
    torso = np.array([[u - 0.19 * w * k, vg - 0.82 * h * k], [u + 0.19 * w * k, vg - 0.82 * h * k],
                      [u + (0.26 if p.coat else 0.19) * w * k, vg - low * k], [u - (0.26 if p.coat else 0.19) * w * k, vg - low * k]])
    fill(mat, torso, shirt)
    arm_swing = 0.6 * swing
    for side in (-1, 1):
        x0 = side * 0.19 * w
        x1 = side * 0.27 * w
        arm = np.array([[u + x0 * k, vg - 0.8 * h * k], [u + x1 * k, vg - 0.8 * h * k],
                        [u + (x1 + side * arm_swing * 0.3) * k, vg - 0.47 * h * k],
                        [u + (x0 + side * arm_swing * 0.3) * k, vg - 0.47 * h * k]])
        fill(mat, arm, shirt)
    fill(mat, rects(u, vg, k, np.array([[-0.03 * w, 0.03 * w, 0.8 * h, 0.86 * h]])), skin)
    centre = (int(u * SCALE), int((vg - 0.915 * h * k) * SCALE))
    radius = max(1, int(0.068 * h * k * SCALE))
    cv2.circle(mat, centre, radius, skin, -1, cv2.LINE_8, SHIFT)
    cv2.ellipse(mat, centre, (radius, radius), 0, 180, 360, hair, -1, cv2.LINE_8, SHIFT)


def draw_cyclist(mat: np.ndarray, view: View, pal: Palette, p: Person) -> None:
    """A cyclist: side view when crossing, else seen from behind, pedalling with the phase."""
    u, vg, k = view.anchor(p.s_m, p.d_m)
    cyc = CLASS_ID["cyclist"]
    shirt = pal.object(p.shirt_bgr, cyc)
    pants = pal.object(p.pants_bgr, cyc)
    frame = pal.object((40, 40, 160), cyc)
    tyre = pal.object((25, 25, 25), cyc)
    helmet = pal.object((230, 230, 230), cyc)
    skin = pal.object(p.skin_bgr, cyc)
    pedal = 0.15 * math.sin(p.phase)
    if p.crossing:
        # Side view: two wheels, the frame and the rider leaning over the bars.
        direction = 1.0 if p.vs_mps > 0 else -1.0
        r = 0.34
        thick = max(1, int(0.06 * k))
        for x in (-0.52, 0.52):
            c = (int((u + x * k) * SCALE), int((vg - r * k) * SCALE))
            cv2.circle(mat, c, max(1, int(r * k * SCALE)), tyre, thick, cv2.LINE_8, SHIFT)
        pts = np.array([[-0.52, r], [-0.1, 0.95], [0.45, 0.95], [0.52, r], [0.0, 0.35]]) * [direction, 1.0]
        px = (u + pts[:, 0] * k).astype(np.float64)
        py = (vg - pts[:, 1] * k).astype(np.float64)
        for a, b in ((0, 1), (1, 4), (4, 0), (1, 2), (2, 3), (2, 4)):
            cv2.line(mat, (int(px[a] * SCALE), int(py[a] * SCALE)), (int(px[b] * SCALE), int(py[b] * SCALE)),
                     frame, thick, cv2.LINE_8, SHIFT)
        torso = np.array([[-0.2, 0.95], [0.0, 0.95], [0.35 * direction + 0.1, 1.5], [0.35 * direction - 0.12, 1.5]])
        torso[:2, 0] *= direction
        fill(mat, np.stack([u + torso[:, 0] * k, vg - torso[:, 1] * k], 1), shirt)
        leg = np.array([[-0.15 * direction, 0.98], [0.0, 0.95], [pedal + 0.04, 0.3], [pedal - 0.04, 0.3]])
        fill(mat, np.stack([u + leg[:, 0] * k, vg - leg[:, 1] * k], 1), pants)
        head = (int((u + 0.38 * direction * k) * SCALE), int((vg - 1.62 * k) * SCALE))
    elif p.motorbike:
        # A motorcycle from behind: fat tyre, body and tail light, the rider sitting upright.
        body = pal.object(np.asarray(p.pants_bgr, np.float32) * 0.5 + 15, cyc)
        fill(mat, rects(u, vg, k, np.array([[-0.08, 0.08, 0.0, 0.65]])), tyre)
        fill(mat, rects(u, vg, k, np.array([[-0.28, 0.28, 0.45, 0.95]])), body)
        fill(mat, rects(u, vg, k, np.array([[-0.06, 0.06, 0.7, 0.78]])), pal.object((30, 30, 200), cyc))
        fill(mat, rects(u, vg, k, np.array([[-0.32, -0.16, 0.45, 1.0], [0.16, 0.32, 0.45, 1.0]])), pants)
        fill(mat, rects(u, vg, k, np.array([[-0.22, 0.22, 0.95, 1.5]])), shirt)
        fill(mat, rects(u, vg, k, np.array([[-0.36, -0.22, 1.1, 1.4], [0.22, 0.36, 1.1, 1.4]])), shirt)
        head = (int(u * SCALE), int((vg - 1.62 * k) * SCALE))
        radius = max(1, int(0.15 * k * SCALE))
        cv2.circle(mat, head, radius, pal.object(np.asarray(p.shirt_bgr, np.float32) * 0.4 + 20, cyc), -1, cv2.LINE_8, SHIFT)
        return
    else:
        # Seen from behind: the rear wheel edge-on, legs pedalling, back and helmet.
        fill(mat, rects(u, vg, k, np.array([[-0.025, 0.025, 0.0, 0.7]])), tyre)
        fill(mat, rects(u, vg, k, np.array([[-0.06, 0.06, 0.55, 0.9], [-0.3, 0.3, 1.05, 1.09]])), frame)
        for side in (-1, 1):
            y_foot = 0.35 + side * pedal
            leg = np.array([[u + side * 0.02 * k, vg - 0.95 * k], [u + side * 0.16 * k, vg - 0.95 * k],
                            [u + side * 0.14 * k, vg - y_foot * k], [u + side * 0.06 * k, vg - y_foot * k]])
            fill(mat, leg, pants)
        torso = np.array([[-0.18, 0.18, 0.9, 1.42]])
        fill(mat, rects(u, vg, k, torso), shirt)
        fill(mat, rects(u, vg, k, np.array([[-0.3, -0.18, 1.05, 1.38], [0.18, 0.3, 1.05, 1.38]])), skin)
        head = (int(u * SCALE), int((vg - 1.55 * k) * SCALE))
    radius = max(1, int(0.12 * k * SCALE))
    cv2.circle(mat, head, radius, skin, -1, cv2.LINE_8, SHIFT)
    cv2.ellipse(mat, head, (radius, radius), 0, 180, 360, helmet, -1, cv2.LINE_8, SHIFT)
