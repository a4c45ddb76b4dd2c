"""Slide I/O (core, no Qt): open a whole-slide image with the backend its content calls for.

tiffslide (TIFF-based slides), OpenSlide (MIRAX, BIF, VMS, Philips, SVSlide...) and
wsidicom (DICOM WSI, a folder or a file) behind one interface: lazy display pyramid,
thread-safe region reads, associated images and mpp. The supported suffixes are in
:mod:`.formats`.

>>> from napari_regional_mil.slide import open_slide
>>> with open_slide("CMU-1-Small-Region.svs") as slide:          # doctest: +SKIP
...     slide.info.backend                                        # "tiffslide"
...     pyramid = slide.display_pyramid()                         # lazy dask levels
...     patch = slide.read_region((0, 0), 0, (256, 256))          # thread-safe
"""

from ..slide.core import DISPLAY_MIN_SIZE, Slide, open_slide
from ..slide.formats import SLIDE_SUFFIXES
from ..slide.info import MPP_RANGE, SlideInfo

__all__ = ["DISPLAY_MIN_SIZE", "MPP_RANGE", "SLIDE_SUFFIXES", "Slide", "SlideInfo", "open_slide"]
