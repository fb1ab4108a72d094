"""`python -m models.train`: an alias of `python -m models.training.train` (the code lives there)."""
