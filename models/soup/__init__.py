"""`python -m models.soup`: an alias of `python -m models.training.soup` (the code lives there)."""
