"""Speed and memory measurements behind `launch.benchmark`.

Every figure is the median of several runs, with its spread `[min, max]`
next to it (keys ending in `_spread...`); every timing blocks on its result
and excludes compilation (timed apart). Nothing else in bcjax imports this
package, and it uses only bcjax's public names; callers import its modules. ::

  measure    timers, the dense-matmul peak, peak and available memory
  training   aggregation layouts, epochs per version, strategy overheads,
             seeds under vmap, worker processes, the BatchNorm and
             dropout layers
  serving    store reads, consumer evaluation across versions, serving
             through a frozen legacy index
  scaling    the cost curve over graph sizes, one process per size
  projection the wall time of a whole preset, from the figures above
  collapse   a chain of backward maps against its collapses
  table      the record as a Markdown table
"""
