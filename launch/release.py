"""The release gate of an embedding store, from the command line.

  python -m launch.release check --store=STORE --candidate=FILE.npz
  python -m launch.release publish --store=STORE --candidate=FILE.npz [--force]
  python -m launch.release register --store=STORE --kind=classifier \
      --name=NAME --version=J --consumer=FILE.npz [--head=FILE.msgpack --hidden=H]
  python -m launch.release register --store=STORE --kind=index \
      --name=NAME --version=J --consumer=FILE.npz [--k=50]

`check` prints the gate's pass/fail table (`bcjax.release.gate`) for the
candidate version K + 1 (`--strict`: an unsure check fails too) and exits
with status 1 when it fails; `publish`
does the same and appends the candidate when it passes (or with
`--force`); `--report` also writes the report as JSON. The candidate
`.npz` holds users, items, user_ids, item_ids and W (or map_kind and
map_<param>; `gate.save_candidate` writes one).

`register` records a consumer built on version J (`bcjax.store.registry`):
a classifier's `.npz` holds inputs (e.g. ["item"]), ids `[N, len(inputs)]`,
labels `[N]`, and a linear head's weights `[d_in]` and bias, unless
`--head` names a `ConsumerMLP`'s flax msgpack of width `--hidden`; an
index's `.npz` holds user_ids `[Q]` and the (query position, item id) pairs
relevant_query / relevant_ids and excluded_query / excluded_ids. Either may
hold users and items, version J's tables as the consumer saw them. A bad
request exits with status 2 and a one-line message.
"""

from absl import app
from absl import flags
import numpy as np

from bcjax.release import gate
from bcjax.store import EmbeddingStore, StoreError, registry
from bcjax.store.consumer_kinds import LinearHead, MLPHead
from bcjax.util import io
from launch import common

COMMANDS = ("check", "publish", "register")
_STORE = flags.DEFINE_string("store", None, "Embedding store directory.",
                             required=True)
_CANDIDATE = flags.DEFINE_string("candidate", None,
                                 "The candidate version's .npz.")
_FORCE = flags.DEFINE_bool("force", False,
                           "publish: append even if the gate fails.")
_REPORT = flags.DEFINE_string("report", None,
                              "Also write the gate's report as JSON here.")
_MAX_DROP = flags.DEFINE_float("max_metric_drop", 0.01,
                               "A classifier's largest allowed metric drop.")
_MIN_RATIO = flags.DEFINE_float("min_ceiling_ratio", 0.9, "A frozen index's "
                                "least Recall@K as a fraction of the ceiling.")
_BC_TOL = flags.DEFINE_float("bc_tolerance", 0.01, "How far new-to-old "
                             "Recall@K may lie below old-to-old.")
_RESAMPLES = flags.DEFINE_integer("resamples", 200, "Bootstrap resamples.",
                                  lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "The bootstrap's seed.")
_STRICT = flags.DEFINE_bool("strict", False, "An unsure check (its interval "
                            "straddles the threshold) fails.")
_NAME = flags.DEFINE_string("name", None, "register: the consumer's name.")
_KIND = flags.DEFINE_enum("kind", None, ["classifier", "index"],
                          "register: the consumer's kind.")
_VERSION = flags.DEFINE_integer("version", None,
                                "register: the version it was built on.")
_CONSUMER = flags.DEFINE_string("consumer", None,
                                "register: the consumer's .npz.")
_HEAD = flags.DEFINE_string("head", None, "register: a ConsumerMLP's msgpack.")
_HIDDEN = flags.DEFINE_integer("hidden", None, "register: --head's width.")
_METRIC = flags.DEFINE_string("metric", "roc_auc",
                              "register: a classifier's metric.")
_K = flags.DEFINE_integer("k", 50, "register: an index's K.", lower_bound=1)
_INDEX = flags.DEFINE_enum("index", "exact", ["exact", "hnsw"],
                           "register: an index's kind.")


def _npz(path: str) -> dict[str, np.ndarray]:
  """The arrays of an `.npz`, read without pickle."""
  try:
    with io.open_regular(path) as f, np.load(f, allow_pickle=False) as npz:
      return {name: npz[name] for name in npz.files}
  except (OSError, ValueError, EOFError) as e:
    raise StoreError(f"{path}: not a readable .npz ({e})") from None


def _need(arrays: dict, path: str, *names: str) -> list[np.ndarray]:
  missing = [n for n in names if n not in arrays]
  if missing:
    raise StoreError(f"{path}: no array {', '.join(missing)}")
  return [arrays[n] for n in names]


def _register(store: EmbeddingStore) -> str:
  """Registers the consumer the flags describe; returns a line about it."""
  if None in (_NAME.value, _KIND.value, _VERSION.value, _CONSUMER.value):
    raise StoreError("register needs --name, --kind, --version and --consumer")
  path = _CONSUMER.value
  arrays = _npz(path)
  tables = ((arrays["users"], arrays["items"])
            if "users" in arrays and "items" in arrays else None)
  if _KIND.value == "index":
    users, rq, rid, eq, eid = _need(arrays, path, "user_ids", "relevant_query",
                                    "relevant_ids", "excluded_query",
                                    "excluded_ids")
    lists = lambda q, ids: [ids[q == i].tolist() for i in range(len(users))]
    consumer = registry.register_index(
        store, _NAME.value, _VERSION.value, users.tolist(), lists(rq, rid),
        lists(eq, eid), _K.value, tables, _INDEX.value)
  else:
    inputs, ids, labels = _need(arrays, path, "inputs", "ids", "labels")
    if _HEAD.value:
      if _HIDDEN.value is None:
        raise StoreError("--head needs --hidden, the head's width")
      head = MLPHead.from_bytes(
          _HIDDEN.value, len(inputs) * store.dims[_VERSION.value],
          io.read_bytes(_HEAD.value))
    else:
      weights, bias = _need(arrays, path, "weights", "bias")
      head = LinearHead(weights, float(bias))
    consumer = registry.register_classifier(
        store, _NAME.value, _VERSION.value, head, inputs.tolist(), ids, labels,
        _METRIC.value, tables)
  return (f"registered {_KIND.value} {consumer.name!r} at version "
          f"{consumer.version}: baseline {consumer.baseline:.4f}")


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"give one command of {', '.join(COMMANDS)}")
  command = argv[1]
  if _REPORT.value:
    common.output_path("report", _REPORT.value)
  try:
    store = EmbeddingStore.open(_STORE.value)
    if command == "register":
      print(_register(store))
      return
    if not _CANDIDATE.value:
      raise StoreError(f"{command} needs --candidate")
    candidate = gate.load_candidate(_CANDIDATE.value)
    thresholds = gate.Thresholds(_MAX_DROP.value, _MIN_RATIO.value,
                                 _BC_TOL.value, _RESAMPLES.value,
                                 seed=_SEED.value, strict=_STRICT.value)
    published = None
    if command == "check":
      report = gate.check(store, candidate, thresholds)
    else:
      try:
        published, report = gate.publish(store, candidate, thresholds,
                                         _FORCE.value)
      except gate.ReleaseRefused as refused:
        report = refused.report
    print(report.table())
    if _REPORT.value:
      io.save_json(_REPORT.value, report.as_json())
    if published is not None:
      print(f"published version {published}")
    elif command == "publish":
      print(f"refused: {gate.ReleaseRefused(report)}")
  except (StoreError, ValueError, OSError) as e:
    common.fail(e)
  if published is None and not report.passed:
    raise SystemExit(1)

if __name__ == "__main__":
  common.run(main, resumable=False)
