"""A recipe search shared through Optuna's relational storage (``tune --storage URL --study NAME``).

Workers are real processes on one SQLite study: ``edgeresnet tune`` itself for the two concurrent
workers and the resumed third run, and a small script calling ``edgeresnet.experiments.tune.tune`` for the killed
worker (it needs a 1 s heartbeat, which the command leaves at its 60 s default). Trials are ResNet18 (small
stem) on digits at 8x8, one optimizer step each, one torch thread per process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from edgeresnet.errors import UserError

SPACE = "lr: {type: loguniform, low: 0.01, high: 0.1}\n"
RECIPE = ["--image-size", "8", "--small-stem", "--epochs", "1", "--max-steps", "1", "--batch-size", "8",
          "--no-augment"]
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _worker(tmp_path: Path, url: str, out: str, trials: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edgeresnet", "tune", "--space", str(tmp_path / "space.yaml"), "--storage", url,
           "--study", "fmnist", "--trials", str(trials), "--no-prune", *RECIPE, "--out", str(tmp_path / out),
           "--no-progress", "--json", str(tmp_path / f"{out}.json")]
    return subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output
    return output


def _load(url: str, name: str = "fmnist"):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


# -- several workers, one study ---------------------------------------------------------------------------------


def test_two_workers_share_one_sqlite_study_and_a_third_run_resumes_it(tmp_path):
    from edgeresnet.train.recipe import merge_recipe, read_recipe_file

    (tmp_path / "space.yaml").write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    workers = [_worker(tmp_path, url, "a", 3), _worker(tmp_path, url, "b", 3)]
    for proc in workers:
        _finish(proc)
    reports = [json.loads((tmp_path / f"{out}.json").read_text()) for out in ("a", "b")]
    mine = [r["study"]["this_run_trials"] for r in reports]
    assert [len(m) for m in mine] == [3, 3]  # --trials 3: three more trials from each worker
    assert sorted(mine[0] + mine[1]) == list(range(6))  # unique numbers, none run twice, counts add up
    study = _load(url)
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.params["lr"] for t in study.trials}) == 6  # the workers' samplers do not repeat each other
    assert sum(r["study"]["created_by_this_run"] for r in reports) == 1
    for report in reports:  # each worker's best is the best of what had finished in the study when it ended
        done = [t for t in report["trials"] if t["state"] == "complete"]
        assert report["best"]["best_val_acc"] == max(t["best_val_acc"] for t in done)

    third = _worker(tmp_path, url, "c", 1)
    _finish(third)
    report = json.loads((tmp_path / "c.json").read_text())
    study = _load(url)
    assert len(study.trials) == 7 and report["study"]["this_run_trials"] == [6]
    assert report["counts"] == {"complete": 7, "pruned": 0, "failed": 0}
    assert report["best"]["trial"] == study.best_trial.number
    path = tmp_path / "c" / "best-recipe.yaml"
    recipe = merge_recipe(read_recipe_file(path), config_path=path)  # what 'edgeresnet train --config' reads
    assert recipe.lr == study.best_trial.params["lr"] and recipe.image_size == 8
    manifest = json.loads((tmp_path / "c" / "best-recipe.yaml.json").read_text())
    assert manifest["trial"] == study.best_trial.number
    assert manifest["study"]["fingerprint"] == study.user_attrs["edgeresnet.experiments.tune"]["fingerprint"]
    assert f"trial {study.best_trial.number} of study fmnist" in path.read_text().splitlines()[0]


WORKER = textwrap.dedent("""
    import json, os, signal, sys
    from edgeresnet.train.recipe import TrainRecipe
    from edgeresnet.experiments.tune import tune
    from edgeresnet.experiments.tune_space import parse_space

    url, kill, out = sys.argv[1], sys.argv[2] == "kill", sys.argv[3]

    def on_trial(number, planned, params):
        if kill:  # die mid-trial, its trial left RUNNING in the storage, as a crashed machine leaves it
            os.kill(os.getpid(), signal.SIGKILL)

    base = TrainRecipe(image_size=8, small_stem=True, epochs=1, max_steps=1, batch_size=8, augment=False)
    space = parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}})
    result = tune(base, space, method="bayes", trials=1, prune=False, storage=url, study_name="fmnist",
                  heartbeat_interval=1, grace_period=2, on_trial=on_trial)
    with open(out, "w") as f:
        json.dump(result.to_dict(), f)
""")


def test_a_killed_workers_trial_is_failed_by_heartbeat_and_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "worker.py").write_text(WORKER)
    killed = subprocess.run([sys.executable, "worker.py", url, "kill", "k.json"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    study = _load(url)
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    lost = study.trials[0].params
    time.sleep(3)  # past the 2 s grace period: its heartbeat is stale now
    done = subprocess.run([sys.executable, "worker.py", url, "run", "r.json"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    study = _load(url)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    retry = study.trials[1]
    assert retry.params == lost and retry.system_attrs["failed_trial"] == 0  # the same recipe, run again
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["study"]["this_run_trials"] == [1] and report["best"]["trial"] == 1
    assert report["trials"][0]["state"] == "failed" and "retried as trial 1" in report["trials"][0]["error"]


# -- bad input: one line, exit 2, nothing written ------------------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("notaurl", "--storage 'notaurl': not a database URL; use sqlite:///study.db"),
    ("foo://host/db", "--storage foo://host/db: SQLAlchemy knows no database 'foo'"),
    ("sqlite:///{tmp}/nodir/study.db", "nodir does not exist; create it (mkdir -p"),
    ("sqlite://", "an in-memory SQLite database dies with this process; give a file"),
    ("sqlite:///{tmp}", "is a directory; name the database file"),
    pytest.param("postgresql+psycopg2://me:s3cret@db.lan/optuna",
                 "--storage postgresql+psycopg2://me:***@db.lan/optuna: the postgresql driver psycopg2 is not "
                 "installed; pip install psycopg2-binary",
                 marks=pytest.mark.skipif(importlib.util.find_spec("psycopg2") is not None,
                                          reason="psycopg2 is installed here")),
])
def test_bad_storage_urls(tmp_path, capsys, url, message):
    (tmp_path / "space.yaml").write_text(SPACE)
    code, _, err = run_cli(capsys, "tune", "--space", str(tmp_path / "space.yaml"), "--storage",
                           url.format(tmp=tmp_path), "--study", "s", "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(code, err, message)
    assert "s3cret" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no --out, no database file


def test_storage_and_study_go_together_and_grid_stays_on_one_process(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    code, _, err = run_cli(capsys, "tune", "--space", str(tmp_path / "space.yaml"), "--storage", url,
                           "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(code, err, "--storage and --study go together")
    (tmp_path / "grid.yaml").write_text("lr: {type: categorical, choices: [0.05, 0.1]}\n")
    code, _, err = run_cli(capsys, "tune", "--space", str(tmp_path / "grid.yaml"), "--method", "grid", "--storage",
                           url, "--study", "s", "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(code, err, "--method grid with --storage", "--method bayes")
    assert not (tmp_path / "study.db").exists()


def test_a_study_of_another_search_is_refused(tmp_path, capsys):
    import optuna

    from edgeresnet.experiments.tune_space import parse_space
    from edgeresnet.experiments.tune_storage import check_storage, open_study, search_identity
    from edgeresnet.train.recipe import TrainRecipe

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # as tune() sets it; INFO lines would land on stderr
    (tmp_path / "space.yaml").write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="loss", direction="minimize")
    base = TrainRecipe(image_size=8, small_stem=True, epochs=1, max_steps=1, batch_size=8, augment=False)
    other = search_identity(parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.3}}), base, "bayes")
    open_study(check_storage(url), "fmnist", other, sampler=None, pruner=None)  # made with another space
    args = ["tune", "--space", str(tmp_path / "space.yaml"), "--storage", url, *RECIPE, "--out", str(tmp_path / "o"),
            "--no-progress"]
    code, _, err = run_cli(capsys, *args, "--study", "loss")
    assert_one_line_error(code, err, "--study loss in sqlite:///", "the study's direction is minimize")
    code, _, err = run_cli(capsys, *args, "--study", "fmnist")
    assert_one_line_error(code, err, "the study holds another search: its search space differs in lr",
                          "'high': 0.3", "'high': 0.1")
    optuna.create_study(storage=url, study_name="foreign", direction="maximize")
    with pytest.raises(UserError, match="the study was not made by 'edgeresnet tune'"):
        open_study(check_storage(url), "foreign", other, sampler=None, pruner=None, join_wait_s=0)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["loss", "fmnist", "foreign"]
    assert not (tmp_path / "o").exists() and all(len(_load(url, n).trials) == 0 for n in ("loss", "fmnist"))


def test_a_study_whose_base_recipe_differs_is_refused_but_machine_fields_may_differ(tmp_path):
    from edgeresnet.experiments.tune_space import parse_space
    from edgeresnet.experiments.tune_storage import check_storage, open_study, search_identity
    from edgeresnet.train.recipe import TrainRecipe

    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}})
    base = TrainRecipe(image_size=8, epochs=1)
    _, created = open_study(check_storage(url), "s", search_identity(space, base, "bayes"), sampler=None, pruner=None)
    assert created
    elsewhere = TrainRecipe(image_size=8, epochs=1, device="cpu", workers=2, data="digits")
    _, created = open_study(check_storage(url), "s", search_identity(space, elsewhere, "bayes"), sampler=None,
                            pruner=None)
    assert not created
    with pytest.raises(UserError, match=r"its base recipe differs in epochs \(study 1, this run 2\)"):
        open_study(check_storage(url), "s", search_identity(space, TrainRecipe(image_size=8, epochs=2), "bayes"),
                   sampler=None, pruner=None)


def test_a_worker_that_loses_the_table_creation_race_tries_again(tmp_path, monkeypatch):
    """Two workers on a new database both run SQLAlchemy's check-then-CREATE TABLE; the loser's RDBStorage raises
    OperationalError 'table studies already exists' (seen with two 'tune' processes on one new SQLite file)."""
    import optuna
    from sqlalchemy.exc import OperationalError

    from edgeresnet.experiments.tune_space import parse_space
    from edgeresnet.experiments.tune_storage import check_storage, open_study, search_identity
    from edgeresnet.train.recipe import TrainRecipe

    calls: list[int] = []
    failure = Exception("table studies already exists")

    class Racing(optuna.storages.RDBStorage):  # a subclass: Optuna checks isinstance(storage, RDBStorage)
        def __init__(self, *args, **kwargs):
            calls.append(1)
            if failure is not None and len(calls) == 1:
                raise OperationalError("CREATE TABLE studies", {}, failure)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    identity = search_identity(parse_space({"lr": {"type": "float", "low": 0.01, "high": 0.1}}), TrainRecipe(), "bayes")
    study, created = open_study(check_storage(url), "s", identity, sampler=None, pruner=None)
    assert created and len(calls) == 2 and study.user_attrs["edgeresnet.experiments.tune"] == identity
    calls.clear()
    failure = Exception("unable to open database file")
    with pytest.raises(UserError, match=r"cannot use the study database \(unable to open database file\)"):
        open_study(check_storage(url), "s", identity, sampler=None, pruner=None)  # other errors: no retry


def test_a_database_failure_during_the_search_is_one_line(tmp_path, monkeypatch):
    """Optuna re-raises a failed commit (SQLite 'database is locked') as StorageInternalError, which is not a
    SQLAlchemyError: it must still end in one line, not a traceback."""
    import optuna

    from edgeresnet.experiments.tune import tune
    from edgeresnet.experiments.tune_space import parse_space
    from edgeresnet.train.recipe import TrainRecipe

    def locked(self, *args, **kwargs):
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit. database is locked")

    monkeypatch.setattr(optuna.study.Study, "optimize", locked)
    base = TrainRecipe(image_size=8, small_stem=True, epochs=1, max_steps=1, batch_size=8, augment=False)
    space = parse_space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}})
    with pytest.raises(UserError, match=r"the study database failed \(.*database is locked\)") as info:
        tune(base, space, method="bayes", trials=1, prune=False, storage=f"sqlite:///{tmp_path / 's.db'}",
             study_name="locked")
    assert "\n" not in str(info.value)
