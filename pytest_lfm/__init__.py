"""pytest-lfm: qualify Liquid AI LFM2 / LFM2.5 models on SGLang with pytest."""

from pytest_lfm.matrix import LaunchConfig, Matrix, MatrixError, ModelSpec, load_matrix
from pytest_lfm.settings import Settings

__all__ = ["LaunchConfig", "Matrix", "MatrixError", "ModelSpec", "Settings", "load_matrix"]
