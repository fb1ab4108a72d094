"""`python -m models.info` runs `models.training.info`."""
import sys

from models.training.info import main

sys.exit(main())
