"""Seeing what SGE does: attention gates, activation statistics, plots.

Needs the `viz` extra (matplotlib); `load_images` also the `data` extra.
"""

from keras_sge._lazy import require

require("matplotlib", "viz", "keras_sge.visualization")

from keras_sge.visualization.gates import FeatureTaps
from keras_sge.visualization.gates import GateResult
from keras_sge.visualization.gates import find_sge_layers
from keras_sge.visualization.gates import select_sge_layers
from keras_sge.visualization.gates import sge_gates
from keras_sge.visualization.gates import stage_of
from keras_sge.visualization.plots import denormalize_images
from keras_sge.visualization.plots import most_varied_groups
from keras_sge.visualization.plots import plot_activation_statistics
from keras_sge.visualization.plots import plot_attention_maps
from keras_sge.visualization.report import load_images
from keras_sge.visualization.report import write_report
from keras_sge.visualization.statistics import ActivationStatistics
from keras_sge.visualization.statistics import activation_statistics
from keras_sge.visualization.statistics import group_variances
