"""Remove and retrain (ROAR) and keep and retrain (KAR): do an attribution method's top pixels hold what a
model needs to learn the task? (Hooker et al. 2019.) :func:`roar` runs a benchmark, :func:`write_roar_report`
writes its table and plot; :func:`demo_dataset` is a set whose label lives in a known square."""

from studio.retraining.benchmark import CONTROLS, FRACTIONS, MODES, Cell, RoarResult, RoarSpec, roar
from studio.retraining.data import Dataset, degrade, demo_dataset, demo_region, folder_dataset
from studio.retraining.report import write_roar_report
from studio.retraining.training import Recipe, accuracy, demo_cnn, named_factory, train

__all__ = ["CONTROLS", "FRACTIONS", "MODES", "Cell", "Dataset", "Recipe", "RoarResult", "RoarSpec", "accuracy",
           "degrade", "demo_cnn", "demo_dataset", "demo_region", "folder_dataset", "named_factory", "roar", "train",
           "write_roar_report"]
