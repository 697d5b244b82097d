"""The benchmark record (`launch.benchmark`'s JSON) as a Markdown table."""

from __future__ import annotations

from bcjax.backward import fits


def _s(x, digits=2) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def _range(pair, digits=2, scale=1.0) -> str:
  if not pair:
    return "-"
  return f"{pair[0] * scale:.{digits}f}-{pair[1] * scale:.{digits}f}"


def record_table(result: dict) -> str:
  """The record as Markdown: every figure a median with its [min-max]."""
  lines = [f"bcjax benchmark, suite {result['suite']}: jax "
           f"{result['jax_version']} on {', '.join(result['devices'])} "
           f"({result['cpu_count']} CPUs; load average "
           f"{result['load_average_start'][0]:.1f} at start, "
           f"{result['load_average_end'][0]:.1f} at the end); "
           f"{result['total_s']:.0f} s in all. Figures: median [min-max]."]
  if "matmul_peak_gflops" in result:
    lines += ["", f"dense matmul peak: {result['matmul_peak_gflops']:.0f} "
              f"GFLOP/s [{_range(result['matmul_peak_spread_gflops'], 0)}] "
              f"(n = {result['matmul_peak_n']})"]
  if "layers" in result:
    la = result["layers"]
    ms = lambda name: f"{la[name]:.2f} [{_range(la[name + '_spread'], 2)}]"
    lines += ["", f"BatchNorm forward + backward at {la['node_shape']}: hand "
              f"VJP {ms('batchnorm_ms')} ms, JAX's {ms('batchnorm_autodiff_ms')}"
              f" ms ({la['batchnorm_speedup']:.2f}x); dropout masks at "
              f"{la['batch_shape']}: 16-bit {ms('dropout_ms')} ms, bernoulli "
              f"{ms('bernoulli_ms')} ms ({la['dropout_speedup']:.2f}x)"]
  if "versions" in result:
    lines += ["", f"paper sizes on {result['dataset']}:",
              "| version | layout | step ms | epoch s | eval s | compile s | "
              "GFLOP/step | GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
    for k, v in result["versions"].items():
      lines.append(
          f"| {k} | {v['layout']} | {v['step_ms']:.1f} "
          f"[{_range(v['step_spread_ms'], 1)}] | {v['epoch_s']:.2f} "
          f"[{_range(v['epoch_spread_s'])}] | {v['eval_s']:.3f} "
          f"[{_range(v['eval_spread_s'], 3)}] | {v['compile_s']:.1f} | "
          f"{v['gflop_per_step']:.1f} | {v['achieved_gflops']:.0f} |")
  if "strategy_overheads" in result:
    o = result["strategy_overheads"]
    epochs = ", ".join(f"{name} {e['median']:.2f} [{_range(e['spread'])}]"
                       for name, e in o["epochs_s"].items())
    lines += ["", f"extra work per version at version {o['version']} "
              f"(epochs s: {epochs}; joint: (epoch - plain epoch) x epochs, "
              "a difference of medians, noise when small or negative):",
              "| joint sloss s | joint mloss s | post-hoc SGD s | "
              + " | ".join(f"{fit} s" for fit in fits.FITS) + " |",
              "|---" * (3 + len(fits.FITS)) + "|",
              f"| {o['joint_sloss_extra_s']:.1f} | "
              f"{o['joint_mloss_extra_s']:.1f} | {o['posthoc_sgd_s']:.1f} | "
              + " | ".join(f"{o[f'posthoc_{fit}_s']:.3f} "
                           f"[{_range(o[f'posthoc_{fit}_spread_s'], 3)}]"
                           for fit in fits.FITS) + " |"]
  if "workers" in result:
    wk = result["workers"]
    lines += ["", f"worker processes, {wk['preset']} preset version "
              f"{wk['version']}: one process on every CPU "
              f"{wk['one_process_epoch_s']:.3f} s an epoch; {wk['workers']} "
              "pinned processes at once " + ", ".join(
                  f"{t:.3f}" for t in wk["worker_epoch_s"]) + " s: "
              f"{wk['workers_epochs_per_s']:.2f} epochs/s against "
              f"{wk['one_process_epochs_per_s']:.2f} ({wk['speedup']:.2f}x)"]
  if "sweep" in result:
    w = result["sweep"]
    lines += ["", f"seed sweep, {w['seeds']} seeds x one epoch of version "
              f"{w['version']} ({w['preset']} preset, {w['steps']} steps, "
              "host sampling included): vmapped "
              f"{w['vmapped_s']:.2f} s [{_range(w['vmapped_spread_s'])}], "
              f"sequential {w['sequential_s']:.2f} s "
              f"[{_range(w['sequential_spread_s'])}]: "
              f"{w['speedup']:.2f}x the throughput (target 1.5x); "
              f"first-epoch losses agree to {w['loss_max_abs_diff']:.1e}"]
  if "consumer_eval" in result:
    c = result["consumer_eval"]
    lines += ["", f"consumer scoring, {c['evaluations']} (task, strategy, "
              f"version, seed) AUCs ({c['tasks']} tasks, {c['strategies']} "
              f"strategies, {c['seeds']} seeds, h={c['hidden']}, "
              f"d={c['dim']}): vmapped {c['vmapped_s']:.3f} s "
              f"[{_range(c['vmapped_spread_s'], 3)}], loop {c['loop_s']:.3f} s "
              f"[{_range(c['loop_spread_s'], 3)}]: {c['speedup']:.2f}x "
              f"(target 20x); AUCs agree to {c['auc_max_abs_diff']:.1e}"]
  if "store" in result:
    st = result["store"]
    lines += ["", f"store, version 0 read from version {st['versions'] - 1} "
              f"({st['rows']} rows): composed "
              f"{st['composed_rows_per_s']:,.0f} rows/s "
              f"[{_range(st['composed_rows_per_s_spread'], 0)}], chained "
              f"{st['chained_rows_per_s']:,.0f} rows/s "
              f"[{_range(st['chained_rows_per_s_spread'], 0)}]"]
  if "legacy_index" in result:
    li = result["legacy_index"]
    rate = lambda name, digits=0: (f"{li[name]:,.{digits}f} "
                                   f"[{_range(li[name + '_spread'], digits)}]")
    lines += ["", f"frozen version-0 HNSW index ({li['frozen_items']} items, "
              f"d {li['dims'][0]}; {li['queries']} version-{len(li['dims']) - 1}"
              f" queries, top {li['k']}): build {rate('build_s', 3)} s "
              f"(exact {rate('exact_build_s', 5)} s); queries/s: version-0 "
              f"vectors {rate('qps_raw')}, mapped by the linear chain "
              f"{rate('qps_linear')}, by the residual-MLP chain "
              f"{rate('qps_mlp')}; mapping per query: linear "
              f"{rate('map_linear_us', 1)} us, MLP {rate('map_mlp_us', 1)} us;"
              f" insertion {rate('insert_items_per_s')} items/s"]
  if "collapse" in result:
    lines += ["", *collapse_table(result["collapse"])]
  if "aggregation" in result:
    lines += ["", "| aggregation | scale | edges | fwd ms | fwd+bwd ms |",
              "|---|---|---|---|---|"]
    fmt = lambda x, r: ("skipped" if x is None else
                        f"{x:.1f} [{_range(r, 1)}]")
    for row in result["aggregation"]:
      lines.append(f"| {row['layout']} | {row['scale']}x | {row['edges']} | "
                   f"{fmt(row['fwd_ms'], row['fwd_ms_spread'])} | "
                   f"{fmt(row['fwd_bwd_ms'], row['fwd_bwd_ms_spread'])} |")
  if "scaling" in result:
    lines += ["", "training epoch on synthetic graphs (PinSAGE; one process "
              "per size; sampled = neighbour sampling; * = epoch "
              "extrapolated from the timed steps):",
              "| interactions | mode | train | nodes | d, L | steps (timed) | "
              "step s | epoch s | peak GB |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["scaling"]:
      if row.get("epoch_s") is None:
        lines.append(f"| {row['interactions']:,} | {row['mode']} | "
                     f"skipped: {row.get('skipped', '?')} ||||||| ")
        continue
      mark = "*" if row["extrapolated"] else ""
      lines.append(
          f"| {row['interactions']:,} | {row['mode']} | "
          f"{row['train_interactions']:,} | {row['nodes_pad']:,} | "
          f"{row['dim']}, {row['layers']} | {row['steps']} "
          f"({row['steps_timed']}) | {row['step_s']:.3f} "
          f"[{_range(row['step_spread_s'], 3)}] | {row['epoch_s']:.1f}{mark} "
          f"[{_range(row['epoch_spread_s'], 1)}] | {row['peak_mem_gb']:.2f} |")
  if "projection" in result:
    p = result["projection"]
    lines += ["", f"projected wall time of the {p['preset']} preset "
              f"({p['trainings']} trainings): {p['total_s']:.0f} s = "
              f"{p['total_h']:.2f} h (version 0 {p['version0_s']:.0f} s; "
              + ", ".join(f"{name} {t:.0f} s"
                          for name, t in p["by_strategy"].items())
              + f"); not included: {p['excluded']}"]
  return "\n".join(lines)


def collapse_table(co: dict) -> list[str]:
  """The collapse section (`bcjax.benchmarks.collapse`) as Markdown lines."""
  chain = co["options"]["chain"]
  lines = [f"backward chain {len(co['dims']) - 1} -> 0 (residual MLPs, "
           f"dims {co['dims']}, {co['steps']} Adam steps, hidden "
           f"{co['hidden']}; rank-d SVD tables of the versions, "
           f"{co['held_out_nodes']} held-out nodes) against its collapses, "
           f"distilled on {co['distil_rows'][0]} version-{len(co['dims']) - 1}"
           f" rows, errors on {co['distil_rows'][1]} others; us per query "
           f"over {co['users']} queries; frozen version-0 index Recall@"
           f"{co['k']} of {co['evaluated_users']} users (the version's own "
           f"exact index: {co['ceiling_recall']:.4f}):",
           "| option | maps | rel. error | cosine | us/query | chain / "
           f"option | R@{co['k']} exact | R@{co['k']} HNSW | vs chain "
           f"(points) | top-{co['k']} overlap, all / {co['held_out_users']} "
           "held-out users | target |", "|---" * 11 + "|"]
  for name, o in co["options"].items():
    delta = 100 * (o["recall"]["exact"] - chain["recall"]["exact"])
    lines.append(
        f"| {name} | {o['maps']} | {o['relative']:.4f} | {o['cosine']:.4f} "
        f"| {o['us']:.2f} [{_range(o['us_spread'])}] | {o['speedup']:.1f}x | "
        f"{o['recall']['exact']:.4f} | {o['recall']['hnsw']:.4f} | "
        f"{delta:+.2f} | {o['overlap']:.3f} / {o['overlap_held_out']:.3f} | "
        f"{'met' if o['meets_target'] else '-'} |")
  lines += ["", f"error growth, chain against a direct affine map, on the "
            "held-out nodes:", "| to version | hops | chain rel. error | "
            "direct rel. error | chain cosine | direct cosine |",
            "|---" * 6 + "|"]
  lines += [f"| {h['to_version']} | {h['hops']} | {h['chain_relative']:.4f} |"
            f" {h['direct_relative']:.4f} | {h['chain_cosine']:.4f} | "
            f"{h['direct_cosine']:.4f} |" for h in co["hops"]]
  lines += ["", f"budget {co['budget_us']:g} us per query (target: within "
            f"it and R@{co['k']} at most 1 point below the chain's):"]
  lines += [f"- by {by}: {c['reason']}" for by, c in co["choices"].items()]
  return lines
