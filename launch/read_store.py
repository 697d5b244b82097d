"""Reads one version of an embedding store.

  python -m launch.read_store --store=STORE --version=J --out=FILE.npz
  python -m launch.read_store --store=STORE --version=J --ids=u1,u2
  python -m launch.read_store --store=STORE --version=J --neighbours=u1 --k=10
      [--exclude=i3,i7]
  python -m launch.read_store --store=STORE --new_since=J
  python -m launch.read_store --store=STORE --version=J --export_index=PATH

The first form writes arrays `users` and `items` (every stored row, in version
J's space) atomically; the second prints the rows of the given user ids (and
`--item_ids`) as text, one per line: kind, id, then the values; the third
searches version J's item index (`--index=hnsw` or `exact`) and prints the
user's top k items, one per line: rank, item id, inner product (the user read
from the latest version and mapped into version J; the store knows no
histories, so items to leave out, such as the user's history, are given by
id with `--exclude`); the fourth prints the users and items added after
version J, one per line: kind, id; the fifth writes version J's index and its
sidecar (`PATH.json`: its space, item ids and checksum) for serving
(`bcjax.store.load_index` reads it back). A bad request, or an output that
`bcjax.store.check_output` refuses (a FIFO, a device, a file inside a
store), exits with code 2 and a one-line message.
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
_EXCLUDE = flags.DEFINE_list("exclude", [], "Item ids --neighbours never "
                             "returns (e.g. the user's history).")
_INDEX = flags.DEFINE_enum("index", "hnsw", ["hnsw", "exact"],
                           "The index --neighbours searches or "
                           "--export_index writes.")
_NEW_SINCE = flags.DEFINE_integer("new_since", None, "Print the users and "
                                  "items added after this version.")
_EXPORT_INDEX = flags.DEFINE_string("export_index", None, "Write version J's "
                                    "index here (and its sidecar PATH.json).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    store = store_lib.EmbeddingStore.open(_STORE.value)
    if _NEIGHBOURS.value is not None:
      found, = store.search([_NEIGHBOURS.value], version=_VERSION.value,
                            k=_K.value, exclude=[_EXCLUDE.value],
                            kind=_INDEX.value)
      for rank, (item_id, score) in enumerate(found, 1):
        print(rank, item_id, f"{score:.9g}", sep="\t")
    elif _IDS.value or _ITEM_IDS.value:
      rows = store.lookup(_IDS.value, _ITEM_IDS.value, _VERSION.value)
      for kind, ids, table in zip(("user", "item"), (_IDS.value,
                                                     _ITEM_IDS.value), rows):
        for raw_id, row in zip(ids, table):
          print(kind, raw_id, " ".join(f"{x:.9g}" for x in row), sep="\t")
    elif _NEW_SINCE.value is not None:
      for kind, ids in zip(("user", "item"), store.new_since(_NEW_SINCE.value)):
        for raw_id in ids:
          print(kind, raw_id, sep="\t")
    elif _EXPORT_INDEX.value:
      store.export_index(_EXPORT_INDEX.value, _VERSION.value, _INDEX.value)
    elif _OUT.value:
      store.save_npz(_OUT.value, _VERSION.value)
    else:
      raise store_lib.StoreError("nothing to do: give --out, --ids / "
                                 "--item_ids, --neighbours, --new_since or "
                                 "--export_index")
  except (store_lib.StoreError, OSError) as e:
    common.fail(e)


if __name__ == "__main__":
  common.run(main, resumable=False)
