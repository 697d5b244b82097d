"""Progress lines: the first one owns the compile time, rates come after."""

import time

from bcjax.util.progress import Progress


def test_rate_and_eta_are_measured_after_the_first_line():
  lines = []
  progress = Progress("nobc v1", 10, log=lines.append, interval=0.0)
  time.sleep(0.2)   # "Compiling": never counted in the rate.
  progress.update(1, 0.5)
  assert "compiling included" in lines[0] and "epochs/s" not in lines[0]
  time.sleep(0.05)
  progress.update(2, 0.4, "recall@50", 0.25)
  line = lines[1]
  assert line.startswith("[nobc v1] epoch 2/10 loss 0.4000 recall@50 0.2500 |")
  rate = float(line.split("| ")[1].split(" epochs/s")[0])
  assert 5 < rate < 25     # one epoch in ~0.05 s, not two in ~0.25 s
  eta = float(line.split("ETA ")[1].rstrip("s"))
  assert abs(eta - 8 / rate) <= 1


def test_lines_are_throttled_but_the_last_always_shows():
  lines = []
  progress = Progress("x", 5, log=lines.append, interval=60.0)
  for epoch in range(1, 6):
    progress.update(epoch, 1.0)
  assert [line.split()[2] for line in lines] == ["1/5", "5/5"]
