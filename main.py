"""Entry point: ``python main.py`` (GUI) or ``python main.py --headless --source SRC --output verdicts.jsonl``."""
import sys

from liveness_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
