"""Measurements of what a model makes, beside its losses: is the generator generating?"""

from coophash_keras.diagnostics.callback import GeneratorDiagnosticsCallback, headline_numbers
from coophash_keras.diagnostics.generator import (
    frechet_distance,
    generator_diagnostics,
    has_generator,
    spread_ratios,
    summary_line,
)
from coophash_keras.diagnostics.grid import sample_grid, save_sample_grid
from coophash_keras.diagnostics.reference import ReferenceClassifier, reference_split

__all__ = [
    "GeneratorDiagnosticsCallback",
    "headline_numbers",
    "ReferenceClassifier",
    "frechet_distance",
    "generator_diagnostics",
    "has_generator",
    "reference_split",
    "sample_grid",
    "save_sample_grid",
    "spread_ratios",
    "summary_line",
]
