"""Studies: many runs (models x seeds x folds) trained, compared and reported."""
