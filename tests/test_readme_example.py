"""The README's first example ("Bring your own embedding model") runs as
written: extracted from the README, executed, and its figures checked."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_example() -> str:
  section = README.read_text().split("## Bring your own embedding model")[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)   # it writes its store to ./mf_store
  namespace = {"__name__": "__main__"}
  exec(compile(_first_example(), str(README), "exec"), namespace)
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith("consumer ROC-AUC: version 0 "), line
  store = namespace["store"]
  assert store.versions == [0, 1, 2] and store.dims == [16, 24, 32]
  assert len(store.item_ids) == 400 and (tmp_path / "mf_store").is_dir()
  # Backward compatible: version 2 serves the version-0 consumer as well as
  # version 0 did, new items included (README: 0.950, 0.950 and 0.846).
  assert namespace["auc_v0"] > 0.85, line
  assert abs(namespace["auc_old"] - namespace["auc_v0"]) < 0.05, line
  assert namespace["auc_new"] > 0.75, line
