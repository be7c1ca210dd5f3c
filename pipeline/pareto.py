"""Accuracy against latency: join benchmark rows with the accuracy the artifacts' JSON (or `evaluate` reports)
record, and mark each model's Pareto front: `accuracy_points(bench_rows, eval_jsons)`, `pareto_front(xy)`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["accuracy_points", "pareto_front", "AccuracyPoint"]

ACCURACY_METRICS = ("map_50_95", "ap_50", "accuracy")  # the first one a report has is its accuracy figure


@dataclass(frozen=True)
class AccuracyPoint:
    """One benchmark cell of a model with the accuracy its artifact records, and whether it is on the model's front."""

    model: str
    precision: str
    ep: str
    threads: int
    latency_ms_p50: float
    data: str  # the data set the accuracy is measured on
    metric: str  # e.g. "map_50_95"
    accuracy: float  # fraction
    on_front: bool  # no other point of this model is both faster and at least as accurate


def pareto_front(points_xy: list[tuple[float, float]]) -> list[bool]:
    """Which points no other point beats: lower x (latency) and higher y (accuracy), at least as good in both."""
    flags = []
    for i, (x, y) in enumerate(points_xy):
        dominated = any((ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points_xy) if j != i)
        flags.append(not dominated)
    return flags


def _reports(eval_json: dict) -> list[tuple[str, dict]]:
    """(data set name, report) pairs of an artifact JSON ("evaluations") or of one `evaluate` report."""
    if isinstance(eval_json.get("evaluations"), dict):
        return [(name, {"model": eval_json.get("model"), "precision": eval_json.get("precision"), **report})
                for name, report in eval_json["evaluations"].items()]
    if "metrics" in eval_json:
        return [(Path(str(eval_json.get("data", "data"))).name, eval_json)]
    accuracy = eval_json.get("accuracy")  # a quantized artifact's JSON: its metric on the budget's data set
    if isinstance(accuracy, dict) and accuracy.get("quantized") is not None:
        metrics = {accuracy["metric"]: accuracy["quantized"], **(accuracy.get("quantized_metrics") or {})}
        return [(Path(str(accuracy.get("data", "data"))).name,
                 {"model": eval_json.get("model"), "precision": eval_json.get("precision"), "metrics": metrics})]
    return []


def _accuracy_table(eval_jsons: list[dict]) -> dict[tuple[str, str], dict[str, tuple[str, float]]]:
    """(model, precision) -> data set -> (metric name, value)."""
    table: dict[tuple[str, str], dict[str, tuple[str, float]]] = {}
    for eval_json in eval_jsons:
        for data, report in _reports(eval_json):
            metrics = report.get("metrics") or {}
            metric = next((m for m in ACCURACY_METRICS if metrics.get(m) is not None), None)
            if metric and report.get("model") and report.get("precision"):
                table.setdefault((report["model"], report["precision"]), {})[data] = (metric, float(metrics[metric]))
    return table


def accuracy_points(bench_rows: list[dict], eval_jsons: list[dict]) -> list[AccuracyPoint]:
    """One point per measured batch-1 cell whose (model, precision) has an accuracy, with its front flag.

    A model's points all use the same data set (the first, by name, that its fp32 or any precision reports),
    and its front is computed among its own points.

    Returns:
        The points, grouped by model.
    """
    table = _accuracy_table(eval_jsons)
    points: list[AccuracyPoint] = []
    for model in dict.fromkeys(r["model"] for r in bench_rows):
        rows = [r for r in bench_rows if r["model"] == model and r.get("status") == "ok" and r.get("batch") == 1]
        datasets = sorted({d for (m, _), found in table.items() if m == model for d in found})
        if not datasets:
            continue
        data = datasets[0]
        mine = []
        for row in rows:
            found = table.get((model, row["precision"]), {}).get(data)
            if found:
                mine.append(AccuracyPoint(model, row["precision"], row["ep"], row["threads"], row["latency_ms_p50"],
                                          data, found[0], found[1], on_front=False))
        flags = pareto_front([(p.latency_ms_p50, p.accuracy) for p in mine])
        points += [replace(p, on_front=flag) for p, flag in zip(mine, flags)]
    return points
