"""napari-regional-mil: multiple-instance learning on regional embeddings for whole-slide images.

The core (slide I/O, tissue, tiling, encoders, cache, models, training, inference,
heatmap maths) imports neither Qt nor napari; the dock widgets live in
:mod:`napari_regional_mil._widgets`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
