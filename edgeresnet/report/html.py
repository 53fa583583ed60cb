"""One self-contained HTML report of a run directory: every stage the pipeline left there.

Why self-contained: the report is mailed, attached to CI runs and opened on machines without the run
directory; plots are embedded as base64 PNG, styles inline, no scripts, no external assets. The report
only reads: manifests (what made each artifact), benchmark results, evaluation/parity/history JSON and
CSV files, and PNGs; a file it cannot use is listed with the reason instead of failing the report.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet import __version__
from edgeresnet.artifacts import write_text_atomic
from edgeresnet.errors import UserError
from edgeresnet.report import compare, plots

MAX_JSON_CHARS = 6000  # raw JSON shown per file (manifests, unknown files)
MAX_FILES = 2000


@dataclass
class RunContents:
    root: Path
    manifests: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # (manifest file, content)
    results: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    evaluations: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    parity: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    histories: list[tuple[Path, list[dict[str, Any]]]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    other: list[tuple[Path, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# reading the run directory
# ---------------------------------------------------------------------------------------------
def _find(data: Any, key: str, depth: int = 4) -> Any:
    """First value stored under ``key`` anywhere in nested dicts (breadth first, bounded depth)."""
    level = [data]
    for _ in range(depth + 1):
        nxt = []
        for item in level:
            if isinstance(item, dict):
                if key in item:
                    return item[key]
                nxt.extend(v for v in item.values() if isinstance(v, (dict, list)))
            elif isinstance(item, list):
                nxt.extend(v for v in item[:50] if isinstance(v, (dict, list)))
        level = nxt
    return None


def _is_history(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(isinstance(v, dict) for v in value)
            and "epoch" in value[0])


def _read_csv_history(path: Path) -> list[dict[str, Any]] | None:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows or "epoch" not in rows[0]:
        return None
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value) if value not in (None, "") else None
            except ValueError:
                parsed[key] = value
        out.append(parsed)
    return out


def scan_run_dir(run_dir: str | Path) -> RunContents:
    from edgeresnet.bench.schema import validate

    root = Path(run_dir)
    if not root.exists():
        raise UserError(f"{root}: run directory not found; pass the directory the pipeline wrote into")
    if not root.is_dir():
        raise UserError(f"{root}: is a file; pass the run directory (the folder the pipeline wrote into)")
    contents = RunContents(root=root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))
    if len(files) > MAX_FILES:
        contents.skipped.append(f"{len(files)} files found; only the first {MAX_FILES} were read")
        files = files[:MAX_FILES]
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".png":
            contents.images.append(path)
        elif suffix == ".csv":
            history = _read_csv_history(path)
            if history:
                contents.histories.append((path, history))
        elif suffix == ".json":
            _classify_json(contents, path, validate)
    return contents


def _classify_json(contents: RunContents, path: Path, validate: Any) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        contents.skipped.append(f"{_rel(contents.root, path)}: unreadable JSON ({type(exc).__name__})")
        return
    if isinstance(data, dict) and str(data.get("schema", "")).startswith("edgeresnet.benchmark/"):
        try:
            contents.results.append((path, validate(data, _rel(contents.root, path))))
        except UserError as exc:
            contents.skipped.append(str(exc))
        return
    if isinstance(data, dict) and "kind" in data and "sha256" in data and "file" in data:
        contents.manifests.append((path, data))
        history = _find(data, "history", 3)
        if _is_history(history):
            contents.histories.append((path, history))
        return
    if _find(data, "top1_agreement", 3) is not None:
        contents.parity.append((path, data))
    elif isinstance(data, dict) and _find(data, "top1", 2) is not None and any("confusion" in k for k in _keys(data)):
        contents.evaluations.append((path, data))
    elif _is_history(_find(data, "history", 2)):
        contents.histories.append((path, _find(data, "history", 2)))
    elif _is_history(data):
        contents.histories.append((path, data))
    else:
        contents.other.append((path, data))


def _keys(data: Any, depth: int = 2) -> Iterable[str]:
    if isinstance(data, dict) and depth >= 0:
        for key, value in data.items():
            yield str(key)
            yield from _keys(value, depth - 1)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# HTML pieces
# ---------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c8cdd8;font-size:13px}
main{padding:8px 32px 40px;max-width:1280px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px}th,td{border-bottom:1px solid #e6e8ee;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eceef2;margin:6px 0}
.muted{color:#6b7385;font-size:12px}.warn{color:#8a4b00;font-size:12px}.bad{color:#a40000}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
pre{background:#f6f7f9;border:1px solid #e6e8ee;padding:8px;overflow:auto;max-height:320px}
details summary{cursor:pointer;font-size:13px;margin:4px 0}
nav a{margin-right:14px;font-size:13px;color:#2457c5;text-decoration:none}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{_e(v)}</td>' if numeric[i] else f"<td>{_e(v)}</td>" for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _raw(data: Any) -> str:
    text = json.dumps(data, indent=2, default=str)
    if len(text) > MAX_JSON_CHARS:
        text = text[:MAX_JSON_CHARS] + f"\n... ({len(text) - MAX_JSON_CHARS} more characters)"
    return f"<pre>{_e(text)}</pre>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def _pipeline_section(c: RunContents) -> str:
    if not c.manifests:
        return ""
    rows = []
    for path, m in sorted(c.manifests, key=lambda pm: str(pm[1].get("created", ""))):
        inputs = ", ".join(f"{role}: {Path(str(v.get('path', ''))).name}" for role, v in (m.get("inputs") or {}).items()
                           if isinstance(v, dict))
        created = str(m.get("created", "-")).replace("T", " ").split("+")[0]
        rows.append((created, m.get("kind", "-"), _rel(c.root, path)[: -len(".json")],
                     m.get("command", "-"), compare.fmt_bytes(m.get("size_bytes")), str(m.get("sha256", ""))[:12],
                     inputs or "-"))
    return ("<section id='pipeline'><h2>Pipeline stages</h2><p class='muted'>Every artifact with its sidecar "
            "manifest, in the order it was made.</p>"
            + _table(["created", "kind", "artifact", "command", "size", "sha256", "made from"], rows,
                     [False, False, False, False, True, False, False]) + "</section>")


def _training_section(c: RunContents) -> str:
    parts = []
    for path, history in c.histories:
        plot = plots.training_curves(history, title=f"Training: {_rel(c.root, path)}")
        last = history[-1]
        summary = ", ".join(f"{k}={_fmt(v)}" for k, v in last.items() if isinstance(v, (int, float)))
        parts.append(f"<h3>{_e(_rel(c.root, path))}</h3>{_img(plot, 'training curves')}"
                     f"<p class='muted'>{len(history)} epochs; last: {_e(summary)}</p>")
    curves = [p for p in c.images if any(w in p.name.lower() for w in ("curve", "train", "loss", "history"))]
    for path in curves:
        parts.append(f"<h3>{_e(_rel(c.root, path))}</h3>{_img(path.read_bytes(), path.name)}")
    if not parts:
        return ""
    return "<section id='training'><h2>Training</h2>" + "".join(parts) + "</section>"


def _evaluation_section(c: RunContents) -> str:
    parts = []
    for path, data in c.evaluations:
        rows = [(k, _accuracy_cell(data, k) if k in ("top1", "top5") else _fmt(v)) for k, v in data.items()
                if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
        matrix_key = next((k for k in data if "confusion" in k), None)
        matrix = data.get(matrix_key) if matrix_key else None
        if isinstance(matrix, dict):
            matrix = matrix.get("matrix")
        names = data.get("class_names") or _find(data, "class_names", 2)
        image = plots.confusion(matrix, names) if isinstance(matrix, list) and matrix else None
        per_class = data.get("per_class")
        per_class_html = ""
        if isinstance(per_class, dict) and per_class:
            first = next(iter(per_class.values()))
            if isinstance(first, dict):
                cols = [k for k in first if isinstance(first[k], (int, float))]
                per_class_html = _table(["class", *cols], [(name, *(_fmt(v.get(k)) for k in cols))
                                                           for name, v in per_class.items()],
                                        [False] + [True] * len(cols))
        parts.append(f"<h3>{_e(_rel(c.root, path))}</h3><div class='grid'><div>"
                     + _table(["metric", "value"], rows, [False, True]) + per_class_html
                     + f"</div><div>{_img(image, 'confusion matrix')}</div></div>")
    if not parts:
        return ""
    return "<section id='evaluation'><h2>Evaluation</h2>" + "".join(parts) + "</section>"


def _accuracy_cell(data: dict[str, Any], key: str) -> str:
    """'94.1 % [93.6, 94.6]': an evaluation's top-k with its Wilson 95 % interval (recorded, else from n)."""
    from edgeresnet.evaluate.intervals import accuracy_interval, format_accuracy

    value, interval = data.get(key), data.get(f"{key}_ci95")
    if not isinstance(value, (int, float)):
        return _fmt(value)
    if interval is None and isinstance(data.get("n"), int) and data["n"] > 0:
        try:
            interval = accuracy_interval(float(value), data["n"]).percent()
        except ValueError:
            interval = None
    return format_accuracy(float(value), interval, 1)


def _accuracy_numbers(data: Any, prefix: str = "", depth: int = 4) -> list[tuple[str, float]]:
    """(key path, value) of every top-1-like number inside a manifest."""
    found: list[tuple[str, float]] = []
    if depth < 0:
        return found
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key in ("inputs", "versions", "host", "argv"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    "top1" in str(key).lower() or "top5" in str(key).lower() or str(key).lower().endswith("acc")):
                found.append((path, float(value)))
            elif isinstance(value, (dict, list)):
                found.extend(_accuracy_numbers(value, path, depth - 1))
    elif isinstance(data, list):
        for i, value in enumerate(data[:20]):
            if isinstance(value, (dict, list)):
                found.extend(_accuracy_numbers(value, f"{prefix}[{i}]", depth - 1))
    return found


def _compression_section(c: RunContents, result_rows: Sequence[dict[str, Any]]) -> str:
    parts = []
    # measured by the benchmark on one test split, artifact by artifact, in pipeline order
    created = {Path(str(p)[: -len(".json")]).resolve(): m.get("created", "") for p, m in c.manifests}
    stages: dict[str, tuple[str, float]] = {}
    for row in result_rows:
        if row.get("top1") is None:
            continue
        key = f"{row['model']} ({row['backend']}/{row['precision']})"
        artifact = row.get("artifact")
        order = created.get(Path(artifact).resolve(), "") if artifact else ""
        stages.setdefault(key, (str(order), row["top1"]))
    if len(stages) >= 2:
        ordered = sorted(stages.items(), key=lambda kv: (kv[1][0], kv[0]))
        parts.append("<h3>Top-1 of every artifact on the same test split (measured by the benchmark)</h3>"
                     + _img(plots.accuracy_stages([(k, v[1]) for k, v in ordered]), "accuracy through the pipeline"))
    rows = []
    for path, m in c.manifests:
        kind = str(m.get("kind", ""))
        if kind in ("benchmark-results",):
            continue
        for key, value in _accuracy_numbers({k: v for k, v in m.items() if k not in ("settings",)}):
            rows.append((kind, _rel(c.root, path)[: -len(".json")], key, _fmt(value)))
    if rows:
        parts.append("<h3>Accuracy recorded in the manifests (pruning, quantization, distillation gates)</h3>"
                     + _table(["stage", "artifact", "field", "value"], rows, [False, False, False, True]))
    if not parts:
        return ""
    return "<section id='compression'><h2>Accuracy through the pipeline</h2>" + "".join(parts) + "</section>"


def _parity_section(c: RunContents) -> str:
    if not c.parity:
        return ""
    rows = []
    for path, data in c.parity:
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict):
                continue
            rows.append((_rel(c.root, path), _fmt(_find(item, "reference", 2) or _find(item, "a", 1)),
                         _fmt(_find(item, "candidate", 2) or _find(item, "b", 1)), _fmt(_find(item, "max_abs", 3)),
                         _fmt(_find(item, "max_rel", 3)), _fmt(_find(item, "top1_agreement", 3)),
                         _fmt(_find(item, "passed", 3))))
    return ("<section id='parity'><h2>Parity between backends</h2>"
            + _table(["file", "reference", "candidate", "max |diff|", "max rel diff", "top-1 agreement", "passed"],
                     rows, [False, False, False, True, True, True, False]) + "</section>")


def _benchmark_section(c: RunContents, rows: Sequence[dict[str, Any]]) -> str:
    if not c.results:
        return ""
    headers = [compare.TABLE_HEADERS[k] for k in compare.TABLE_COLUMNS]
    numeric = [k not in ("model", "target", "backend", "precision") for k in compare.TABLE_COLUMNS]
    table = _table(headers, [[compare.cell(r, k) for k in compare.TABLE_COLUMNS] for r in rows], numeric)
    cdf = plots.latency_cdf(rows)
    front = plots.pareto(rows)
    envs = []
    for path, doc in c.results:
        env = doc["environment"]
        gpu = (env.get("gpu") or {}).get("name") or "-"
        envs.append((_rel(c.root, path), env.get("target"), env["host"].get("cpu"), env["host"].get("cores") or "-",
                     gpu, env.get("power_mode") or "-", env.get("tensorrt") or "-",
                     env.get("versions", {}).get("onnxruntime", "-"), env.get("versions", {}).get("torch", "-")))
    by_warning: dict[str, list[str]] = {}
    for r in rows:
        for w in r.get("warnings", []):
            by_warning.setdefault(w, []).append(compare.label(r))
    warn_html = ("<h3>Warnings</h3><ul>" + "".join(
        f"<li class='warn'>{_e(w)} <span class='muted'>({_e('; '.join(labels))})</span></li>"
        for w, labels in sorted(by_warning.items())) + "</ul>" if by_warning else "")
    kinds = {r.get("latency_kind") for r in rows}
    kind_note = ("<p class='muted'>Latency is end-to-end host time per batch (perf_counter_ns around the call); "
                 "percentiles are nearest-rank as trtexec defines them; CV = std/mean.</p>")
    if "trtexec_latency" in kinds:
        kind_note += ("<p class='muted'>Rows imported from trtexec report trtexec's Latency (H2D + GPU compute "
                      "+ D2H of one query).</p>")
    return ("<section id='benchmarks'><h2>Benchmarks</h2>" + kind_note + table
            + "<div class='grid'><div>" + _img(cdf, "latency CDF") + "</div><div>" + _img(front, "Pareto front")
            + "</div></div>" + warn_html + "<h3>Measured on</h3>"
            + _table(["results file", "target", "CPU", "cores", "GPU", "power mode", "TensorRT", "onnxruntime",
                      "torch"], envs) + "</section>")


def _manifest_section(c: RunContents) -> str:
    if not c.manifests:
        return ""
    parts = []
    for path, m in c.manifests:
        parts.append(f"<details><summary><code>{_e(_rel(c.root, path))}</code> ({_e(m.get('kind', '-'))})"
                     f"</summary>{_raw(m)}</details>")
    return "<section id='manifests'><h2>All manifests</h2>" + "".join(parts) + "</section>"


def _other_section(c: RunContents) -> str:
    used = {p for p in c.images if any(w in p.name.lower() for w in ("curve", "train", "loss", "history"))}
    other_images = [p for p in c.images if p not in used]
    parts = []
    for path in other_images[:40]:
        parts.append(f"<h3>{_e(_rel(c.root, path))}</h3>{_img(path.read_bytes(), path.name)}")
    for path, data in c.other[:40]:
        parts.append(f"<details><summary><code>{_e(_rel(c.root, path))}</code></summary>{_raw(data)}</details>")
    if c.skipped:
        parts.append("<h3>Not used</h3><ul>" + "".join(f"<li class='bad'>{_e(s)}</li>" for s in c.skipped) + "</ul>")
    if not parts:
        return ""
    return "<section id='other'><h2>Other files</h2>" + "".join(parts) + "</section>"


def build_report(run_dir: str | Path, title: str | None = None) -> str:
    """The report as one HTML string."""
    c = scan_run_dir(run_dir)
    rows = compare.rows_from(c.results)
    sections = [
        ("pipeline", "Pipeline", _pipeline_section(c)),
        ("training", "Training", _training_section(c)),
        ("evaluation", "Evaluation", _evaluation_section(c)),
        ("compression", "Accuracy", _compression_section(c, rows)),
        ("parity", "Parity", _parity_section(c)),
        ("benchmarks", "Benchmarks", _benchmark_section(c, rows)),
        ("manifests", "Manifests", _manifest_section(c)),
        ("other", "Other", _other_section(c)),
    ]
    present = [(anchor, name, body) for anchor, name, body in sections if body]
    nav = "".join(f"<a href='#{a}'>{_e(n)}</a>" for a, n, _ in present)
    if not present:
        body = ("<section><h2>Nothing to report yet</h2><p>No manifests, results, evaluation, parity or training "
                "files were found in this directory. Run the pipeline (train, export, benchmark) into it first.</p>"
                "</section>")
    else:
        body = "".join(b for _, _, b in present)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    heading = title or f"edgeresnet report: {Path(run_dir).resolve().name}"
    counts = (f"{len(c.manifests)} manifests, {len(c.results)} benchmark files ({len(rows)} results), "
              f"{len(c.evaluations)} evaluations, {len(c.parity)} parity reports, {len(c.histories)} training logs")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(heading)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(heading)}</h1><p>{_e(str(Path(run_dir).resolve()))} &middot; {_e(counts)} &middot; "
            f"generated {_e(now)} by edgeresnet {_e(__version__)}</p></header>"
            f"<main><nav>{nav}</nav>{body}</main></body></html>\n")


def write_report(run_dir: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Write the report atomically, with its sidecar manifest."""
    from edgeresnet.artifacts import build_manifest, write_manifest

    text = build_report(run_dir, title)
    path = write_text_atomic(out, text, option="--out")
    write_manifest(path, build_manifest("report", path, command="report",
                                        settings={"run_dir": str(Path(run_dir).resolve())}))
    return path
