"""Reads one version of an embedding store.

  python -m launch.read_store --store=STORE --version=J --out=FILE.npz
  python -m launch.read_store --store=STORE --version=J --ids=u1,u2
  python -m launch.read_store --store=STORE --version=J --neighbours=u1 --k=10

The first form writes arrays `users` and `items` (every stored row, in version
J's space) atomically; the second prints the rows of the given user ids (and
`--item_ids`) as text, one per line: kind, id, then the values; the third
builds version J's item index (`--index=hnsw` or `exact`) and prints the
user's top k items through it, one per line: rank, item id, inner product
(the user read from the latest version and mapped into version J). A bad
request, or an `--out` that `bcjax.store.check_output` refuses (a FIFO, a
device, a file inside a store), exits with code 2 and a one-line message.
"""

from absl import app
from absl import flags

from bcjax import store as store_lib
from launch import common

_STORE = flags.DEFINE_string("store", None, "Embedding store directory.",
                             required=True)
_VERSION = flags.DEFINE_integer("version", None,
                                "Version to read; the latest by default.")
_OUT = flags.DEFINE_string("out", None, "Output .npz file.")
_IDS = flags.DEFINE_list("ids", [], "User ids to print.")
_ITEM_IDS = flags.DEFINE_list("item_ids", [], "Item ids to print.")
_NEIGHBOURS = flags.DEFINE_string(
    "neighbours", None, "A user id: print its top items through version "
    "J's index.")
_K = flags.DEFINE_integer("k", 10, "Items printed by --neighbours.")
_INDEX = flags.DEFINE_enum("index", "hnsw", ["hnsw", "exact"],
                           "The index --neighbours searches.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    store = store_lib.EmbeddingStore.open(_STORE.value)
    if _NEIGHBOURS.value is not None:
      index = store_lib.version_index(store, _VERSION.value, _INDEX.value)
      found, = store_lib.neighbours(store, index, [_NEIGHBOURS.value],
                                    _K.value)
      for rank, (item_id, score) in enumerate(found, 1):
        print(rank, item_id, f"{score:.9g}", sep="\t")
    elif _IDS.value or _ITEM_IDS.value:
      rows = store.lookup(_IDS.value, _ITEM_IDS.value, _VERSION.value)
      for kind, ids, table in zip(("user", "item"), (_IDS.value,
                                                     _ITEM_IDS.value), rows):
        for raw_id, row in zip(ids, table):
          print(kind, raw_id, " ".join(f"{x:.9g}" for x in row), sep="\t")
    elif _OUT.value:
      store.save_npz(_OUT.value, _VERSION.value)
    else:
      raise store_lib.StoreError("nothing to do: give --out, --ids / "
                                 "--item_ids, or --neighbours")
  except (store_lib.StoreError, OSError) as e:
    common.fail(e)


if __name__ == "__main__":
  common.run(main, resumable=False)
