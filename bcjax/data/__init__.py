"""Datasets -> one canonical dynamic graph; versions, splits, targets, sampling."""

from bcjax.data.datasets import load_dataset
from bcjax.data.graph import AttributeKind, DataError, DynamicGraph, build_graph
from bcjax.data.sampling import TripleSampler, numpy_rng
from bcjax.data.splits import PAPER_TIMES, VersionSplit, make_splits
from bcjax.data.targets import ItemStats, VersionTargets, item_stats, version_targets
