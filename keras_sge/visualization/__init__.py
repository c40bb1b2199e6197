"""Seeing what SGE does: attention gates, activation statistics, plots.

Needs the `viz` extra (matplotlib); `load_images` also the `data` extra.
"""

from keras_sge._lazy import require

require("matplotlib", "viz", "keras_sge.visualization")

from keras_sge.visualization.gates import (
    FeatureTaps,
    GateResult,
    find_sge_layers,
    select_sge_layers,
    sge_gates,
    stage_of,
)
from keras_sge.visualization.plots import (
    denormalize_images,
    most_varied_groups,
    plot_activation_statistics,
    plot_attention_maps,
)
from keras_sge.visualization.report import load_images, write_report
from keras_sge.visualization.statistics import (
    ActivationStatistics,
    activation_statistics,
    group_variances,
)
