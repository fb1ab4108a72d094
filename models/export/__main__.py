"""`python -m models.export` runs `models.deploy.export`."""
import sys

from models.deploy.export import main

sys.exit(main())
