"""Shared studies of ``edgeresnet tune``: the study in Optuna's relational storage, checked and opened.

``--storage`` (``sqlite:///study.db`` on one machine, ``postgresql://...`` for many) and ``--study`` put the
study in Optuna's RDBStorage, so several processes work one study, a crashed worker's trial is retried
(heartbeats), and a later run resumes it. The study keeps the search's fingerprint (space, method, base
recipe) and refuses workers of another search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.experiments.tune_space import ParamSpec

STUDY_ATTR = "edgeresnet.experiments.tune"  # study user attribute: the fingerprint of the search this study holds
# Recipe fields that may differ between the machines of one study without changing what a trial measures:
# where the data and initial weights lie, and which device / loader workers run it.
_MACHINE_FIELDS = ("data", "init", "device", "workers")
# DB-API modules SQLAlchemy imports per dialect+driver, and the PyPI package that provides each.
_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pg8000": "pg8000",
                    "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
                    "mysql": "mysql-connector-python", "oracledb": "oracledb", "pyodbc": "pyodbc"}


@dataclass(frozen=True)
class StudyStore:
    """A checked ``--storage`` URL: what SQLAlchemy connects to, and how it is shown (password hidden)."""

    url: str
    shown: str
    engine_kwargs: dict[str, Any]


def hide_password(text: str) -> str:
    import re

    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", text)


def check_storage(url: str, option: str = "--storage") -> StudyStore:
    """Refuse a storage URL that cannot work, before any training: one line naming the fix."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "use sqlite:///study.db (one machine) or postgresql://USER:PASSWORD@HOST/DB (several machines)"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"{option} {hide_password(url)!r}: not a database URL; {example}") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise UserError(f"{option} {shown}: SQLAlchemy knows no database {parsed.drivername!r}; {example}") from None
    # SQLAlchemy 2.0 dialects load their DB-API module in import_dbapi() (1.4: the dbapi() classmethod).
    load: Any = getattr(dialect, "import_dbapi", None) or dialect.dbapi
    try:
        load()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "its driver")
        raise UserError(f"{option} {shown}: the {parsed.get_backend_name()} driver {module or parsed.drivername} is "
                        f"not installed; pip install {package}") from None
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise UserError(f"{option} {shown}: an in-memory SQLite database dies with this process; give a file, "
                            "e.g. sqlite:///study.db")
        if not database.startswith("file:"):
            path = Path(database)
            if path.is_dir():
                raise UserError(f"{option} {shown}: {path} is a directory; name the database file, e.g. "
                                f"sqlite:///{path / 'study.db'}")
            if not path.parent.is_dir():
                raise UserError(f"{option} {shown}: directory {path.parent} does not exist; create it "
                                f"(mkdir -p {path.parent}) or put the database in an existing one")
        # Python sqlite3.connect(timeout=5.0): seconds a connection waits for another's write lock before
        # 'database is locked'; several workers of one study write the same file.
        engine_kwargs["connect_args"] = {"timeout": 60}
    return StudyStore(url, shown, engine_kwargs)


def search_identity(space: dict[str, ParamSpec], base: Any, method: str) -> dict[str, Any]:
    """What every worker of one study must agree on, with its sha256 fingerprint (kept in the study)."""
    import hashlib
    import json

    recipe = {k: v for k, v in base.to_dict().items() if k not in _MACHINE_FIELDS}
    body = {"objective": "maximize best validation top-1 (%)", "method": method,
            "space": {n: s.to_dict() for n, s in space.items()}, "base_recipe": recipe}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {**body, "fingerprint": digest}


def _identity_mismatch(have: dict[str, Any], want: dict[str, Any]) -> str:
    if have.get("method") != want["method"]:
        return f"its method is {have.get('method')}, this run's {want['method']}"
    hs, ws = have.get("space") or {}, want["space"]
    if hs != ws:
        names = sorted(n for n in set(hs) | set(ws) if hs.get(n) != ws.get(n))
        return f"its search space differs in {', '.join(names)} (study: {hs}; this run: {ws})"
    hr, wr = have.get("base_recipe") or {}, want["base_recipe"]
    names = sorted(n for n in set(hr) | set(wr) if hr.get(n) != wr.get(n))
    return "its base recipe differs in " + ", ".join(f"{n} (study {hr.get(n)!r}, this run {wr.get(n)!r})" for n in names)


def _retry_callback(max_retry: int | None) -> tuple[str, Any]:
    """Optuna >= 4.9 names it RetryHeartbeatStaleTrialCallback (RDBStorage heartbeat_stale_trial_callback); 4.0-4.8
    RetryFailedTrialCallback (failed_trial_callback): Optuna 5.1 RDBStorage docstring, 'Deprecated in v4.9.0'."""
    import optuna.storages as storages

    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is not None:
        return "heartbeat_stale_trial_callback", cls(max_retry=max_retry)
    return "failed_trial_callback", storages.RetryFailedTrialCallback(max_retry=max_retry)


def open_study(store: StudyStore, name: str, identity: dict[str, Any], *, sampler: Any, pruner: Any,
               heartbeat_interval: int = 60, grace_period: int | None = None, max_retry: int | None = 3,
               join_wait_s: float = 10.0) -> tuple[Any, bool]:
    """Create the study, or join it when it exists and holds the same search; returns (study, created)."""
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

    where = f"--study {name} in {store.shown}"
    if not name or not name.strip():
        raise UserError("--study: give the study a name (the workers of one search share it)")
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback_kw, retry = _retry_callback(max_retry)
        try:
            # RDBStorage: a worker records a heartbeat every heartbeat_interval s while its trial runs; before
            # asking for a trial, optimize() fails RUNNING trials silent for grace_period s (default 2x the interval)
            # and the callback re-queues each as a WAITING trial with the same parameters.
            for attempt in range(5):
                try:
                    storage = optuna.storages.RDBStorage(store.url, engine_kwargs=store.engine_kwargs,
                                                         heartbeat_interval=heartbeat_interval,
                                                         grace_period=grace_period, **{callback_kw: retry})
                    break
                except (OperationalError, IntegrityError) as exc:
                    # RDBStorage runs SQLAlchemy metadata.create_all (check, then CREATE TABLE): two workers
                    # starting on a new database race, and the loser gets 'table ... already exists' (measured
                    # with two 'tune' processes on one new SQLite file); a second try finds the tables.
                    if attempt == 4 or not isinstance(exc, IntegrityError) and "already exists" not in str(exc):
                        raise
                    time.sleep(0.5 + attempt)
            try:
                # load_if_exists=False so exactly one worker (the one whose INSERT of the unique study name
                # succeeds) creates the study and writes its fingerprint; the others get DuplicatedStudyError.
                study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                            pruner=pruner, load_if_exists=False)
                created = True
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
                created = False
            if created:
                study.set_user_attr(STUDY_ATTR, identity)
                return study, True
            if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
                got = ", ".join(d.name.lower() for d in study.directions)
                raise UserError(f"{where}: the study's direction is {got}; 'edgeresnet tune' maximizes validation "
                                "top-1; choose another --study")
            deadline = time.monotonic() + join_wait_s
            have = study.user_attrs.get(STUDY_ATTR)
            while have is None and time.monotonic() < deadline:  # its creator writes the fingerprint next
                time.sleep(0.2)
                have = optuna.load_study(study_name=name, storage=storage).user_attrs.get(STUDY_ATTR)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            # Optuna's RDBStorage re-raises a failed commit (e.g. SQLite "database is locked") as its own
            # StorageInternalError, not a SQLAlchemyError (optuna/storages/_rdb/storage.py, _create_scoped_session).
            detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            raise UserError(f"{where}: cannot use the study database ({hide_password(detail)})") from None
    if not isinstance(have, dict) or "fingerprint" not in have:
        raise UserError(f"{where}: the study was not made by 'edgeresnet tune' (no search fingerprint); "
                        "choose another --study")
    if have["fingerprint"] != identity["fingerprint"]:
        raise UserError(f"{where}: the study holds another search: {_identity_mismatch(have, identity)}; run with "
                        "the study's --space and recipe, or choose another --study")
    return study, False
