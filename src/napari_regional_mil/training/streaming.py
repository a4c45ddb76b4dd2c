"""Training steps and inference bags streamed from the caches, with a prefetching loader.

A training step of the first model needs the selected patches of one slide (at most
``max_patches``), their grid neighbours, the slide's regional (and context) embeddings
and, for the selection, its region index, grid or tissue fraction. For a slide whose
embeddings stay on disk (:class:`~napari_regional_mil.embedding.store.StoredEmbeddings`,
see :mod:`.memory` for when), :class:`StepLoader` reads exactly that per step (the rows
through :meth:`~napari_regional_mil.embedding.store.StoreReader.rows`) into a compact
:class:`~napari_regional_mil.model.first_model.Bag` holding only those rows; a
background thread selects and reads the next steps while the optimiser works on the
current one (:data:`PREFETCH_STEPS` ahead), so training does not wait on the disk.

Results are bit for bit those of the in-memory path: the selection draws from the same
generator in the same order (the thread runs ahead within an epoch only, and the
"weighted" strategy's attention of a slide is observed one epoch before it is used
again); the compact bag feeds the model the same rows, regional embeddings and
neighbours (a missing neighbour, ``-1``, points at patch 0 in both), and the per-patch
layers see the same matrices. With ``regional_source="attention"`` the regional
embeddings need every patch, so such a step reads the whole slide (one slide at a time).

Validation and prediction see every patch: :class:`BagSequence` builds one slide's bag at
a time (read chunk by chunk), the next one read in the background.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch

from ..embedding.store import LazyEmbeddings
from ..embedding.types import SlideEmbeddings
from ..errors import TrainingError
from ..model.config import ModelConfig
from ..model.first_model import Bag, clinical_tensor, make_bag
from ..model.selection import PatchSelector, SelectionInputs, grid_neighbours
from .datasets import LabelledSlide
from .device import bag_to
from .memory import Moments, cached_moments, moments_of, remember_moments

__all__ = [
    "PREFETCH_STEPS",
    "BagSequence",
    "StepBatch",
    "StepLoader",
    "check_streamable",
    "is_streamed",
    "make_selector",
    "training_moments",
]

#: Training steps read ahead of the optimiser.
PREFETCH_STEPS = 4


def is_streamed(slide: LabelledSlide) -> bool:
    """Whether the slide's embeddings stay in its cache (read per step) rather than in memory."""
    return isinstance(slide.embeddings, LazyEmbeddings)


@dataclass(frozen=True, eq=False)
class StepBatch:
    """One training step's input.

    Parameters
    ----------
    index
        The training slide (index into the loader's slides).
    selected
        Sorted patch indices of the slide that the step shows (for the selector's ``observe``).
    bag
        The bag the model runs on (the whole slide, or only the rows the step needs).
    local
        ``selected`` as indices into ``bag``.
    """

    index: int
    selected: np.ndarray
    bag: Bag
    local: torch.Tensor


def make_selector(slides: Sequence[LabelledSlide], config: ModelConfig) -> PatchSelector:
    """The patch selection of a run: keeping the in-memory slides' inputs, or reading them per step when streamed."""
    regions = config.uses_regions
    if any(is_streamed(s) for s in slides):
        return PatchSelector(config.selection, None, regions=regions, sizes=[s.embeddings.n_patches for s in slides])
    return PatchSelector(config.selection, [_in_memory(s) for s in slides], regions=regions)


def _in_memory(slide: LabelledSlide) -> SlideEmbeddings:
    emb = slide.embeddings
    assert isinstance(emb, SlideEmbeddings)
    return emb


def check_streamable(slide: LabelledSlide, config: ModelConfig) -> None:
    """The checks :func:`~napari_regional_mil.model.first_model.make_bag` makes, from the store's attributes.

    Raises
    ------
    TrainingError
        An empty bag, another embedding dimension, or regions/context embeddings the model needs and the slide lacks.
    """
    emb = slide.embeddings
    name = slide.name
    if emb.n_patches == 0:
        raise TrainingError(f"slide {name!r}: empty bag (no patches)")
    if emb.embedding_dim != config.input_dim:
        raise TrainingError(
            f"slide {name!r}: embedding dimension {emb.embedding_dim} differs from the model's {config.input_dim}"
        )
    if config.uses_regions and not emb.has_regions:
        raise TrainingError(f"slide {name!r}: the regional model needs patch grid and regions; this bag has none")
    if config.uses_regions and isinstance(emb, LazyEmbeddings):
        missing = [k for k in config.context_dims if k not in emb.reader.context_names]
        if missing:
            raise TrainingError(f"slide {name!r}: no context embeddings {missing[0]!r} (the model was built with them)")


def _step_bag(
    slide: LabelledSlide, config: ModelConfig, selector: PatchSelector, i: int, rng: np.random.Generator,
    clinical: torch.Tensor | None,
) -> tuple[np.ndarray, Bag, torch.Tensor]:
    """Select one step's patches of a stored slide and read what the step needs."""
    emb = slide.embeddings
    assert isinstance(emb, LazyEmbeddings)
    reader = emb.reader
    reader.check()
    needed = set(selector.inputs_needed())
    regional_name = f"region_{config.regional_source}"
    compact = config.regional_source != "attention" and (not config.uses_regions or reader.has(regional_name))
    if config.uses_regions:
        needed.add("region_index")
    if config.uses_regions and config.selection.n_neighbours:
        needed.add("grid_xy")
    arrays = {name: reader.array(name) for name in sorted(needed) if reader.has(name)}
    inputs = SelectionInputs(
        reader.n_patches,
        region_index=np.asarray(arrays["region_index"], np.int64)
        if "region_index" in selector.inputs_needed() and "region_index" in arrays else None,
        grid_xy=arrays.get("grid_xy") if "grid_xy" in selector.inputs_needed() else None,
        tissue_fraction=None if "tissue_fraction" not in arrays else np.asarray(arrays["tissue_fraction"], np.float64),
    )
    selected = selector.select(i, rng, inputs)
    if not compact:  # regional embeddings by attention over every patch (or not cached): the whole slide
        return selected, make_bag(emb.load(), config, clinical=slide.clinical), torch.from_numpy(selected)
    neighbours = None
    parts = [selected]
    if config.uses_regions and config.selection.n_neighbours:
        neighbours = grid_neighbours(arrays["grid_xy"], config.selection.n_neighbours, rows=selected)
        parts.append(neighbours[neighbours >= 0])
        if (neighbours < 0).any():
            parts.append(np.zeros(1, np.int64))  # make_bag's -1 reads patch 0 (masked out); read it here too
    rows = np.unique(np.concatenate(parts))
    local = np.searchsorted(rows, selected)
    features = torch.from_numpy(reader.rows(rows))
    if not config.uses_regions:
        return selected, Bag(name=emb.slide_name, features=features, clinical=clinical), torch.from_numpy(local)
    region_index = np.asarray(arrays["region_index"], dtype=np.int64)[rows]
    n_regions = emb.n_regions
    regional = None
    if config.regional_source != "attention":
        cached = reader.array(regional_name, np.float32)
        if cached.shape[0] != n_regions:
            raise reader.error(f"has {cached.shape[0]} regional embeddings for {n_regions} regions")
        regional = torch.from_numpy(np.ascontiguousarray(cached))
    local_neighbours = None
    if neighbours is not None:
        table = np.full((rows.size, neighbours.shape[1]), -1, dtype=np.int64)
        table[local] = np.where(neighbours >= 0, np.searchsorted(rows, np.maximum(neighbours, 0)), -1)
        local_neighbours = torch.from_numpy(table)
    context = {key: torch.from_numpy(reader.array(f"context_{key}", np.float32)) for key in config.context_dims}
    bag = Bag(
        name=emb.slide_name, features=features, region_index=torch.from_numpy(region_index), regional=regional,
        neighbours=local_neighbours, context=context, clinical=clinical,
    )
    return selected, bag, torch.from_numpy(local)


class StepLoader:
    """The training steps of an epoch: in-memory bags, or compact bags read from the caches ahead of time.

    Parameters
    ----------
    slides
        The training slides (in memory, streamed, or both).
    config
        The model's configuration (what a bag holds).
    selector
        The patch selection (:class:`~napari_regional_mil.model.selection.PatchSelector`
        over the in-memory slides' embeddings, or keeping no inputs when some are streamed).
    prefetch
        Steps read ahead by the background thread (streamed slides only).

    Raises
    ------
    TrainingError, ClinicalError
        A slide the model cannot take (see :func:`check_streamable`, :func:`make_bag`).
    """

    def __init__(
        self, slides: Sequence[LabelledSlide], config: ModelConfig, selector: PatchSelector, *,
        prefetch: int = PREFETCH_STEPS,
    ) -> None:
        self.slides = list(slides)
        self.config = config
        self.selector = selector
        self.prefetch = max(1, int(prefetch))
        self.streamed = any(is_streamed(s) for s in self.slides)
        self.bags: list[Bag | None] = []
        self._clinical: list[torch.Tensor | None] = []
        for s in self.slides:
            if is_streamed(s):
                check_streamable(s, config)
                self.bags.append(None)
                self._clinical.append(clinical_tensor(s.name, config, s.clinical))
            else:
                self.bags.append(make_bag(_in_memory(s), config, clinical=s.clinical))
                self._clinical.append(None)

    def __len__(self) -> int:
        return len(self.slides)

    def to(self, device: torch.device) -> None:
        """Move the in-memory bags to ``device`` once (each step's compact bag is moved by the training loop)."""
        self.bags = [None if b is None else bag_to(b, device) for b in self.bags]

    def whole_bags(self) -> BagSequence:
        """The training slides' whole bags (every patch), sharing the in-memory bags."""
        return BagSequence(self.slides, self.config, kept=self.bags)

    def _batch(self, i: int, rng: np.random.Generator) -> StepBatch:
        bag = self.bags[i]
        if bag is not None:
            selected = self.selector.select(i, rng)
            return StepBatch(i, selected, bag, torch.from_numpy(selected))
        selected, step_bag, local = _step_bag(self.slides[i], self.config, self.selector, i, rng, self._clinical[i])
        return StepBatch(i, selected, step_bag, local)

    def epoch(self, order: Sequence[int] | np.ndarray, rng: np.random.Generator) -> Iterator[StepBatch]:
        """The steps of one epoch, slides in ``order``; ``rng`` draws the selections (in order).

        Closing the iterator early stops the background reader. An error reading a slide
        (:class:`~napari_regional_mil.errors.CacheError` naming the slide and the store)
        is raised at that slide's step.
        """
        if not self.streamed:
            for i in order:
                yield self._batch(int(i), rng)
            return
        results: queue.Queue[tuple[StepBatch | None, BaseException | None]] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            for i in order:
                if stop.is_set():
                    return
                try:
                    item: tuple[StepBatch | None, BaseException | None] = (self._batch(int(i), rng), None)
                except BaseException as exc:
                    item = (None, exc)
                while not stop.is_set():
                    try:
                        results.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if item[1] is not None:
                    return

        reader = threading.Thread(target=produce, name="step-reader", daemon=True)
        reader.start()
        try:
            for _ in range(len(order)):
                batch, error = results.get()
                if error is not None:
                    raise error
                assert batch is not None
                yield batch
        finally:
            stop.set()
            reader.join()


class BagSequence(Sequence[Bag]):
    """Whole-slide bags (every patch) of some slides, built one at a time; iteration reads the next in the background.

    In-memory slides' bags are built once; a streamed slide's bag is read from its cache
    (chunk by chunk) each time it is asked for and not kept.

    Parameters
    ----------
    slides
        The slides.
    config
        The model's configuration.
    kept
        Bags already built (one per slide, ``None`` for a streamed one).
    device
        Where the in-memory bags are kept (streamed ones are built on the CPU).
    """

    def __init__(
        self, slides: Sequence[LabelledSlide], config: ModelConfig, *, kept: Sequence[Bag | None] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.slides = list(slides)
        self.config = config
        self._kept: list[Bag | None] = []
        if kept is not None:
            self._kept = list(kept)
            return
        for s in self.slides:
            if is_streamed(s):
                check_streamable(s, config)
                self._kept.append(None)
            else:
                bag = make_bag(_in_memory(s), config, clinical=s.clinical)
                self._kept.append(bag if device is None else bag_to(bag, device))

    def __len__(self) -> int:
        return len(self.slides)

    def _build(self, i: int) -> Bag:
        kept = self._kept[i]
        if kept is not None:
            return kept
        slide = self.slides[i]
        emb = slide.embeddings
        assert isinstance(emb, LazyEmbeddings)
        emb.reader.check()
        return make_bag(emb.load(), self.config, clinical=slide.clinical)

    @overload
    def __getitem__(self, i: int) -> Bag: ...

    @overload
    def __getitem__(self, i: slice) -> list[Bag]: ...

    def __getitem__(self, i: int | slice) -> Bag | list[Bag]:
        if isinstance(i, slice):
            return [self._build(j) for j in range(len(self))[i]]
        return self._build(range(len(self))[i])

    def __iter__(self) -> Iterator[Bag]:
        if all(k is not None for k in self._kept):
            yield from (k for k in self._kept if k is not None)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-reader") as pool:
            upcoming = pool.submit(self._build, 0) if self.slides else None
            for i in range(len(self)):
                assert upcoming is not None
                bag = upcoming.result()
                upcoming = pool.submit(self._build, i + 1) if i + 1 < len(self) else None
                yield bag


def training_moments(loader: StepLoader) -> list[Moments]:
    """Every training slide's patch-embedding moments (:func:`~.memory.slide_moments`), in slide order.

    A streamed slide is read whole once (the next one read in the background while the
    current one is summed); the sums run in this thread, as for the in-memory path.
    """
    def read(i: int) -> np.ndarray | None:
        emb = loader.slides[i].embeddings
        if loader.bags[i] is not None or not isinstance(emb, LazyEmbeddings) or cached_moments(emb) is not None:
            return None
        emb.reader.check()
        return emb.reader.features()

    out = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="moments-reader") as pool:
        upcoming = pool.submit(read, 0) if loader.slides else None
        for i, slide in enumerate(loader.slides):
            assert upcoming is not None
            features = upcoming.result()
            upcoming = pool.submit(read, i + 1) if i + 1 < len(loader.slides) else None
            bag = loader.bags[i]
            emb = slide.embeddings
            if bag is not None:
                out.append(moments_of(bag.features))
            elif isinstance(emb, LazyEmbeddings):
                known = cached_moments(emb)
                if known is None:
                    assert features is not None
                    known = remember_moments(emb, moments_of(torch.from_numpy(features)))
                out.append(known)
    return out
