"""`python -m models.info`: an alias of `python -m models.training.info` (the code lives there)."""
