"""The benchmark yardstick (``benchmarks/yardstick.py``), the aggregation over seeds and
tables (``benchmarks/results_io.py``), the scripts' shared runner (``benchmarks/runner.py``)
and the posteriordb judge (``benchmarks/pdb_judge.py``, ``benchmarks/posteriordb.py``), on
synthetic records and chains whose answer is known. No MCMC is run."""

import argparse
import json
import os
import sys

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import pdb_judge  # noqa: E402
import posteriordb as pdb  # noqa: E402
import results_io  # noqa: E402
import runner  # noqa: E402
import shared_data  # noqa: E402
import yardstick  # noqa: E402


def _antithetic_chains(rng, chains, n, d):
    """x_{t+1} = -x_t + small noise: x is antithetic (ESS per draw far above 1), while x^2
    is nearly frozen: the case that x-only ESS flatters."""
    x = np.empty((chains, n, d))
    x[:, 0] = rng.standard_normal((chains, d))
    for t in range(1, n):
        x[:, t] = -0.995 * x[:, t - 1] + np.sqrt(1 - 0.995**2) * rng.standard_normal((chains, d))
    return x


def test_headline_ess_takes_the_slower_of_x_and_x2():
    rng = np.random.default_rng(0)
    x = _antithetic_chains(rng, 4, 1000, 3)
    y = yardstick.ess_x_and_x2(x)
    assert np.min(y["ess_x"]) > 4000  # antithetic: more than one effective draw per draw
    assert np.max(y["ess_x2"]) < 400  # x^2 = the slow AR(1) with rho = 0.99
    assert y["ess"] == pytest.approx(np.min(y["ess_x2"]))
    assert y["stat"] == "x^2" and y["coord"] == int(np.argmin(y["ess_x2"]))


def test_headline_ess_of_iid_draws_is_the_number_of_draws():
    rng = np.random.default_rng(1)
    y = yardstick.ess_x_and_x2(rng.standard_normal((4, 1000, 5)))
    assert 3000 < y["ess"] < 5000
    assert np.all(y["rhat_x"] < 1.01) and np.all(y["rhat_x2"] < 1.01)


def test_ess_by_groups_reads_each_group_alone_with_its_own_gradients():
    rng = np.random.default_rng(3)
    x = _antithetic_chains(rng, 9, 400, 3)  # 9 chains: two groups of 4, one chain left out
    grads = np.arange(1.0, 10.0) * 1000.0  # a different count per chain
    warm = np.full(9, 500.0)
    g = yardstick.ess_by_groups(x, grads, warm, 4)
    assert len(g["ess"]) == 2
    for k, chains in enumerate((slice(0, 4), slice(4, 8))):
        alone = yardstick.ess_x_and_x2(x[chains])
        assert g["ess"][k] == pytest.approx(alone["ess"])
        assert g["ess_x"][k] == pytest.approx(np.min(alone["ess_x"]))
        assert g["ess_x2"][k] == pytest.approx(np.min(alone["ess_x2"]))
        assert g["per_1k"][k] == pytest.approx(1000.0 * alone["ess"] / grads[chains].sum())
        assert g["per_1k_with_warmup"][k] == pytest.approx(
            1000.0 * alone["ess"] / (grads[chains].sum() + warm[chains].sum()))
        assert g["per_1k_x"][k] == pytest.approx(1000.0 * np.min(alone["ess_x"]) / grads[chains].sum())


def test_a_pooled_minimum_over_many_chains_reads_higher_than_groups():
    """Why ess_by_groups exists: iid draws have ESS = draws, but the minimum over many
    coordinates of noisy estimates sits below it, the more so the fewer the draws."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 200, 50))
    pooled = yardstick.ess_x_and_x2(x)["ess"] / x[:, :, 0].size
    grouped = np.median(yardstick.ess_by_groups(x, np.ones(32), np.zeros(32), 4)["ess"]) / (4 * 200)
    assert grouped < pooled < 1.0


def test_gradients_to_b2_counts_warmup_and_the_draws_needed():
    """iid N(0, 1) draws at 3 gradients each after 100 warmup gradients: b2_max falls as
    chi^2 / n, so the first draw after which it stays under 0.01 is found by brute force
    and the gradient count is 100 + 3 n."""
    rng = np.random.default_rng(2)
    C, N, D = 4, 500, 3
    x = rng.standard_normal((C, N, D))
    grads, n, b2_end = yardstick.gradients_to_b2(x, 3.0, 100.0, np.ones(D), 2 * np.ones(D))
    m2 = np.cumsum((x**2).sum(0), axis=0) / (C * np.arange(1, N + 1))[:, None]
    b2 = np.max((m2 - 1) ** 2 / 2, axis=1)
    stays = [k for k in range(N) if np.all(b2[k:] < 0.01)]
    assert n == stays[0] + 1
    assert grads == pytest.approx(100.0 + 3.0 * n)
    assert b2_end == pytest.approx(b2[-1])


def test_gradients_to_b2_is_none_for_a_biased_sampler_and_uses_the_first_chains():
    rng = np.random.default_rng(3)
    biased = 1.3 * rng.standard_normal((4, 400, 2))  # variance 1.69: b2 ~ 0.24
    g, n, b2_end = yardstick.gradients_to_b2(biased, 1.0, 0.0, np.ones(2), 2 * np.ones(2))
    assert g is None and n is None and b2_end > 0.1
    # 64 chains: only the first 4 count, so 60 exact chains cannot hide 4 biased ones
    many = np.concatenate([biased, rng.standard_normal((60, 400, 2))])
    assert yardstick.gradients_to_b2(many, 1.0, 0.0, np.ones(2), 2 * np.ones(2))[0] is None


def test_second_moments_by_chain_reads_each_chain_alone():
    """iid N(0, 1) chains: each chain's b2 excess is about 1 (its b2 is its own Monte Carlo
    noise) and every chain reaches b2_max < 0.01, at its own warmup plus 2 gradients per
    draw; a batch where 3 of 4 chains have variance 1.69 has median b2 excess far above 1,
    and only the exact chain reaches the threshold, so the median says "not reached"."""
    rng = np.random.default_rng(5)
    C, N, D = 4, 2000, 3
    exact = rng.standard_normal((C, N, D))
    warm, sample = [100.0, 200.0, 300.0, 400.0], [2.0 * N] * C
    out = yardstick.second_moments_by_chain(exact, warm, sample, np.ones(D), 2 * np.ones(D), np.zeros(D))
    assert 0.3 < out["b2_excess"] < 3.0
    assert out["b2_reached_chains"] == C
    assert out["b2_max"] < 0.01
    per_chain = [yardstick.gradients_to_b2(exact[c : c + 1], 2.0, warm[c], np.ones(D), 2 * np.ones(D),
                                           num_chains=1)[0] for c in range(C)]
    assert out["grads_to_b2"] == pytest.approx(np.median(per_chain))
    assert out["grads_per_chain_total"] == pytest.approx(250.0 + 2.0 * N)
    mixed = np.concatenate([exact[:1], 1.3 * exact[1:]])
    bad = yardstick.second_moments_by_chain(mixed, warm, sample, np.ones(D), 2 * np.ones(D), np.zeros(D))
    assert bad["b2_excess"] > 20.0 and bad["b2_max"] > 0.1
    assert bad["b2_reached_chains"] == 1 and bad["grads_to_b2"] is None


def test_median_not_reached_counts_none_as_larger_than_any_number():
    """The one rule for medians over runs or chains with "not reached" (``None``) values, used
    by ``aggregate_seeds``, ``run_pyro.median_record`` and ``second_moments_by_chain``."""
    assert yardstick.median_not_reached([10, None, None]) is None
    assert yardstick.median_not_reached([10, 12, None]) == 12.0
    assert yardstick.median_not_reached([3, 1, 2]) == 2.0
    assert yardstick.median_not_reached([None]) is None
    assert results_io.is_number_or_none([1.0, None]) and not results_io.is_number_or_none([None, None])
    assert not results_io.is_number_or_none([True, 1.0]) and not results_io.is_number_or_none(["a", 1.0])


def test_aggregate_seeds_medians_ranges_and_not_reached():
    recs = [
        {"target": "t", "sampler": "s", "seed": k, "status": "ok", "ess": e, "g": g, "label": "L"}
        for k, (e, g) in enumerate([(10.0, 5.0), (30.0, None), (20.0, None)])
    ] + [{"target": "t", "sampler": "u", "seed": 0, "status": "error", "error": "boom"}]
    agg = {r["sampler"]: r for r in results_io.aggregate_seeds(recs)}
    s = agg["s"]
    assert s["ess"] == 20.0 and s["range"]["ess"] == (10.0, 30.0)
    assert s["g"] is None and s["range"]["g"] == (5.0, None)  # 2 of 3 seeds never reached
    assert s["seeds"] == [0, 1, 2] and s["label"] == "L"
    assert agg["u"]["status"] == "error"


def test_merge_results_keeps_one_record_per_seed():
    old = [{"target": "a", "sampler": "x", "seed": 0, "v": 1}, {"target": "a", "sampler": "x", "seed": 1, "v": 2}]
    new = [{"target": "a", "sampler": "x", "seed": 1, "v": 3}]
    merged = results_io.merge_results(old, new, ["a"], ["x"])
    assert [(r["seed"], r["v"]) for r in merged] == [(0, 1), (1, 3)]


def test_target_table_rows_for_finished_and_failed_runs():
    results = [{"target": "t", "sampler": "y", "status": "error", "error": "ValueError: bad\nmore"},
               {"target": "t", "sampler": "x", "status": "ok", "v": 1.5},
               {"target": "u", "sampler": "x", "status": "ok", "v": 9.0}]
    lines = results_io.target_table(results, "t", ["x", "y", "z"], {"x": "X", "y": "Y", "z": "Z"},
                                    [("value", "v"), ("twice", "v")], lambda r, key: str(r[key]))
    assert lines == ["| sampler | value | twice |", "|---|---|---|", "| X | 1.5 | 1.5 |",
                     "| Y | error: ValueError: bad | |"]


def _benchmark_run(tmp_path, argv):
    p = argparse.ArgumentParser()
    runner.add_output_options(p, out_help="", fresh_help="", merge_from_help="", render_help="")
    args = p.parse_args(argv)
    return runner.BenchmarkRun("run_x", args, argv, out=str(tmp_path / "x.json"), mode="quick", config={"n": 1},
                               machine={}, target_order=["t"], sampler_order=["a", "b"],
                               markdown=lambda payload: f"{len(payload['results'])} rows", meta={"extra": 1})


def test_benchmark_run_records_a_failure_saves_each_attempt_and_merges(tmp_path):
    md = tmp_path / "doc.md"
    run = _benchmark_run(tmp_path, ["--md", str(md)])

    def boom():
        raise RuntimeError("broken sampler")

    failed = run.attempt({"target": "t", "sampler": "b"}, boom)
    assert list(failed) == ["target", "sampler", "status", "error", "traceback", "script_seconds"]
    assert failed["error"] == "RuntimeError: broken sampler" and "boom" in failed["traceback"]
    saved = json.loads((tmp_path / "x.json").read_text())
    assert list(saved["meta"]) == ["mode", "command", "date", "machine", "config", "merged_from_earlier", "extra"]
    assert saved["meta"]["command"] == f"python benchmarks/run_x.py --md {md}"
    assert "<!-- BEGIN run_x:quick -->\n1 rows\n<!-- END run_x:quick -->" in md.read_text()
    run.attempt({"target": "t", "sampler": "a"}, lambda v: {"status": "ok", "v": v}, 2.0)
    assert [r["sampler"] for r in json.loads((tmp_path / "x.json").read_text())["results"]] == ["a", "b"]
    # a second run of the same configuration keeps the rows it does not re-run
    rerun = _benchmark_run(tmp_path, ["--no-md"])
    rerun.attempt({"target": "t", "sampler": "a"}, lambda: {"status": "ok", "v": 3.0})
    rows = json.loads((tmp_path / "x.json").read_text())["results"]
    assert [(r["sampler"], r.get("v")) for r in rows] == [("a", 3.0), ("b", None)]
    assert _benchmark_run(tmp_path, ["--fresh", "--no-md"]).previous == []


# ---------------------------------------------------------------------------------------
# posteriordb: names, data location and the judge


def test_grid_runs_every_case_prints_each_row_and_saves_the_command(tmp_path, capsys):
    """``runner.grid_parser`` / ``runner.run_grid`` (``model_zoo.py``, ``wide_correlated.py``)."""
    out = tmp_path / "grid.json"
    argv = ["--models", "m2", "--seeds", "0", "3", "--out", str(out)]
    args = runner.grid_parser("Doc.\n\nMore.", "--models", ["m1", "m2"], ["a", "b"]).parse_args(argv)
    assert (args.models, args.samplers, args.seeds) == (["m2"], ["a", "b"], [0, 3])
    cases = [(m, s, seed) for m in args.models for s in args.samplers for seed in args.seeds]

    def render(rows):
        return "\n".join(["| head |"] + [f"| {r['case']} |" for r in rows])

    rows = runner.run_grid("grid_x", argv, cases, lambda *case: {"case": "-".join(map(str, case))}, render,
                           args.out)
    assert [r["case"] for r in rows] == ["m2-a-0", "m2-a-3", "m2-b-0", "m2-b-3"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[:4] == ["| m2-a-0 |", "| m2-a-3 |", "| m2-b-0 |", "| m2-b-3 |"]  # as each ends
    assert printed[4:] == render(rows).splitlines()
    saved = json.loads(out.read_text())
    assert saved == {"command": "python benchmarks/grid_x.py " + " ".join(argv), "rows": rows}


def test_split_flat_name_and_flat_draws():
    assert pdb.split_flat_name("beta[2]") == ("beta", (1,))
    assert pdb.split_flat_name("z[2,1]") == ("z", (1, 0))
    assert pdb.split_flat_name("sigma") == ("sigma", ())
    samples = {"beta": np.arange(2 * 3 * 4).reshape(2, 3, 4), "sigma": np.ones((2, 3))}
    flat = pdb.flat_draws(samples, ["beta[4]", "sigma"])
    np.testing.assert_array_equal(flat["beta[4]"], samples["beta"][:, :, 3])
    with pytest.raises(KeyError, match="no site 'tau'"):
        pdb.flat_draws(samples, ["tau"])


def test_missing_shared_data_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv(shared_data.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="posteriordb_dev.*ESH_KERNELS_SHARED"):
        pdb.load_data("sblrc-blr")


def _iid(rng, loc, scale, chains=4, n=1000):
    return loc + scale * rng.standard_normal((chains, n))


def test_judge_passes_exact_draws_and_fails_shifted_or_stuck_ones():
    rng = np.random.default_rng(4)
    ref = {"a": _iid(rng, 0.0, 1.0, 10), "b[1]": _iid(rng, 5.0, 0.1, 10)}
    good = {"a": _iid(rng, 0.0, 1.0), "b[1]": _iid(rng, 5.0, 0.1)}
    v = pdb_judge.judge(good, ref)
    assert v["verdict"] == "pass", v["failed"]
    assert v["z_max"] < pdb_judge.Z_MAX and 0.9 < v["sd_ratio_min"] <= v["sd_ratio_max"] < 1.1

    shifted = {"a": good["a"] + 0.3, "b[1]": good["b[1]"]}  # 0.3 sd: ~ 17 MCSE
    v = pdb_judge.judge(shifted, ref)
    assert v["verdict"] == "fail" and any(f.startswith("a mean") for f in v["failed"])

    narrow = {"a": 0.7 * good["a"], "b[1]": good["b[1]"]}
    v = pdb_judge.judge(narrow, ref)
    assert v["verdict"] == "fail" and any(f.startswith("a sd") for f in v["failed"])

    # one chain stuck far away: R-hat and ESS fail even though its MCSE is huge
    stuck = {"a": good["a"].copy(), "b[1]": good["b[1]"]}
    stuck["a"][0] = 3.0 + 0.01 * rng.standard_normal(1000)
    v = pdb_judge.judge(stuck, ref)
    assert v["verdict"] == "fail"
    assert any(f.startswith("R-hat") for f in v["failed"]) and v["rhat_max_param"] == "a"
