"""Lifecycle overhead: the Prefect lifecycle flow vs a bare script doing the same library
work (the project's pure functions: Polars/Pandera, LightGBM/Optuna, MLflow, BentoML) on
the same data with the same trial budget and split — and a cached re-run vs a cold run. Beside
the times, each variant's candidate on the test split: the task's tuning metric (binary: ROC AUC;
regression: RMSE), so the orchestration is seen to cost nothing in model quality.

    python -m benchmarks.lifecycle --config configs/default.yaml --runs 3 --n-trials 50
    python -m benchmarks.lifecycle --config configs/default.yaml --rows 1000000 --n-trials 10
    python -m benchmarks.lifecycle --config configs/<regression>.yaml --runs 1 --n-trials 20 --variants bare flow

Each run is a fresh process (imports and, for the flow, Prefect's ephemeral API included),
in a fresh workdir and results folder (cold); "cached" re-runs the flow on the same workdir and results
folder; "on a running server" uses a `prefect server start` (as `make stack` does)
instead of the ephemeral API each process starts. Prints medians, the ratio to bare,
and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.measure import ROOT, isolated_env, run_measured


# -- the bare script: the same work, no orchestration ----------------------------------------
def bare_lifecycle(config: Path, workdir: Path, n_trials: int) -> dict:
    import mlflow

    from tasks.core.cast import clean
    from tasks.core.features import add_features, encode_target, feature_matrix
    from tasks.core.gate import apply_gate
    from tasks.core.model import TabularModel
    from tasks.core.prepare import QuarantineReport, assign_splits, split_quarantine, top_failing_checks
    from tasks.core.schema import find_failures
    from tasks.core.spec import load_spec
    from tasks.core.task.kinds import task_of
    from tasks.evaluate import cross_validate, explain_sample, global_importance, save_plots, shap_values
    from tasks.stores import registry
    from tasks.stores.bentos import build_bento, import_model
    from tasks.stores.snapshots import fingerprint_source, read_source, read_split, write_snapshot
    from tasks.train import base_params, decision_on_validation, fit_baselines, fit_final, matrices
    from tasks.tune import tune

    spec = load_spec(config, n_trials=n_trials)
    task = task_of(spec)
    # prepare
    fingerprint = fingerprint_source(spec)
    raw = read_source(spec)
    failures = find_failures(raw, spec)
    kept, quarantined = split_quarantine(raw, failures)
    qpath = workdir / "quarantine.parquet"
    quarantined.write_parquet(qpath)
    report = QuarantineReport(
        path=str(qpath), rows_in=raw.height, rows_quarantined=quarantined.height,
        max_fraction=spec.quarantine.max_fraction, top_checks=top_failing_checks(failures),
    )  # fmt: skip
    split = assign_splits(add_features(clean(kept, spec), spec), spec)
    manifest, manifest_path = write_snapshot(split, spec, fingerprint, report, workdir)
    # train
    train, validation = read_split(manifest_path, "train"), read_split(manifest_path, "validation")
    m = matrices(train, validation, spec)
    baselines = fit_baselines(m, spec)
    tuning = tune(m, spec)
    booster_text = fit_final(m, spec, tuning)
    decision, _ = decision_on_validation(m, booster_text, spec)
    cfg = registry.default_tracking(workdir, spec.name, spec.registered_model_name)
    experiment_id = cfg.activate()
    metadata = {"data_version": manifest.data_version, "spec_hash": spec.spec_hash, "training_hash": spec.training_hash}
    model = TabularModel(spec, booster_text, decision, metadata)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(base_params(spec) | tuning.best_params)
        registry.log_trials(cfg, experiment_id, run.info.run_id, tuning.trials, f"validation_{task.tuning_metric}")
        for name, baseline in baselines.items():
            registry.save_baseline(cfg, run.info.run_id, baseline, name)
        info = registry.log_model(cfg, run.info.run_id, model, train, metadata)
    # evaluate
    test = read_split(manifest_path, "test")
    y = encode_target(test, spec)
    loaded = registry.load_model(cfg, info.model_uri)
    scores = loaded.predict_scores(test)
    candidate = task.metrics(y, scores, loaded.decision)
    candidate |= task.assess(test, y, scores, loaded.decision).metrics
    x_test = feature_matrix(test, spec)
    others = {}
    for name, baseline in baselines.items():
        fitted = task.baseline_decision(m.y_val, task.baseline_scores(baseline, m.x_val))
        others[name] = task.metrics(y, task.baseline_scores(baseline, x_test), fitted)
    categorical = [spec.feature_names.index(c) for c in spec.categorical_features]
    x_train, y_train = feature_matrix(train, spec), encode_target(train, spec)
    rounds = loaded.booster.current_iteration()
    cv = cross_validate(task, x_train, y_train, base_params(spec) | tuning.best_params, rounds,
                        spec.evaluation.cv_folds, categorical, spec.training.seed)  # fmt: skip
    sample = explain_sample(x_test, spec.evaluation.explain_rows, spec.training.seed)
    contributions = shap_values(loaded.booster, sample)
    importance = global_importance(loaded.booster, contributions, spec.feature_names)
    save_plots(workdir / "plots", task, y, scores, loaded.decision, importance, contributions, sample,
               spec.feature_names)  # fmt: skip
    others["champion"] = None
    verdict = apply_gate(spec.gate, candidate | cv, others, task)
    # register + package
    version, _ = registry.register_version(cfg, run.info.run_id, info.model_uri, {})
    if verdict.passed:
        registry.promote(cfg, version.version)
    model_tag, _ = import_model(cfg, spec, registry.version_by_alias(cfg, "champion") or version)
    bento_tag, _ = build_bento(spec, model_tag, workdir)
    return {"test": candidate[task.validation_metric], "bento": bento_tag}


def figure_on_test(log: Path, metric: str) -> float:
    """The candidate's test `metric` from a run's last JSON line: the bare script's `test`, or the
    flow's evaluation."""
    last = next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{"))
    body = json.loads(last)
    return body["test"] if "test" in body else body["evaluate"]["candidate"][metric]


# -- a large table: the sample resampled with noise ---------------------------------------------
def large_config(config: Path, rows: int, folder: Path) -> Path:
    """A copy of the table with `rows` rows (resampled, numeric columns jittered) and its config."""
    import numpy as np
    import polars as pl
    import yaml

    from tasks.core.spec import load_spec, read_yaml
    from tasks.stores.snapshots import read_source

    spec = load_spec(config)
    raw = read_source(spec)
    rng = np.random.default_rng(0)
    big = raw.sample(rows, with_replacement=True, seed=0)
    jitter = []
    for name, col in spec.columns.items():
        if col.type == "float" and col.categories is None:
            noise = pl.Series(rng.normal(1.0, 0.02, rows))
            value = (pl.col(name).cast(pl.Float64, strict=False) * noise).round(2)
            jitter.append(value.clip(col.min, col.max).cast(pl.String).alias(name))
    big = big.with_columns(jitter)
    data = folder / f"{spec.name}-{rows}.parquet"
    big.write_parquet(data)
    body = read_yaml(config)
    body["source"] = {"path": str(data)}
    body["quarantine"] = {"max_fraction": 0.05, "duplicates": "keep"}  # resampled: copies by construction
    target = folder / f"{spec.name}-{rows}.yaml"
    target.write_text(yaml.safe_dump(body))
    return target


# -- the driver ------------------------------------------------------------------------------------
def start_server(scratch: Path, home: Path) -> tuple[subprocess.Popen, str]:
    """A `prefect server start` on loopback, as `make stack` runs it."""
    import httpx

    from tasks.stores.backends import free_port

    port = free_port()
    env = isolated_env(scratch, scratch / "server-home")
    log = (scratch / "server.log").open("w")
    prefect = str(Path(sys.executable).with_name("prefect"))
    proc = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/api"
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("the Prefect server did not start")


VARIANTS = ("bare", "flow", "server")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lifecycle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=50)
    parser.add_argument("--rows", type=int, default=0, help="resample the table to this many rows (0: as is)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="bare script, flow on the temporary API, flow on a running server")  # fmt: skip
    parser.add_argument("--bare-run", type=Path, help=argparse.SUPPRESS)  # internal: one bare run in this workdir
    args = parser.parse_args(argv)
    if args.bare_run:
        print(json.dumps(bare_lifecycle(args.config, args.bare_run, args.n_trials)))
        return

    from tasks.core.spec import load_spec
    from tasks.core.task.kinds import task_of

    scratch = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    config = large_config(args.config.resolve(), args.rows, scratch) if args.rows else args.config.resolve()
    py = sys.executable
    home = scratch / "prefect-home"  # one Prefect home, like a user's: its database exists after the first run
    if "flow" in args.variants:  # only the temporary API reads that database (a running server has its own)
        warm = isolated_env(scratch, home) | {"PREFECT_LOCAL_STORAGE_PATH": str(scratch / "warm-up")}
        warm_up = "from prefect import flow\nfrom flows.cli import local_defaults\n"
        warm_up += "with local_defaults(): flow(lambda: None)()"
        subprocess.run([py, "-c", warm_up], env=warm, cwd=ROOT, check=True, capture_output=True)
    server, api = start_server(scratch, home) if "server" in args.variants else (None, "")
    figures: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("bare", "flow", "cached", "server", "server-cached")
    }
    metric = task_of(load_spec(config)).validation_metric  # the task's tuning metric, on the test split
    quality: dict[str, list[float]] = {k: [] for k in figures}
    try:
        for run in range(args.runs):
            for variant in args.variants:
                folder = scratch / f"{variant}-{run}"
                work = folder / "work"
                work.mkdir(parents=True)
                env = isolated_env(folder, home) | ({"PREFECT_API_URL": api} if variant == "server" else {})
                if variant == "bare":
                    cmd = [py, "-m", "benchmarks.lifecycle", "--config", str(config), "--n-trials", str(args.n_trials),
                           "--bare-run", str(work)]  # fmt: skip
                else:
                    cmd = [py, "-m", "flows.lifecycle", "--config", str(config), "--workdir", str(work),
                           "--n-trials", str(args.n_trials)]  # fmt: skip
                figures[variant].append(run_measured(cmd, env, folder / "run.log"))
                quality[variant].append(figure_on_test(folder / "run.log", metric))
                if variant != "bare":  # the same command again on the same workdir
                    again = "cached" if variant == "flow" else "server-cached"
                    figures[again].append(run_measured(cmd, env, folder / "cached.log"))
                    quality[again].append(figure_on_test(folder / "cached.log", metric))
                print(f"run {run + 1}/{args.runs} {variant}: {figures[variant][-1][0]:.1f}s", file=sys.stderr)
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)

    def median(name: str) -> float:
        return statistics.median(s for s, _ in figures[name])

    bare = median("bare")
    rows = args.rows or "sample"
    print(f"\n## Lifecycle overhead — {config.stem} ({rows} rows), {args.n_trials} trials, {args.runs} runs, medians")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} cores · Python "
          f"{platform.python_version()}\n")  # fmt: skip
    print(f"| variant | seconds | ratio to bare | overhead s | peak RSS MiB | test {metric} |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {"bare": "bare script (same library calls)", "flow": "lifecycle flow, cold",
             "cached": "lifecycle flow, cached re-run", "server": "lifecycle flow, cold, on a running server",
             "server-cached": "lifecycle flow, cached re-run, on a running server"}  # fmt: skip
    for name, label in names.items():
        if figures[name]:
            t, peak = median(name), max(p for _, p in figures[name])
            overhead = f"{t - bare:.1f}" if "cached" not in name else ""
            figure = statistics.median(quality[name])
            print(f"| {label} | {t:.1f} | {t / bare:.2f} | {overhead} | {peak:.0f} | {figure:.4f} |")
    ratios = [
        f"{median(c) / median(v):.1%} ({where})"
        for v, c, where in (("flow", "cached", "ephemeral API"), ("server", "server-cached", "on a running server"))
        if figures[v]
    ]
    if ratios:
        print(f"\ncached re-run / cold flow: {', '.join(ratios)}")


if __name__ == "__main__":
    main()
