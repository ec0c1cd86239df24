"""The class table of the synthetic road world (ids, names, colours, task groups)."""

from __future__ import annotations

from perception.contracts import ClassInfo, ClassTable

#: Label value for pixels that count in no loss or metric (none are drawn by the generator, but
#: augmentation pads crops with it).
IGNORE_ID = 255

SYNTHETIC_CLASSES = ClassTable(
    classes=(
        ClassInfo(0, "road", (128, 64, 128)),
        ClassInfo(1, "lane_marking", (255, 255, 255)),
        ClassInfo(2, "sidewalk", (244, 35, 232)),
        ClassInfo(3, "building", (70, 70, 70)),
        ClassInfo(4, "vegetation", (107, 142, 35)),
        ClassInfo(5, "sky", (70, 130, 180)),
        ClassInfo(6, "pole", (153, 153, 153)),
        ClassInfo(7, "traffic_sign", (220, 220, 0)),
        ClassInfo(8, "car", (0, 0, 142)),
        ClassInfo(9, "pedestrian", (220, 20, 60)),
        ClassInfo(10, "cyclist", (119, 11, 32)),
        # The ego car's own hood (Cityscapes' "ego vehicle"): in no task group, so a model that
        # sees its hood calls it neither drivable nor an obstacle.
        ClassInfo(11, "ego_vehicle", (81, 0, 81)),
    ),
    ignore_id=IGNORE_ID,
    task_groups={
        # Lane paint lies on the road surface, so it is drivable too.
        "drivable": ("road", "lane_marking"),
        "lane": ("lane_marking",),
        "obstacle": ("car", "pedestrian", "cyclist", "pole"),
    },
)
