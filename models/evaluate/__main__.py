"""`python -m models.evaluate` runs `models.training.evaluate`."""
import sys

from models.training.evaluate import main

sys.exit(main())
