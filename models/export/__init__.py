"""`python -m models.export`: an alias of `python -m models.deploy.export` (the code lives there)."""
