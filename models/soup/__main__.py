"""`python -m models.soup` runs `models.training.soup`."""
import sys

from models.training.soup import main

sys.exit(main())
