"""The wsidicom backend: DICOM whole-slide images (a folder of instances, or one file).

Levels are the selected pyramid's levels (largest first); regions are read with
``WsiDicom.read_region`` in each level's own pixels, clipped to the level and padded
with white. Labels, overviews and thumbnails become the associated images ``label``,
``macro`` and ``thumbnail``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SlideError
from .backend import BackendHeader, LevelSource, RegionLevel, SlideBackend, to_rgb

__all__ = ["WsiDicomBackend"]


def _metadata_properties(wsi: Any) -> tuple[dict[str, Any], float | None]:
    """A few descriptive properties and the objective power, when the metadata has them."""
    props: dict[str, Any] = {}
    power: float | None = None
    meta: Any = None
    with contextlib.suppress(Exception):  # metadata the library cannot model: none shown
        meta = wsi.metadata
    if meta is None:
        return props, power
    for key, getter in (
        ("dicom.manufacturer", lambda: meta.equipment.manufacturer),
        ("dicom.model-name", lambda: meta.equipment.model_name),
        ("dicom.slide-identifier", lambda: meta.slide.identifier),
        ("dicom.study-uid", lambda: str(meta.study.uid) if meta.study.uid else None),
    ):
        value = None
        with contextlib.suppress(Exception):  # optional metadata of any shape
            value = getter()
        if value:
            props[key] = str(value)
    with contextlib.suppress(Exception):
        power = float(meta.optical_paths[0].objective.objective_power)
    return props, power


class WsiDicomBackend(SlideBackend):
    """A DICOM WSI read with wsidicom.

    Parameters
    ----------
    path
        A folder of DICOM instances, or one DICOM file.
    """

    name = "wsidicom"

    def __init__(self, path: Path) -> None:
        from wsidicom import WsiDicom  # lazy: startup (a vendor reader, loaded when a DICOM slide is opened)

        super().__init__(path)
        self._wsi = WsiDicom.open(path)
        try:
            self._open()
            self._check_complete()
        except BaseException:
            self._wsi.close()
            raise

    def _open(self) -> None:
        wsi = self._wsi
        levels = sorted(wsi.levels, key=lambda lvl: lvl.level)
        self._levels = levels
        base = levels[0]
        w0, h0 = int(base.size.width), int(base.size.height)
        dims = tuple((int(lvl.size.width), int(lvl.size.height)) for lvl in levels)
        from wsidicom.errors import WsiDicomNoResolutionError  # lazy: startup (a vendor reader)

        try:
            mpp: tuple[float, float] | None = (float(base.mpp.width), float(base.mpp.height))
        except WsiDicomNoResolutionError:  # no pixel spacing stored
            mpp = None
        props, power = _metadata_properties(wsi)
        props["dicom.level-count"] = len(levels)
        props["dicom.pyramid-levels"] = ",".join(str(lvl.level) for lvl in levels)
        tile = base.tile_size
        self.header = BackendHeader(
            vendor="dicom",
            level_dimensions=dims,
            level_downsamples=tuple(((w0 / w) + (h0 / h)) / 2 for w, h in dims),
            mpp=mpp,
            objective_power=power,
            tile_size=(int(tile.width), int(tile.height)),
            properties=props,
        )

    def _check_complete(self) -> None:
        """Every level holds all its frames (no concatenation part missing) and level 0 is original.

        Raises
        ------
        SlideError
            Naming the folder, the level and how many frames (or which part) are missing.
        """
        for index, level in enumerate(self._levels):
            for instance in level.instances.values():
                datasets = list(instance.datasets)
                first = datasets[0]
                if not first.states_tiled_full:
                    continue
                tiles = instance.tiled_size
                expected = tiles.width * tiles.height * len(instance.focal_planes) * len(instance.optical_paths)
                have = sum(int(ds.frame_count) for ds in datasets)
                if have < expected:
                    raise SlideError(
                        f"{self.path}: DICOM WSI is missing an instance: level {index} holds {have} of its "
                        f"{expected} frames in {len(datasets)} file(s) (a part of a concatenated level is missing)"
                    )
        image_type: list[str] = []
        with contextlib.suppress(Exception):  # no readable ImageType: nothing to say
            image_type = [str(v).upper() for v in self._levels[0].default_instance.dataset.as_dataset().ImageType]
        if len(image_type) > 3 and image_type[3] == "RESAMPLED":
            raise SlideError(
                f"{self.path}: DICOM WSI is missing an instance: its largest level is a resampled one "
                f"({self._levels[0].size.width} x {self._levels[0].size.height} px); the full-resolution "
                "instance is not in the folder"
            )

    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """A region in ``level``'s own pixels, clipped to the level and padded with white."""
        lw, lh = self.header.level_dimensions[level]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(lw, x + width), min(lh, y + height)
        out = np.full((height, width, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            region = self._wsi.read_region((x0, y0), self._levels[level].level, (x1 - x0, y1 - y0), as_array=True)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = to_rgb(region)
        return out

    def level_sources(self) -> list[LevelSource]:
        """One :class:`RegionLevel` per level, tiled as the DICOM frames."""
        out = []
        for level, (w, h) in enumerate(self.header.level_dimensions):
            tile = self._levels[level].tile_size

            def read(x: int, y: int, width: int, height: int, level: int = level) -> np.ndarray:
                return self._read_level(level, x, y, width, height)

            chunks = (min(int(tile.height), h), min(int(tile.width), w))
            out.append(LevelSource(RegionLevel(read, w, h), chunks))
        return out

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """``(h, w, 3)`` uint8 at ``location`` (level-0 px) of ``level``."""
        ds = self.header.level_downsamples[level]
        x, y = round(int(location[0]) / ds), round(int(location[1]) / ds)
        return self._read_level(level, x, y, int(size[0]), int(size[1]))

    def associated_names(self) -> tuple[str, ...]:
        """``label``, ``macro`` (an overview) and ``thumbnail`` when present."""
        names = []
        if self._wsi.labels is not None:
            names.append("label")
        if self._wsi.overviews is not None:
            names.append("macro")
        with contextlib.suppress(Exception):
            if self._wsi.pyramid.thumbnails is not None and len(self._wsi.pyramid.thumbnails):
                names.append("thumbnail")
        return tuple(names)

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image as RGB uint8."""
        if name == "label":
            return to_rgb(self._wsi.read_label(as_array=True))
        if name == "macro":
            return to_rgb(self._wsi.read_overview(as_array=True))
        if name == "thumbnail":
            return to_rgb(self._wsi.read_thumbnail(as_array=True))
        raise KeyError(name)

    def close(self) -> None:
        """Close the DICOM files."""
        with contextlib.suppress(Exception):  # closing must not raise
            self._wsi.close()
