"""The record of one report image (an SVG drawn by analysis or by the report)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plot:
    """An image of the overview (SVG text is not part of the JSON record)."""

    name: str
    """File stem, e.g. unit_map."""
    title: str
    caption: str
    source: str
    """`analysis` (an SVG written by `miner analyze`) or `report` (drawn by the report from the tables)."""
    svg: str = field(default="", repr=False)
