"""Tables and PNG plots (matplotlib, Agg backend) from run summaries and rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from eval import metrics


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def confidence_pairs(rows: Sequence[dict]) -> tuple[list[float], list[bool]]:
    """(confidence, correct) of rows that have a confidence and no error."""
    kept = [r for r in rows if not r.get("error") and r.get("confidence") is not None]
    return [float(r["confidence"]) for r in kept], [bool(r["correct"]) for r in kept]


def reliability_diagram(conf: Sequence[float], correct: Sequence[bool], path: Path, *,
                        title: str = "", n_bins: int = metrics.N_BINS) -> Path:
    """Bars: accuracy per confidence bin (the ECE bins); diagonal: perfect calibration."""
    plt = _pyplot()
    bins = metrics.reliability_bins(conf, correct, n_bins)
    width = 1.0 / n_bins
    fig, ax = plt.subplots(figsize=(5, 5))
    filled = [b for b in bins if b["count"]]
    ax.bar([b["lo"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([b["lo"] + width / 2 for b in filled], [b["confidence"] for b in filled], "r_",
            markersize=10, label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for b in filled:
        ax.annotate(str(b["count"]), (b["lo"] + width / 2, b["accuracy"]), ha="center",
                    va="bottom", fontsize=7)
    e = metrics.ece(conf, correct, n_bins)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence", ylabel="accuracy",
           title=f"{title}\nECE={_fmt(e)}  n={len(conf)}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def reliability_diagram_from_rows(rows: Sequence[dict], path: Path, *, title: str = "") -> Path:
    conf, correct = confidence_pairs(rows)
    return reliability_diagram(conf, correct, path, title=title)


def precision_coverage_plot(runs: Mapping[str, Sequence[dict]], path: Path, *,
                            title: str = "precision vs coverage") -> Path:
    """One precision-coverage curve per run (name -> rows)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, rows in runs.items():
        curve = metrics.precision_coverage(*confidence_pairs(rows))
        if curve:
            cov, prec, _ = zip(*curve)
            ax.step([0.0, *cov], [prec[0], *prec], where="pre", label=name)  # value on (c_i-1, c_i]
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="coverage", ylabel="precision (accuracy kept)",
           title=title)
    if runs:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _ratio(a, b) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


BENCH_COLUMNS = (
    ("strategy", "strategy"), ("n", "n"), ("accuracy", "acc"), ("ece", "ECE"), ("brier", "Brier"),
    ("auroc", "AUROC"), ("tokens_per_query", "tok/q"), ("latency_p50_s", "p50 s"),
    ("latency_p95_s", "p95 s"),
)


def bench_rows(summaries: Mapping[str, dict]) -> list[dict]:
    """Per strategy: the table's metrics plus token and p50-latency ratios to SC and to none."""
    sc, none = summaries.get("self_consistency"), summaries.get("none")
    out = []
    for name, s in summaries.items():
        row = {"strategy": name, **{k: s.get(k) for k, _ in BENCH_COLUMNS if k != "strategy"}}
        for ref_name, ref in (("sc", sc), ("none", none)):
            ref = ref or {}
            row[f"tokens_vs_{ref_name}"] = _ratio(s.get("tokens_per_query"), ref.get("tokens_per_query"))
            row[f"p50_vs_{ref_name}"] = _ratio(s.get("latency_p50_s"), ref.get("latency_p50_s"))
        out.append(row)
    return out


RATIO_COLUMNS = (("tokens_vs_sc", "tok/SC"), ("p50_vs_sc", "p50/SC"),
                 ("tokens_vs_none", "tok/none"), ("p50_vs_none", "p50/none"))


def markdown_table(rows: Sequence[dict]) -> str:
    """Side-by-side markdown table of ``bench_rows`` output; '–' marks undefined values."""
    cols = (*BENCH_COLUMNS, *RATIO_COLUMNS)
    lines = ["| " + " | ".join(h for _, h in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = [_fmt(r.get(k), 2 if k.startswith(("tokens_vs", "p50_vs", "tokens_per")) else 3)
                 for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
