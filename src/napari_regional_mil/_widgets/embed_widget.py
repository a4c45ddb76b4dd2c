"""The "Embed" dock widget: embed the active slide's patches with a frozen encoder.

Embedding runs :func:`~napari_regional_mil.embedding.pipeline.embed_slide` in a worker
(:mod:`._worker`) with a progress bar and Cancel; a complete cache is reused (nothing is
computed, the widget says so). Optional context encoders (several scales) then embed one
larger patch per region into the same cache, in the same job
(:func:`~napari_regional_mil.embedding.context.embed_contexts`, as ``embed --context-encoder``).
When done, a PCA of the patch embeddings is shown as an RGB overlay on the patch grid,
aligned with the slide (background patches transparent).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_regional_mil._widgets import _layers
from napari_regional_mil._widgets._devices import DeviceBox
from napari_regional_mil._widgets._encoder_fields import (
    ContextEncoderFields,
    EncoderFields,
)
from napari_regional_mil._widgets._fields import (
    PathPicker,
    TilingFields,
    form,
    scrollable_column,
)
from napari_regional_mil._widgets._progress_bar import JobProgressBar
from napari_regional_mil._widgets._state import follow, offer_encoder, viewer_state
from napari_regional_mil._widgets._worker import JobHandle, notify_error, start_job
from napari_regional_mil.embedding.folders import CACHE_FOLDER, default_cache_dir
from napari_regional_mil.embedding.pca import patch_rgba_grid, pca_rgb
from napari_regional_mil.errors import CacheError, SlideError
from napari_regional_mil.jobs import Progress

if TYPE_CHECKING:
    import napari.viewer
    from napari.layers import Layer
    from qtpy.QtGui import QShowEvent

__all__ = ["EmbedWidget"]


def _embed_job(slide_path: Path, grid_shape_of: Any, contexts: list | tuple = (), **kwargs: Any):
    """Job: embed (or find the cache), the context embeddings, then the PCA-to-RGB image of the patch grid.

    ``contexts``: ``(encoder, options, scale)`` each.
    """
    from napari_regional_mil.embedding.context import describe_context  # lazy: startup (zarr, in the worker)
    from napari_regional_mil.embedding.store import load_slide_embeddings  # lazy: startup (zarr, in the worker)
    from napari_regional_mil.embedding.workflow import (  # lazy: startup (zarr, in the worker)
        ContextRequest,
        embed_with_contexts,
    )
    from napari_regional_mil.encoders.hub import prefetch_job  # lazy: startup (huggingface_hub, in the worker)

    yield from prefetch_job(kwargs.get("encoder"), kwargs.get("encoder_options"))  # "download from the hub"
    requests = [ContextRequest(c[0], c[2], c[1] or None) for c in contexts]
    result, context_results = yield from embed_with_contexts(slide_path, contexts=requests, **kwargs)
    yield Progress("pca", 0, 1, message="PCA of the patch embeddings")
    emb = load_slide_embeddings(result.cache_path)
    if emb.grid_xy is None:
        raise CacheError(f"{result.cache_path}: the cache has no patch grid")
    step = float(emb.meta.get("patch_size_level0") or 0)
    if not step > 0:
        raise CacheError(f"{result.cache_path}: the cache does not record its patch size")
    rows, cols = (int(v) for v in (emb.meta.get("grid_shape") or grid_shape_of(step)))
    rows = max(rows, int(emb.grid_xy[:, 1].max()) + 1 if emb.n_patches else 0)
    cols = max(cols, int(emb.grid_xy[:, 0].max()) + 1 if emb.n_patches else 0)
    rgba = patch_rgba_grid(emb.grid_xy, pca_rgb(emb.features), (rows, cols))
    yield Progress("pca", 1, 1, message="done")
    return result, rgba, step, [(c, describe_context(c)) for c in context_results]


class EmbedWidget(QWidget):
    """Embed the active slide layer's tissue patches and show their PCA as an overlay.

    Parameters
    ----------
    viewer
        The napari viewer (napari passes it, recognised by the annotation).
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a public-only proxy
        self.viewer = viewer
        self.slide_layer: Layer | None = None
        self.job: JobHandle | None = None
        self.result: Any = None
        self.context_results: list[Any] = []
        self._cache_dir_auto = True
        self._applied_params: Any = None
        self.state = viewer_state(viewer)
        self._build()
        follow(self, self.state.slide_changed, self._on_slide_changed)
        follow(self, self.state.encoder_registered, lambda name: offer_encoder(self, name))
        self.refresh_slide()

    # -- UI ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.slide_label = QLabel()
        self.slide_label.setWordWrap(True)
        slide_box = QGroupBox("Slide")
        QVBoxLayout(slide_box).addWidget(self.slide_label)

        self.encoder = EncoderFields()
        enc_box = QGroupBox("Encoder (second model)")
        enc_layout = QVBoxLayout(enc_box)
        enc_layout.setContentsMargins(6, 6, 6, 6)
        enc_layout.addWidget(self.encoder)

        self.contexts = ContextEncoderFields()
        ctx_box = QGroupBox("Several scales (context encoders, optional)")
        ctx_box.setToolTip("Further encoders embedding one larger patch centred on each region, at 2 or 4 x the "
                           "patch µm/px; cached with the slide's embeddings and used by the Train widget.")
        ctx_layout = QVBoxLayout(ctx_box)
        ctx_layout.setContentsMargins(6, 6, 6, 6)
        ctx_layout.addWidget(self.contexts)

        self.fields = TilingFields()
        self.fields.setToolTip("Defaults come from the Slide widget's tiling of this slide.")
        tile_box = QGroupBox("Patches and regions")
        tile_layout = QVBoxLayout(tile_box)
        tile_layout.setContentsMargins(6, 6, 6, 6)
        tile_layout.addWidget(self.fields)

        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(64)
        self.batch_size.setToolTip("Patches per encoder forward pass.")
        self.device = DeviceBox(self.viewer, kind="embed-devices")
        self.device.setToolTip("Where the encoder runs (cuda only when a GPU is visible; chosen by default then).")
        self.cache_dir = PathPicker(caption="Embedding cache folder", directory=True, placeholder="cache folder")
        self.cache_dir.line.setToolTip(
            f"Where embeddings are cached (default: a '{CACHE_FOLDER}' folder next to the slide when writable, "
            "else your user cache). A complete cache is reused."
        )
        self.cache_dir.line.textEdited.connect(lambda *_: setattr(self, "_cache_dir_auto", False))
        self.cache_dir.picked.connect(lambda *_: setattr(self, "_cache_dir_auto", False))
        run_box = QGroupBox("Run")
        run_form = form(run_box)
        run_form.addRow("Batch size", self.batch_size)
        run_form.addRow("Device", self.device)
        run_form.addRow("Cache folder", self.cache_dir)

        self.embed_button = QPushButton("Embed")
        self.embed_button.setToolTip("Embed the slide's tissue patches (reuses a complete cache).")
        self.cancel_button = QPushButton("Cancel")
        self.embed_button.clicked.connect(self.embed)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.embed_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.progress = JobProgressBar()
        scrollable_column(self, slide_box, enc_box, tile_box, ctx_box, run_box, buttons, self.progress, self.status)
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.embed_button.setEnabled(not busy and self.slide_layer is not None)
        self.cancel_button.setEnabled(busy)

    # -- the slide ----------------------------------------------------------------------------
    def refresh_slide(self) -> None:
        """Follow the open slide (the viewer's): its name, mpp, tiling parameters and cache folder.

        The Slide widget's latest tiling parameters of the slide are taken over whenever
        they changed (on a new slide, when the slide is tiled again, or when this widget is
        shown again).
        """
        layer = self.state.slide_layer
        changed = layer is not self.slide_layer
        if changed:
            self._follow_metadata(self.slide_layer, False)
            self._follow_metadata(layer, True)
        self.slide_layer = layer
        if changed:
            self._set_busy(self.job is not None and self.job.running)
        if layer is None:
            self.slide_label.setText("<i>Open a slide (Slide widget or drag and drop).</i>")
            return
        path = _layers.slide_path_of(layer)
        mpp = _layers.layer_mpp(layer)
        warn = "<span style='color:#e0a800'>no mpp: set it in the Slide widget</span>"
        self.slide_label.setText(f"<b>{path.name}</b><br>{f'{mpp[0]:.4g} µm/px' if mpp else warn}")
        self.slide_label.setToolTip(str(path))
        if changed and self._cache_dir_auto:
            self.cache_dir.set_text(str(default_cache_dir(path)))
        params = _layers.tiling_params_of(layer)
        if params is not None and params != self._applied_params:
            self.fields.set_params(params)
            self._applied_params = params

    def _on_slide_changed(self, layer: Layer | None = None) -> None:
        self.refresh_slide()

    def _follow_metadata(self, layer: Layer | None, on: bool) -> None:
        """(Dis)connect :meth:`refresh_slide` to a slide layer's ``events.metadata`` (mpp, tiling)."""
        events = getattr(getattr(layer, "events", None), "metadata", None)
        if events is None:
            return
        if on:
            events.connect(self._on_slide_changed)
        else:
            events.disconnect(self._on_slide_changed)

    def showEvent(self, event: QShowEvent) -> None:
        """Take over the Slide widget's latest settings when shown."""
        super().showEvent(event)
        self.refresh_slide()

    # -- running ----------------------------------------------------------------------------
    def embed(self) -> None:
        """Embed the slide in a worker; on success show the PCA overlay."""
        self.refresh_slide()
        layer = self.slide_layer
        if layer is None:
            notify_error(SlideError("open a slide first"))
            return
        path = _layers.slide_path_of(layer)
        mpp = _layers.layer_mpp(layer)
        if mpp is None:
            notify_error(SlideError(f"{path.name}: the slide has no mpp; set it in the Slide widget first"))
            return
        try:
            encoder, options = self.encoder.choice()
            params = self.fields.params()
            cache_dir = self.cache_dir.path()
            if cache_dir is None:
                raise CacheError("choose a cache folder")
        except Exception as exc:
            notify_error(exc, context="Embed")
            return
        width, height = (layer.metadata.get("slide_info") or {}).get("dimensions", (0, 0))

        def grid_shape_of(step: float) -> tuple[int, int]:
            return (math.floor(height / step), math.floor(width / step))

        kwargs = {
            "cache_dir": cache_dir,
            "tiling_params": params,
            "encoder": encoder,
            "encoder_options": options or None,
            "batch_size": int(self.batch_size.value()),
            "device": self.device.currentText(),
            "mpp": (mpp[0] + mpp[1]) / 2,
            "tissue_mask": _layers.tissue_mask_of(self.viewer, layer, only_if_edited=True),
        }
        contexts = self.contexts.requests()
        self.context_results = []
        self.status.setText(f"Embedding with {self.encoder.describe()}...")
        self.job = start_job(
            lambda: _embed_job(path, grid_shape_of, contexts, **kwargs),
            kind="embed",
            description=f"Embedding {path.name}",
            on_result=lambda out: self._show_result(layer, out),
            on_progress=self._on_progress,
            on_finish=self._on_finish,
            viewer=self.viewer,
            owner=self,
            progress_bar=self.progress,
        )
        if self.job is not None:
            self._set_busy(True)

    def _on_progress(self, event: object) -> None:
        if isinstance(event, Progress) and event.stage == "download":
            size = f": {event.done / 1e6:,.0f} / {event.total / 1e6:,.0f} MB" if event.total else ""
            self.status.setText(f"{event.message}{size}")
        elif isinstance(event, Progress) and event.stage == "embed" and event.total:
            rate = f", {event.rate:.1f} patches/s" if event.rate else ""
            self.status.setText(f"Embedding: {event.done:,} / {event.total:,} patches{rate}")
        elif isinstance(event, Progress) and event.stage == "context" and event.total:
            self.status.setText(f"Context embeddings: {event.done:,} / {event.total:,} regions ({event.message})")

    def _on_finish(self, status: str) -> None:
        self._set_busy(False)
        if status == "cancelled":
            self.status.setText("Cancelled: the partial cache is kept and resumed next time.")
        elif status == "failed":
            self.status.setText("Failed (see the notification).")

    def _show_result(self, layer: Any, out: tuple[Any, Any, float, list[tuple[Any, str]]]) -> None:
        result, rgba, step, described = out
        self.result, self.context_results = result, [c for c, _ in described]
        if layer not in self.viewer.layers:
            return
        _layers.show_grid_rgba(self.viewer, layer, rgba, step, "embedding PCA")
        self.viewer.layers.selection.active = layer
        how = (
            "cache found and reused (nothing computed)"
            if not result.computed
            else f"computed at {result.rate:.1f} patches/s"
        )
        if result.computed and result.resumed_from:
            how += f", resumed after {result.resumed_from:,} cached patches"
        contexts = "".join(f"<br>{line}" for _, line in described)
        self.status.setText(
            f"<b>{result.n_patches:,}</b> patches, <b>{result.n_regions:,}</b> regions, "
            f"{result.embedding_dim}-d ({result.encoder}): {how}.{contexts}<br>Cache: {result.cache_path}"
        )
        self.status.setToolTip(str(result.cache_path))

    def cancel(self) -> None:
        """Cancel the running embedding (the cache stays consistent and resumable)."""
        if self.job is not None:
            self.job.cancel()
