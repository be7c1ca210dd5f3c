"""Render result rows; computes nothing: `render_table(rows, columns) -> str` for the terminal and
`render_report(bench_rows, points, out_dir)` for `report.md` plus a self-contained `report.html` (inline SVG)."""

from __future__ import annotations

import dataclasses
from html import escape
from pathlib import Path

from edgepipe.pareto import AccuracyPoint
from edgepipe.report_svg import bar_chart, line_chart, scatter_chart
from edgepipe.runtime.atomic import atomic_write, read_json
from edgepipe.runtime.errors import InputError

__all__ = ["render_table", "render_report", "read_bench_rows"]

# What every row of `edgepipe bench --json` has, with the JSON type the report reads it as.
_ROW_FIELDS = {"model": str, "precision": str, "ep": str, "threads": int, "batch": int, "status": str,
               "machine": dict}


def read_bench_rows(path: Path) -> list[dict]:
    """The rows of an `edgepipe bench --json` file.

    Raises:
        InputError: unreadable, not JSON, not a non-empty list of rows, or a row without a field the report needs
            (named, with the row's index).
    """
    rows = read_json(path)
    if not isinstance(rows, list) or not rows:
        found = "an empty list" if rows == [] else type(rows).__name__
        raise InputError(f"{path}: expected the non-empty list of rows `edgepipe bench --json` writes, found {found}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {i} is a {type(row).__name__}, expected an object")
        for field, kind in _ROW_FIELDS.items():
            if not isinstance(row.get(field), kind) or isinstance(row.get(field), bool):
                raise InputError(f"{path}: row {i} field {field!r} should be {kind.__name__}, "
                                 f"found {row.get(field)!r}")
    return rows

_COLUMNS = ["model", "precision", "ep", "threads", "batch", "status", "latency_ms_p50", "latency_ms_p90",
            "latency_ms_p99", "throughput_ips", "peak_rss_mb", "session_create_ms", "first_inference_ms", "size_mb",
            "gflops", "gflops_per_s", "peak_share", "fallback", "nodes_by_ep", "reason"]
_POINT_COLUMNS = ["model", "precision", "ep", "threads", "latency_ms_p50", "metric", "accuracy", "data", "on_front"]
_STYLE = ("body{font-family:sans-serif;margin:24px;max-width:1400px}table{border-collapse:collapse;font-size:12px;"
          "margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;max-width:22em;"
          # long cells (reason, nodes_by_ep, fallback) wrap inside the window instead of widening the table
          "overflow-wrap:anywhere}th{background:#f3f3f3}"
          "tr.unavailable td,tr.failed td{color:#888}code{background:#f6f6f6}")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4g}"
    if isinstance(value, dict):  # nodes_by_ep: shorten onnxruntime's provider names
        return " ".join(f"{str(k).removesuffix('ExecutionProvider')}:{v}" for k, v in value.items()) or "-"
    return str(value)


def render_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table with one line per row and the given columns (missing values as '-')."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _md_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(f'<tr class="{escape(str(row.get("status", "")))}">'
                   + "".join(f"<td>{escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _label(row: dict) -> str:
    return f"{row['precision']} · {row['ep']} · {row['threads']}t"


def _machine_lines(bench_rows: list[dict]) -> list[str]:
    machine = next((r["machine"] for r in bench_rows if r.get("machine")), {})
    if not machine:
        return ["machine: not recorded"]
    return [f"CPU: {machine.get('cpu')} ({machine.get('cores')} cores; {' '.join(machine.get('isa', []))})",
            f"onnxruntime (main environment): {machine.get('onnxruntime')}; python {machine.get('python')}",
            f"fp32 peak per core: {machine.get('peak_formula')}"]


def _latency_bars(rows: list[dict]) -> list[dict]:
    """The batch-1 (smallest batch) cells of one model: p50 bar, p50-p99 whisker, the reason when not measured."""
    smallest = min(r["batch"] for r in rows)
    bars = []
    for row in (r for r in rows if r["batch"] == smallest):
        measured = row.get("status") == "ok"
        note = "fallback" if row.get("fallback") else ""
        if not measured:
            note = f"{row.get('status')}: {row.get('reason', '')}"[:90]
        bars.append({"label": _label(row), "value": row.get("latency_ms_p50") if measured else None,
                     "upper": row.get("latency_ms_p99") if measured else None, "colour_key": row["ep"],
                     "note": note})
    return bars


def _throughput_series(rows: list[dict]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            series.setdefault(_label(row), []).append((row["batch"], row["throughput_ips"]))
    return series


_NO_ACCURACY = ("No accuracy figures: the artifacts' JSON holds no evaluation. `edgepipe build --data DIR` or "
                "`edgepipe eval ARTIFACT --data DIR` (a COCO, WIDER FACE or LFW folder) adds them.")


def render_report(bench_rows: list[dict], points: list[AccuracyPoint], out_dir: Path,
                  identifications: list[dict] = ()) -> tuple[Path, Path]:
    """Write `report.md` (tables) and `report.html` (the same tables plus inline SVG plots, no network needed).

    Plots: per model, batch-1 latency per provider x precision x threads (p50 bar, whisker to p99); accuracy
    against p50 latency with the Pareto front; throughput against batch size.

    Args:
        bench_rows: `BenchmarkRow.to_dict()` rows, from one or more `edgepipe bench` runs.
        points: `pareto.accuracy_points(bench_rows, eval_jsons)`, front flags included; may be empty.
        out_dir: created if missing.
        identifications: `eval --task identification` reports, each drawn as DIR and FAR against the threshold.

    Returns:
        (path of report.md, path of report.html).
    """
    out_dir = Path(out_dir)
    models = list(dict.fromkeys(r["model"] for r in bench_rows))
    points = [dataclasses.asdict(p) for p in points]  # rendered as rows like the bench's
    md = ["# edgepipe benchmark report", "", *(f"- {line}" for line in _machine_lines(bench_rows)), "",
          "Plots (latency bars, accuracy vs latency with the Pareto front, throughput vs batch): `report.html`.", ""]
    html = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgepipe benchmark report</title>"
            f"<style>{_STYLE}</style></head><body><h1>edgepipe benchmark report</h1><ul>"
            + "".join(f"<li>{escape(line)}</li>" for line in _machine_lines(bench_rows)) + "</ul>"]
    for model in models:
        rows = [r for r in bench_rows if r["model"] == model]
        mine = [p for p in points if p["model"] == model]
        md += [f"## {model}", "", "### Latency and throughput", "", _md_table(rows, _COLUMNS), ""]
        html += [f"<h2>{escape(model)}</h2>",
                 bar_chart(f"{model}: latency per cell (bar p50, whisker to p99)", _latency_bars(rows)),
                 _html_table(rows, _COLUMNS)]
        if mine:
            metric = mine[0]["metric"]
            md += [f"### Accuracy ({metric} on {mine[0]['data']}) vs latency; on_front = Pareto front", "",
                   _md_table(mine, _POINT_COLUMNS), ""]
            html.append(scatter_chart(
                f"{model}: {metric} on {mine[0]['data']} vs batch-1 latency",
                [{"x": p["latency_ms_p50"], "y": p["accuracy"], "colour_key": f"{p['precision']} · {p['ep']}",
                  "on_front": p["on_front"], "label": f"{p['precision']} · {p['ep']} · {p['threads']}t"} for p in mine],
                "latency p50 (ms)", metric))
            html.append(_html_table(mine, _POINT_COLUMNS))
        series = _throughput_series(rows)
        if len({r["batch"] for r in rows}) > 1 and series:
            html.append(line_chart(f"{model}: throughput vs batch", series, "batch", "images / s"))
    if not points:  # said once, not once per model
        md += [_NO_ACCURACY, ""]
        html.append(f"<p>{escape(_NO_ACCURACY)}</p>")
    for report in identifications:
        title, lines = _identification_section(report)
        md += [f"## {title}", "", *lines, ""]
        curve = report["details"]["curve"]
        html += [f"<h2>{escape(title)}</h2>", "".join(f"<p>{escape(line)}</p>" for line in lines),
                 line_chart(title, {"DIR (genuine, named right)": [(c["threshold"], c["dir"]) for c in curve],
                                    "FAR (impostors accepted)": [(c["threshold"], c["far"]) for c in curve]},
                            f"threshold ({report['details']['metric']} distance)", "rate")]
    md_path = atomic_write(out_dir / "report.md", "\n".join(md).encode())
    html_path = atomic_write(out_dir / "report.html", ("".join(html) + "</body></html>").encode())
    return md_path, html_path


def _identification_section(report: dict) -> tuple[str, list[str]]:
    m, d = report["metrics"], report["details"]
    title = f"Identification: {report['model']} ({report['precision']}) on {report['data']}"
    return title, [f"{d['protocol']}: {d['enrolled']} enrolled, {d['genuine_probes']} genuine probes, "
                   f"{d['impostor_probes']} impostor probes ({', '.join(d['impostors'])}).",
                   f"rank-1 {100 * m['rank1']:.2f}%; at the gallery's threshold {m['threshold']:.4g}: DIR "
                   f"{100 * m['dir']:.2f}%, FAR {100 * m['far']:.2f}%."]


def read_identification(path: Path) -> dict:
    """An `eval --task identification --json` report; InputError naming the file and what is missing."""
    report = read_json(path)
    try:
        curve = report["details"]["curve"]
        if not curve or not all(isinstance(c[k], (int, float)) for c in curve for k in ("threshold", "dir", "far")):
            raise KeyError("curve")
        [report["metrics"][k] for k in ("rank1", "dir", "far", "threshold")]
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: not an `eval --task identification` report (no {e} in it)") from e
    return report
