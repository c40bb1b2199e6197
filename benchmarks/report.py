"""Turns a backend comparison into a text table, a JSON file and a bar chart."""

from __future__ import annotations

import json
from typing import Any


def _ms(timing: dict) -> str:
    return f"{timing['median_s'] * 1e3:.1f} ms"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    return lines + [_row(r, widths) for r in rows]


def format_table(report: dict[str, Any]) -> str:
    """Formats a `compare_backends` report as readable text tables.

    Args:
        report: The dict returned by `compare_backends`.

    Returns:
        A multi-line string: setup, status per backend, layer timings and
        ratios, network throughput and SGE overhead, the plain-PyTorch
        comparison and the agreement.
    """
    config = report["config"]
    results = report["results"]
    ok = [r for r in results if r["status"] == "ok"]
    lines = [
        f"machine: {report['machine']['machine']}, {report['machine']['cpu_count']} "
        f"CPU cores; dtype policy: {config['dtype_policy']}",
        "",
    ]
    lines += _table(
        ["backend", "status", "device", "layout", "versions"],
        [
            [
                r["backend"],
                r["status"],
                r.get("device", "-"),
                r.get("data_format", "-"),
                ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items()),
            ]
            for r in results
        ],
    )
    for r in results:
        if r.get("error"):
            lines += ["", f"{r['backend']} error:", r["error"]]

    layer_rows = []
    for r in ok:
        if "layer" not in r:
            continue
        layer = r["layer"]
        variants = [
            ("", layer),
            *([(" definition", layer["definition"])] if "definition" in layer else []),
        ]
        for suffix, timings in variants:
            layer_rows.append(
                [
                    r["backend"] + suffix,
                    "x".join(str(d) for d in layer["input_shape"]),
                    _ms(layer["multiply"]),
                    _ms(timings["forward"]),
                    f"{timings['forward_ratio']:.2f}x",
                    _ms(timings["forward_backward"]),
                    f"{timings['forward_backward_ratio']:.2f}x",
                ]
            )
    if layer_rows:
        lines += ["", f"SGE layer (groups={config['groups']}), medians; ratios to x * x:"]
        lines += _table(
            ["backend", "input", "x * x", "forward", "ratio", "fwd+bwd", "ratio"],
            layer_rows,
        )

    model_rows = []
    definition_column = any("definition_overhead_percent" in r.get("models", {}) for r in ok)
    for r in ok:
        models = r.get("models")
        if not models:
            continue
        for kind in models["sge_resnet"]:
            model_rows.append(
                [
                    r["backend"],
                    kind,
                    f"{models['resnet'][kind]['images_per_s']:.3g}",
                    f"{models['sge_resnet'][kind]['images_per_s']:.3g}",
                    f"{models['sge_overhead_percent'][kind]:+.1f}%",
                ]
            )
            if definition_column:
                overhead = models.get("definition_overhead_percent", {}).get(kind)
                model_rows[-1].append("-" if overhead is None else f"{overhead:+.1f}%")
    if model_rows:
        first = next(r["models"] for r in ok if r.get("models"))
        lines += [
            "",
            f"ResNet{first['depth']} vs SGE-ResNet{first['depth']}, batch "
            f"{first['batch_size']}, {first['image_size']} px, images/s (median):",
        ]
        header = ["backend", "step", f"ResNet{first['depth']}", "SGE-ResNet", "SGE overhead"]
        lines += _table(header + ["with definition"] * definition_column, model_rows)

    for r in ok:
        reference = r.get("torch_reference")
        if not reference:
            continue
        lines += ["", "plain PyTorch vs Keras on torch, images/s:"]
        if reference["status"] != "ok":
            lines.append(f"  plain PyTorch network {reference['status']}")
            continue
        rows = []
        for key, label in (("sge_resnet", "SGE-ResNet"), ("resnet", "ResNet")):
            for kind, timing in reference[key].items():
                rows.append(
                    [
                        label,
                        kind,
                        f"{timing['images_per_s']:.3g}",
                        f"{r['models'][key][kind]['images_per_s']:.3g}",
                        f"{timing['keras_slowdown']:.2f}x",
                    ]
                )
        lines += _table(["network", "step", "PyTorch", "Keras/torch", "Keras slower by"], rows)

    agreement = report.get("agreement") or {}
    if agreement:
        reference_backend = agreement["reference_backend"]
        rows = []
        for r in ok:
            for name, diff in agreement[r["backend"]].items():
                rows.append(
                    [
                        r["backend"],
                        name,
                        f"{diff['max_abs_diff']:.2e}",
                        f"{diff['max_abs_value']:.2e}",
                    ]
                )
        lines += ["", f"agreement with {reference_backend} (same weights and inputs):"]
        lines += _table(["backend", "output", "max |diff|", "max |value|"], rows)
    return "\n".join(lines)


def save_json(report: dict[str, Any], path: str) -> None:
    """Writes the report as indented JSON."""
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def plot_report(report: dict[str, Any], path: str) -> None:
    """Draws the layer ratios and network throughputs as bar charts (PNG).

    Args:
        report: The dict returned by `compare_backends`.
        path: The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = [r for r in report["results"] if r["status"] == "ok"]
    with_models = [r for r in ok if r.get("models")]
    panels = 1 + bool(with_models)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    names = [r["backend"] for r in ok]
    positions = np.arange(len(names))

    ax = axes[0, 0]
    forward = [r["layer"]["forward_ratio"] for r in ok]
    backward = [r["layer"]["forward_backward_ratio"] for r in ok]
    ax.bar(positions - 0.2, forward, 0.4, label="forward")
    ax.bar(positions + 0.2, backward, 0.4, label="forward + backward")
    ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ax.set_xticks(positions, names)
    ax.set_ylabel("time / elementwise multiply")
    ax.set_title(
        "SGE layer " + "x".join(str(d) for d in ok[0]["layer"]["input_shape"])
        if ok
        else "SGE layer"
    )
    ax.legend()

    if with_models:
        ax = axes[0, 1]
        bars = []
        for r in with_models:
            for kind in r["models"]["sge_resnet"]:
                bars.append(
                    (
                        f"{r['backend']}\n{kind}",
                        r["models"]["resnet"][kind]["images_per_s"],
                        r["models"]["sge_resnet"][kind]["images_per_s"],
                    )
                )
        spots = np.arange(len(bars))
        ax.bar(spots - 0.2, [b[1] for b in bars], 0.4, label="ResNet")
        ax.bar(spots + 0.2, [b[2] for b in bars], 0.4, label="SGE-ResNet")
        ax.set_xticks(spots, [b[0] for b in bars], fontsize=8)
        ax.set_ylabel("images / s")
        ax.set_title(f"ResNet{with_models[0]['models']['depth']} throughput")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
