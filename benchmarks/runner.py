"""What every benchmark script (``run_numpyro.py``, ``run_posteriordb.py``, ``run_pyro.py``,
``run_paper.py``) does around its own measurements: the output options, the record of the
run (command, date, machine, configuration), merging with earlier results, writing the
JSON and the markdown section after every (target, sampler) attempt, and an attempt that
records a failure instead of stopping the run.

A script keeps what is its own: targets, samplers, configuration, metrics, markdown body
and how it prints a row. Its ``main`` is, in outline::

    p = argparse.ArgumentParser(...)
    ...                                    # the script's own options
    runner.add_output_options(p, out_help=..., fresh_help=...)
    args = p.parse_args(argv)
    run = runner.BenchmarkRun("run_x", args, argv, out=..., mode=..., config=...,
                              machine=..., target_order=TARGETS, sampler_order=SAMPLERS,
                              markdown=markdown_section)
    for ti, t in runner.selected(TARGETS, args.targets):
        for si, s in runner.selected(SAMPLERS, args.samplers):
            rec = run.attempt({"target": t, "sampler": s, ...}, measure, t, s, key(ti, si))
            print_row(rec)
    run.finish()
"""

import datetime
import os
import sys
import tempfile
import time
import traceback

import results_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_output_options(p, *, out_help, fresh_help, md_default=None, md_help=None, no_md_help=None,
                       merge_from_help=None, render_help=None, compile_cache_help=None):
    """Add the options the scripts share, each with the script's own help text: ``--out``,
    ``--md`` (default ``md_default``; a script whose default depends on its mode leaves it
    None and sets it after parsing), ``--no-md`` and ``--fresh``; ``--merge-from``,
    ``--render`` and ``--compile-cache`` only where the script has them (their help given)."""
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--md", default=md_default, help=md_help)
    p.add_argument("--no-md", action="store_true", help=no_md_help)
    p.add_argument("--fresh", action="store_true", help=fresh_help)
    if merge_from_help is not None:
        p.add_argument("--merge-from", nargs="+", default=(), metavar="JSON", help=merge_from_help)
    if render_help is not None:
        p.add_argument("--render", action="store_true", help=render_help)
    if compile_cache_help is not None:
        p.add_argument("--compile-cache", default=os.path.join(tempfile.gettempdir(), "esh_kernels_bench_jax_cache"),
                       help=compile_cache_help)


def use_compile_cache(directory):
    """Keep JAX's compiled programs in ``directory`` (``--compile-cache``; '' or None: off),
    every program however small or quick to compile. Saves the scripts' wall time only:
    their timings leave compilation out or say that they include it."""
    if not directory:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def selected(order, chosen):
    """``(index, name)`` for the names of ``order`` that are in ``chosen``; the index is the
    position in the whole ``order``, since the scripts derive a pair's random key or seed
    from it (a pair gets the same key whatever else is run)."""
    return [(i, name) for i, name in enumerate(order) if name in chosen]


def command_line(script, argv):
    """The command as typed from the repository root (recorded in the JSON and markdown)."""
    return " ".join(["python", f"benchmarks/{script}.py", *(sys.argv[1:] if argv is None else argv)])


def grid_parser(doc, flag, names, samplers):
    """The small scripts' argument parser (``model_zoo.py``, ``wide_correlated.py``), described
    by the first paragraph of ``doc``: ``flag`` (e.g. ``--models``) choosing among ``names``,
    ``--samplers``, ``--seeds`` (default 0) and ``--out`` (:func:`run_grid`)."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument(flag, nargs="+", choices=list(names), default=list(names))
    p.add_argument("--samplers", nargs="+", choices=list(samplers), default=list(samplers))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    return p


def run_grid(script, argv, cases, run, render, out=None):
    """The small scripts' loop (``model_zoo.py``, ``wide_correlated.py``): ``run(*case)`` for
    each case (a tuple such as ``(model, sampler, seed)``), each row printed as it comes
    (the last line of ``render([row])``), then the whole table; with ``out`` the rows and the
    command (:func:`command_line`) as JSON. Returns the rows."""
    import json

    rows = []
    for case in cases:
        rows.append(run(*case))
        print(render(rows[-1:]).splitlines()[-1], flush=True)
    print(render(rows))
    if out:
        with open(out, "w") as f:
            json.dump({"command": command_line(script, argv), "rows": rows}, f, indent=1)
    return rows


def failure(e):
    """The fields that record the exception ``e`` being handled: ``status="error"``, its
    message and its traceback."""
    return {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}


def _in_child(queue, measure, args):
    try:
        rec = measure(*args)
    except Exception as e:  # noqa: BLE001 - reported like an error in the parent's process
        rec = failure(e)
    queue.put(results_io.jsonable(rec))


def run_in_process(measure, args, limit):
    """``measure(*args)`` (a module-level function returning a record) in a spawned process
    that is stopped after ``limit`` seconds: its record, ``status="error"`` if it raised, or
    ``status="timeout"`` if it was stopped (a sampler whose chains sit at their step cap can
    take hours on an ODE model, and the run must go on; a process per run also frees XLA's
    code mappings, which ten posteriors in one process ran out of)."""
    import multiprocessing
    import queue as queue_mod

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_in_child, args=(q, measure, args))
    proc.start()
    try:
        rec = q.get(timeout=limit)
    except queue_mod.Empty:
        proc.terminate()
        rec = {"status": "timeout", "note": f"did not finish in {limit:.0f} s (stopped)"}
    proc.join()
    return rec


def runs_parser(doc, kernels, default_kernels):
    """The per-run scripts' argument parser (``other_keys.py``, ``repeat_runs.py``), described
    by the first paragraph of ``doc``: ``--kernels`` among ``kernels``, ``--seeds`` (default 1
    2) and ``--time-limit`` per run (:func:`print_runs`); each script adds what it runs on."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--kernels", nargs="+", choices=list(kernels), default=list(default_kernels))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--time-limit", type=float, default=900.0, metavar="SECONDS")
    return p


def findings(mcmc):
    """The sorted ``(chain, symptom)`` pairs of a run's self-check findings."""
    return sorted({(chain, symptom) for chain, symptom, _ in mcmc.sampler.self_check_findings})


def print_runs(measure, cases, limit):
    """Each case ``(name, kernel, seed, ...)`` as ``measure(*case)`` in :func:`run_in_process`;
    prints the record's ``line``, or the case and why it gave none (a time-out, an error)."""
    for case in cases:
        rec = run_in_process(measure, case, limit)
        name, kernel, seed = case[:3]
        print(rec.get("line") or f"{name} {kernel} seed {seed}: {rec['status']} {rec.get('note', '')}",
              flush=True)


def _rel(path):
    return os.path.relpath(path, REPO)


class BenchmarkRun:
    """One invocation of a benchmark script: its output file, configuration, the records of
    earlier runs it merges with (of the same configuration in ``out`` unless ``--fresh``,
    and those of ``--merge-from``) and the records it adds.

    Every save writes the JSON and then publishes it: by default the script's section of
    ``--md`` (named by ``mode``) with the body ``markdown(payload)``; a script whose outputs
    differ passes its own ``publish(payload)`` instead (``run_paper``: a figure too).
    ``meta`` holds the script's extra meta keys, written after the common ones;
    ``note_merged`` adds ``merged_from_earlier`` before them (``run_posteriordb``'s JSON has
    never had it). ``derive(merged)`` adds fields computed across the merged records before
    they are written (``run_pyro``: speed-up over NUTS). Per attempt: ``clear_jax_caches``
    frees JAX's compiled programs (a long run otherwise accumulates LLVM code mappings until
    it hits ``vm.max_map_count`` and aborts), and ``note_load`` records the load average
    after it (``run_pyro``, whose times include everything a user waits for)."""

    def __init__(self, script, args, argv, *, out, mode, config, machine, target_order, sampler_order,
                 markdown=None, publish=None, meta=None, note_merged=True, derive=None,
                 clear_jax_caches=False, note_load=False):
        self.script, self.out, self.mode, self.config, self.machine = script, out, mode, config, machine
        self.target_order, self.sampler_order = target_order, sampler_order
        self.md = None if args.no_md or args.md is None else args.md
        self.command = command_line(script, argv)
        self.date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.markdown, self.extra_meta, self.note_merged, self.derive = markdown, meta or {}, note_merged, derive
        self.publish = publish or self.write_markdown
        self.clear_jax_caches, self.note_load = clear_jax_caches, note_load
        previous = [] if args.fresh else results_io.load_previous(out, config)
        self.previous = results_io.merge_files(previous, getattr(args, "merge_from", ()), config,
                                               target_order, sampler_order)
        self.new = []

    def write_markdown(self, payload):
        """Write the script's markdown section of ``payload`` (unless there is no ``--md``)."""
        if self.md is not None:
            results_io.write_markdown_section(self.md, self.script, payload["meta"]["mode"],
                                              self.markdown(payload))

    def save(self):
        """Write the earlier and new records, merged, with the run's meta to ``out``, then
        publish them: after every attempt, so an interrupted run keeps what it finished."""
        merged = results_io.merge_results(self.previous, self.new, self.target_order, self.sampler_order)
        if self.derive is not None:
            self.derive(merged)
        meta = {"mode": self.mode, "command": self.command, "date": self.date, "machine": self.machine,
                "config": self.config}
        if self.note_merged:
            meta["merged_from_earlier"] = len(merged) > len(self.new)
        meta.update(self.extra_meta)
        self.publish(results_io.write_results(self.out, meta, merged))

    def render(self):
        """``--render``: rewrite ``out`` and the markdown from the merged records, running nothing."""
        self.save()
        print(f"[{self.script}] rendered {_rel(self.out)}", flush=True)

    def attempt(self, rec, measure, *args):
        """Complete ``rec`` (the pair's identifying fields) with the fields ``measure(*args)``
        returns, add it to the results and save. An exception becomes ``status="error"`` with its message
        and traceback: one broken sampler must not lose the rest. ``script_seconds`` is the
        attempt's wall time. Returns ``rec``."""
        t0 = time.perf_counter()
        try:
            rec.update(measure(*args))
        except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
            rec.update(failure(e))
        rec["script_seconds"] = time.perf_counter() - t0
        if self.note_load:
            rec["loadavg_after"] = list(os.getloadavg())
        self.new.append(rec)
        if self.clear_jax_caches:
            import jax

            jax.clear_caches()
        self.save()
        return rec

    def finish(self, *also):
        """Say what the run wrote: ``out``, the files in ``also`` (e.g. a figure) and the markdown."""
        print(f"[{self.script}] wrote " + ", ".join(_rel(path) for path in (self.out, *also))
              + ("" if self.md is None else f" and {_rel(self.md)}"), flush=True)
