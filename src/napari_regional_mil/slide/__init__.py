"""Slide I/O (core, no Qt): open any tiffslide-readable whole-slide image.

>>> from napari_regional_mil.slide import open_slide
>>> with open_slide("CMU-1-Small-Region.svs") as slide:          # doctest: +SKIP
...     pyramid = slide.display_pyramid()                         # lazy dask levels
...     patch = slide.read_region((0, 0), 0, (256, 256))          # thread-safe
"""

from ..slide.core import DISPLAY_MIN_SIZE, Slide, open_slide
from ..slide.info import MPP_RANGE, SlideInfo

__all__ = ["open_slide", "Slide", "SlideInfo", "DISPLAY_MIN_SIZE", "MPP_RANGE"]
