"""The corpus embedded once per encoder: float32 `.npy` chunks, checksummed,
written atomically, resumable chunk by chunk.

Layout, under a cache folder::

  embeddings/<encoder>/<corpus fingerprint[:16]>/
    manifest.json        encoder, model, width, max tokens, the corpus's
                         fingerprint and size, the chunk size, and the
                         sha256 of every finished chunk
    chunk_00000.npy ...  rows [i * chunk, (i + 1) * chunk) of the corpus

A chunk is written (`bcjax.util.io.save_npy`: a temporary file, fsync, rename)
and then listed in the manifest (`save_json`, the same way), so a killed
`prepare` leaves only finished chunks listed, and the same call resumes at
the first chunk missing. Every chunk read back is checked against its
sha256; a changed file is refused with its name. A corpus with other texts
(another subset) has another fingerprint, hence another folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Callable, Sequence

import numpy as np

from bcjax.data.text import TextCorpus
from bcjax.text import encoders
from bcjax.util import io, progress

CHUNK = 256
MANIFEST = "manifest.json"


class EmbedProgress(progress.Progress):
  """`bcjax.util.progress.Progress` for chunks of texts: the first line after the
  first chunk (the encoder's loading included), then at most one line per
  `interval` seconds, with the rate in texts/s and the ETA measured from
  the first line on."""

  def chunk(self, done: int, texts: int, total_texts: int) -> None:
    """Logs chunk `done` (of `self.total`), `texts` of `total_texts` done
    (by this run)."""
    now = time.perf_counter()
    head = (f"[{self.label}] chunk {done}/{self.total}, "
            f"{texts}/{total_texts} texts")
    if self.reference is None:
      self.reference, self.last_line = (texts, now), now
      self.log(f"{head} | {now - self.start:.1f}s so far, loading included")
      return
    if now - self.last_line < self.interval and done != self.total:
      return
    self.last_line = now
    first_texts, first_time = self.reference
    rate = (texts - first_texts) / max(now - first_time, 1e-9)
    eta = (total_texts - texts) / rate if rate > 0 else float("nan")
    self.log(f"{head} | {rate:.1f} texts/s ETA {eta:.0f}s")


def folder(cache_dir: str | os.PathLike, name: str,
           corpus: TextCorpus) -> pathlib.Path:
  """Where encoder `name`'s embeddings of `corpus` lie."""
  return (pathlib.Path(cache_dir) / "embeddings" / name
          / corpus.fingerprint()[:16])


def chunk_path(where: pathlib.Path, i: int) -> pathlib.Path:
  return where / f"chunk_{i:05d}.npy"


def expected_manifest(name: str, corpus: TextCorpus, chunk: int) -> dict:
  """The manifest's fields that must match for its chunks to be read."""
  s = encoders.spec(name)
  return {"encoder": name, "model": s.model, "dim": s.dim,
          "max_tokens": encoders.MAX_TOKENS, "corpus": corpus.fingerprint(),
          "num_texts": len(corpus), "chunk": chunk}


def read_manifest(where: pathlib.Path, expected: dict) -> dict:
  """The manifest in `where` (a fresh one when absent).

  Raises:
    FileFormatError: not JSON, or made for another encoder, corpus or chunk
      size; the message names the file and the field.
  """
  path = where / MANIFEST
  if not path.exists():
    return {**expected, "chunks": {}}
  try:
    manifest = json.loads(io.read_bytes(path))
  except (ValueError, UnicodeDecodeError) as error:
    raise io.FileFormatError(f"{path}: not valid JSON ({error})") from None
  for field, value in expected.items():
    if manifest.get(field) != value:
      raise io.FileFormatError(
          f"{path}: field {field!r} is {manifest.get(field)!r}, expected "
          f"{value!r}; remove {where} to embed again")
  if not isinstance(manifest.get("chunks"), dict):
    raise io.FileFormatError(f"{path}: field 'chunks' is not an object")
  return manifest


def load_chunk(where: pathlib.Path, i: int, digest: str, rows: int,
               dim: int) -> np.ndarray:
  """Chunk `i`, checked against its sha256 and its shape.

  Raises:
    FileFormatError: a checksum mismatch or a wrong shape (naming the file).
  """
  path = chunk_path(where, i)
  array = io.load_npy(path, digest=digest)
  if array.shape != (rows, dim) or array.dtype != np.float32:
    raise io.FileFormatError(f"{path}: holds {array.dtype} {array.shape}, "
                             f"expected float32 {(rows, dim)}")
  return array


def _bounds(n: int, chunk: int) -> list[tuple[int, int]]:
  return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def prepare(corpus: TextCorpus, names: Sequence[str],
            cache_dir: str | os.PathLike, *, threads: int = 1,
            chunk: int = CHUNK, log: Callable[[str], None] | None = None,
            make_encoder: Callable[..., object] | None = None
            ) -> dict[str, pathlib.Path]:
  """Embeds `corpus` with every encoder of `names` that has chunks missing.

  Finished chunks are checked (sha256) and kept; an encoder is loaded only
  when something is missing.

  Args:
    corpus: the texts.
    names: `encoders.ENCODERS` names.
    cache_dir: the cache folder.
    threads: the encoders' threads.
    chunk: texts per chunk.
    log: progress lines (default stderr).
    make_encoder: `(name, cache_dir, threads) -> encoder` with `encode`;
      default `encoders.Encoder`.

  Returns:
    encoder name -> its folder.

  Raises:
    FileFormatError: a finished chunk or a manifest changed on disk.
  """
  make_encoder = make_encoder or encoders.Encoder
  out = {}
  for name in names:
    where = folder(cache_dir, name, corpus)
    io.make_dir(where)
    io.clear_temporaries(where)
    manifest = read_manifest(where, expected_manifest(name, corpus, chunk))
    bounds = _bounds(len(corpus), chunk)
    missing = []
    for i, (start, stop) in enumerate(bounds):
      digest = manifest["chunks"].get(str(i))
      if digest is None:
        missing.append(i)
      else:
        load_chunk(where, i, digest, stop - start, manifest["dim"])
    if missing:
      line = EmbedProgress(f"embed {name}", len(missing), log=log)
      encoder = make_encoder(name, cache_dir, threads)
      total = sum(bounds[i][1] - bounds[i][0] for i in missing)
      done = 0
      for count, i in enumerate(missing, 1):
        start, stop = bounds[i]
        vectors = np.asarray(encoder.encode(corpus.texts[start:stop]),
                             np.float32)
        manifest["chunks"][str(i)] = io.save_npy(chunk_path(where, i),
                                                 vectors)
        io.save_json(where / MANIFEST, manifest)
        done += stop - start
        line.chunk(count, done, total)
    out[name] = where
  return out


def load(corpus: TextCorpus, name: str, cache_dir: str | os.PathLike,
         chunk: int = CHUNK) -> np.ndarray:
  """Encoder `name`'s `[n, dim]` embeddings of `corpus`, every chunk checked.

  Raises:
    FileNotFoundError: nothing cached, or chunks missing (run `prepare`).
    FileFormatError: a chunk or the manifest changed on disk.
  """
  where = folder(cache_dir, name, corpus)
  if not (where / MANIFEST).exists():
    raise FileNotFoundError(f"{where / MANIFEST}: no {name} embeddings of "
                            "this corpus; run the prepare step first")
  manifest = read_manifest(where, expected_manifest(name, corpus, chunk))
  bounds = _bounds(len(corpus), chunk)
  missing = [i for i in range(len(bounds)) if str(i) not in manifest["chunks"]]
  if missing:
    raise FileNotFoundError(f"{where}: {len(missing)} of {len(bounds)} "
                            f"chunks of {name} missing (first: {missing[0]}); "
                            "run the prepare step to finish them")
  return np.concatenate([
      load_chunk(where, i, manifest["chunks"][str(i)], stop - start,
                 manifest["dim"])
      for i, (start, stop) in enumerate(bounds)])
