"""Speed and memory measurements behind `launch.benchmark`.

Every figure is the median of several runs, with its spread `[min, max]`
next to it (keys ending in `_spread...`); every timing blocks on its result
and excludes compilation (timed apart). Nothing else in bcjax imports this
package, and it uses only bcjax's public names. ::

  measure    timers, the dense-matmul peak, peak and available memory
  training   aggregation layouts, epochs per version, strategy overheads,
             seeds under vmap, worker processes, the BatchNorm and
             dropout layers
  serving    store reads, consumer evaluation across versions, serving
             through a frozen legacy index
  scaling    the cost curve over graph sizes, one process per size
  projection the wall time of a whole preset, from the figures above
  table      the record as a Markdown table
"""

from bcjax.benchmarks.measure import matmul_peak_detail, spread, timed
from bcjax.benchmarks.projection import paper_wall_time
from bcjax.benchmarks.scaling import scaling, scaling_point
from bcjax.benchmarks.serving import consumer_eval, legacy_index, store_read
from bcjax.benchmarks.table import record_table
from bcjax.benchmarks.training import (aggregation_candidates, layer_kernels,
                                       replicated_graph, seed_sweep,
                                       strategy_overheads, training_epoch,
                                       worker_throughput)

__all__ = ["aggregation_candidates", "consumer_eval", "layer_kernels",
           "legacy_index",
           "matmul_peak_detail", "paper_wall_time", "record_table",
           "replicated_graph",
           "scaling", "scaling_point", "seed_sweep", "spread", "store_read",
           "strategy_overheads", "timed",
           "training_epoch", "worker_throughput"]
