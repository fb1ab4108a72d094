"""`python -m models.train` runs `models.training.train`."""
import sys

from models.training.train import main

sys.exit(main())
