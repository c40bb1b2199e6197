"""The paper's SGE ablations: group count, initialisation, normalisation, no SGE.

Each setting is one training run of `keras_sge.training.train`; the grid
writes one table (CSV and Markdown) and a plot of top-1 against the setting.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import matplotlib
from matplotlib.figure import Figure

from keras_sge.applications.registry import MODELS, model_spec
from keras_sge.training.files import write_json_atomically
from keras_sge.training.run import OutputPaths, check_saved_settings

# The paper's defaults, around which every other setting changes one knob.
DEFAULT_GROUPS = 64
PAPER_GROUPS = (1, 2, 4, 8, 16, 32, 64, 128)
TABLE_COLUMNS = (
    "setting",
    "model",
    "groups",
    "gamma_init",
    "beta_init",
    "normalize",
    "params",
    "best_val_top1",
    "best_val_top5",
    "best_epoch",
    "last_val_top1",
    "epochs",
    "wall_time_s",
)
_ROW_FILE = "ablation_row.json"


@dataclasses.dataclass(frozen=True)
class AblationSetting:
    """One run of the ablation grid.

    Attributes:
        key: Short unique name, also the run's sub-folder, e.g. `"groups=64"`.
        model: A `keras_sge.training.MODELS` name (`"resnet50"` for the no-SGE
            baseline).
        groups: SGE groups (ignored for the baseline).
        gamma_init: Initialiser name of the SGE `gamma`.
        beta_init: Initialiser name of the SGE `beta`.
        normalize: Whether SGE normalises the similarity (step 3).
    """

    key: str
    model: str
    groups: int = DEFAULT_GROUPS
    gamma_init: str = "zeros"
    beta_init: str = "ones"
    normalize: bool = True

    @property
    def has_sge(self) -> bool:
        return model_spec(self.model).attention

    def sge_options(self) -> dict | None:
        """The `sge_options` that the builders take, or None for defaults."""
        if not self.has_sge:
            return None
        options = {}
        if self.gamma_init != "zeros":
            options["gamma_initializer"] = self.gamma_init
        if self.beta_init != "ones":
            options["beta_initializer"] = self.beta_init
        if not self.normalize:
            options["normalize"] = False
        return options or None


def ablation_grid(
    model: str = "sge_resnet50",
    groups: Sequence[int] = PAPER_GROUPS,
    initialization: bool = True,
    normalization: bool = True,
    baseline: bool = True,
) -> list[AblationSetting]:
    """The paper's ablations, one knob at a time around the defaults.

    The default is `groups=64`, gamma/beta initialised to 0/1, with
    normalisation. The grid holds: the no-SGE baseline, every group count
    of `groups` (with the other defaults), the 1/0 initialisation and the
    run without normalisation (both at 64 groups).

    Args:
        model: The SGE model, `"sge_resnet50"` or `"sge_resnet101"`; the
            baseline is the same network without SGE.
        groups: Group counts to sweep (each must divide 256, the smallest
            block width).
        initialization: Add the gamma=1, beta=0 run.
        normalization: Add the run without normalisation.
        baseline: Add the run without SGE.

    Returns:
        The settings, baseline first.

    Example:

    >>> [s.key for s in ablation_grid(groups=(1, 64))]
    ['no_sge', 'groups=1', 'groups=64', 'groups=64,init=1/0', 'groups=64,no_norm']
    """
    if not model_spec(model).attention:
        raise ValueError(
            f"`model` must be an SGE model such as 'sge_resnet50'; received {model!r}."
        )
    for count in groups:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1 or 256 % count:
            raise ValueError(
                "Every group count must be a positive divisor of 256 (the "
                f"narrowest SGE input of the ResNets); received {count!r}."
            )
    settings = []
    if baseline:
        depth = model_spec(model).depth
        plain = next(s.name for s in MODELS.values() if s.depth == depth and not s.attention)
        settings.append(AblationSetting("no_sge", plain))
    for count in dict.fromkeys(groups):
        settings.append(AblationSetting(f"groups={count}", model, groups=count))
    if initialization:
        settings.append(
            AblationSetting(
                f"groups={DEFAULT_GROUPS},init=1/0",
                model,
                gamma_init="ones",
                beta_init="zeros",
            )
        )
    if normalization:
        settings.append(AblationSetting(f"groups={DEFAULT_GROUPS},no_norm", model, normalize=False))
    if not settings:
        raise ValueError("The ablation grid is empty: every kind of setting was left out.")
    return settings


def _run_folder(output_dir: str, setting: AblationSetting) -> str:
    safe = setting.key.replace("=", "").replace(",", "_").replace("/", "-")
    return os.path.join(output_dir, "runs", safe)


def run_ablation(
    settings: Sequence[AblationSetting],
    base_config,
    output_dir: str,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Trains every setting and writes the table and the plot.

    Each run trains with `keras_sge.training.train` in
    `<output_dir>/runs/<setting>/` from a copy of `base_config` (dataset,
    budget, recipe, seed) with the setting's model, groups and
    `sge_options`. After each run the tables `ablation.csv` and
    `ablation.md` are rewritten, so an interrupted grid keeps its finished
    rows; with `resume`, settings already finished are read back instead of
    trained again (and an interrupted run resumes from its last epoch), if
    they were trained with the same settings.

    Args:
        settings: The grid, e.g. from `ablation_grid`.
        base_config: A `keras_sge.training.TrainConfig` for every run; its
            `model`, `groups`, `sge_options` and `output_dir` are replaced.
        output_dir: Where the runs, tables and plot go.
        resume: Reuse finished runs found in `output_dir`.
        log: Called with one line of progress per setting.

    Returns:
        The table rows (dicts with `TABLE_COLUMNS`), in the settings' order.

    Raises:
        RunSettingsMismatchError: a setting's folder holds a run trained with
            other settings (e.g. another budget); rerun with `resume=False`
            or another `output_dir`.

    Example:

    >>> config = keras_sge.training.TrainConfig(dataset="demo", epochs=2)
    >>> rows = run_ablation(ablation_grid(groups=(1, 64)), config, "runs/ablation")
    """
    from keras_sge import training

    keys = [s.key for s in settings]
    if len(set(keys)) != len(keys):
        raise ValueError(f"The settings' keys must be unique; received {keys}.")
    rows = []
    for index, setting in enumerate(settings, 1):
        progress = f"[{index}/{len(settings)}] {setting.key}"
        folder = _run_folder(output_dir, setting)
        config = dataclasses.replace(
            base_config,
            model=setting.model,
            groups=setting.groups,
            sge_options=setting.sge_options(),
            output_dir=folder,
            overwrite=not resume,
        )
        row = _finished_row(config) if resume else None
        if row is not None:
            rows.append(row)
            log(f"{progress}: finished earlier, reused")
            continue
        log(f"{progress}: training in {folder}")
        row = _table_row(setting, training.train(config))
        write_json_atomically(os.path.join(folder, _ROW_FILE), row)
        rows.append(row)
        write_tables(rows, output_dir)
        log(f"    top-1 {row['best_val_top1']:.4f} in {row['wall_time_s']} s")
    write_tables(rows, output_dir)
    if rows:
        plot_ablation(rows, os.path.join(output_dir, "ablation.png"))
    return rows


def _finished_row(config) -> dict | None:
    """The saved row of the run in `config.output_dir`, or None if it has not finished.

    A run is resumed, and its row reused, only with the settings it was
    trained with: otherwise `RunSettingsMismatchError`.
    """
    row_path = os.path.join(config.output_dir, _ROW_FILE)
    finished = os.path.exists(row_path)
    check_saved_settings(
        OutputPaths(config.output_dir),
        config.differences,
        finished=finished,
        start_afresh="resume=False (--restart)",
    )
    if not finished:
        return None
    with open(row_path) as f:
        return json.load(f)


def _table_row(setting: AblationSetting, result) -> dict:
    """The table row (`TABLE_COLUMNS`) of `setting` from its `TrainResult`."""
    sge_column = (lambda value: value) if setting.has_sge else (lambda value: "")
    return {
        "setting": setting.key,
        "model": setting.model,
        "groups": sge_column(setting.groups),
        "gamma_init": sge_column(setting.gamma_init),
        "beta_init": sge_column(setting.beta_init),
        "normalize": sge_column(setting.normalize),
        "params": result.model.count_params(),
        "best_val_top1": result.best["val_top1"],
        "best_val_top5": result.best["val_top5"],
        "best_epoch": result.best["epoch"],
        "last_val_top1": result.last["val_top1"],
        "epochs": len(result.history),
        "wall_time_s": round(result.wall_time_s, 1),
    }


def write_tables(rows: Sequence[dict], output_dir: str) -> tuple[str, str]:
    """Writes `ablation.csv` and `ablation.md` in `output_dir`.

    Args:
        rows: Dicts with the `TABLE_COLUMNS` keys.
        output_dir: The folder.

    Returns:
        The paths of the CSV and Markdown files.
    """
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, "ablation.csv")
    md_path = os.path.join(output_dir, "ablation.md")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row[key] for key in TABLE_COLUMNS})
    lines = [
        "| setting | model | groups | init gamma/beta | normalize | params "
        "| best top-1 | best top-5 | best epoch | wall time (s) |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        init = f"{row['gamma_init']}/{row['beta_init']}" if row["gamma_init"] else "-"
        lines.append(
            f"| {row['setting']} | {row['model']} | {row['groups'] or '-'} | {init} "
            f"| {row['normalize'] if row['normalize'] != '' else '-'} | {row['params']:,} "
            f"| {100 * row['best_val_top1']:.2f} | {100 * row['best_val_top5']:.2f} "
            f"| {row['best_epoch']}/{row['epochs']} | {row['wall_time_s']} |"
        )
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def plot_ablation(rows: Sequence[dict], path: str) -> str:
    """Saves a bar chart of the best top-1 of every setting.

    The group-count sweep is also drawn against the (log-scaled) group count
    when it has at least two points; the no-SGE baseline is a dashed line.

    Args:
        rows: Table rows as returned by `run_ablation`.
        path: Where to write the PNG.

    Returns:
        `path`.
    """
    if not rows:
        raise ValueError("No ablation rows to plot.")
    sweep = sorted(
        (int(r["groups"]), 100 * r["best_val_top1"])
        for r in rows
        if r["setting"].startswith("groups=") and "," not in r["setting"]
    )
    baseline = [100 * r["best_val_top1"] for r in rows if r["setting"] == "no_sge"]
    panels = 2 if len(sweep) >= 2 else 1
    figure = Figure(figsize=(6.5 * panels, 0.35 * len(rows) + 2.5))
    axes = figure.subplots(1, panels, squeeze=False)[0]
    labels = [r["setting"] for r in rows]
    values = [100 * r["best_val_top1"] for r in rows]
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    bars = axes[0].barh(
        range(len(rows)),
        values,
        color=[colours[1] if r["setting"] == "no_sge" else colours[0] for r in rows],
    )
    axes[0].bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("best validation top-1 (%)")
    axes[0].set_xlim(0, min(100, max(values) * 1.15 + 1))
    axes[0].set_title("Top-1 per setting", fontsize=10)
    if panels == 2:
        axes[1].plot([g for g, _ in sweep], [t for _, t in sweep], marker="o", label="SGE")
        axes[1].set_xscale("log", base=2)
        axes[1].set_xticks([g for g, _ in sweep], [str(g) for g, _ in sweep])
        if baseline:
            axes[1].axhline(baseline[0], color=colours[1], linestyle="--", label="no SGE")
        axes[1].set_xlabel("groups")
        axes[1].set_ylabel("best validation top-1 (%)")
        axes[1].set_title("Group count", fontsize=10)
        axes[1].legend(fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
