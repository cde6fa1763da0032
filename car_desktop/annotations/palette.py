"""Stable category colours: a fixed palette indexed by category id, so a concept keeps its colour
across sessions, exports and machines without storing anything (a user recolour is stored instead)."""

from __future__ import annotations

# Glasbey-like, high-contrast on photos; black and white are left out (they read as "no label").
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def color_for_id(category_id: int) -> tuple[int, int, int]:
    """The default colour of category ``category_id`` (1-based ids; any int works)."""
    return PALETTE[(category_id - 1) % len(PALETTE)]


def parse_color(value: str | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """Accept '#rrggbb' or an (r, g, b) triple; raise ValueError otherwise."""
    if isinstance(value, str):
        s = value.strip().lstrip("#")
        if len(s) != 6:
            raise ValueError(f"colour {value!r} is not #rrggbb")
        return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))
    r, g, b = (int(v) for v in value)
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour {value!r} has a channel outside 0..255")
    return (r, g, b)


def format_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
