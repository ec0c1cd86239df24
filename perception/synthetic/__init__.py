"""The synthetic road world: procedural, seeded driving scenes with exact per-pixel labels."""

from perception.synthetic.classes import IGNORE_ID, SYNTHETIC_CLASSES

__all__ = ["IGNORE_ID", "SYNTHETIC_CLASSES"]
