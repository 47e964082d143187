"""metrics/eval.json from the result rows: per metric mean score and pass rate, and counts."""

from __future__ import annotations

from typing import Any

from custseg.evaluation.specs import METRICS


def aggregate(rows: list[dict[str, Any]], n_conversations: int, n_skipped: int) -> dict[str, Any]:
    """metrics/eval.json: per metric mean score and pass rate; scored/error/skipped counts."""
    summary: dict[str, Any] = {
        "conversations": n_conversations,
        "skipped": n_skipped,
        "scored": sum(r["error"] is None for r in rows),
        "errors": sum(r["error"] is not None for r in rows),
    }
    for metric in METRICS:
        mine = [r for r in rows if r["metric"] == metric]
        ok = [r for r in mine if r["error"] is None]
        summary[metric] = {
            "mean": round(sum(r["score"] for r in ok) / len(ok), 6) if ok else None,
            "pass_rate": round(sum(bool(r["passed"]) for r in ok) / len(ok), 6) if ok else None,
            "scored": len(ok),
            "errors": len(mine) - len(ok),
        }
    return summary


def flatten(summary: dict[str, Any]) -> dict[str, float]:
    """`{"plan_quality": {"mean": x}}` → `{"plan_quality.mean": x}`, numbers only (for MLflow)."""
    flat: dict[str, float] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    flat[f"{key}.{sub}"] = float(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat
