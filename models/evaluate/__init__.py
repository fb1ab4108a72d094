"""`python -m models.evaluate`: an alias of `python -m models.training.evaluate` (the code lives there)."""
