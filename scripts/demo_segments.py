"""Per-segment verdicts of the demo clip (assets/demo.json) from a headless run's verdict JSONL.

    python main.py --demo --headless --backend torch --model M.safetensors --output runs/demo_M.jsonl
    python scripts/demo_segments.py runs/demo_M.jsonl [more.jsonl ...]

For every segment: frames whose main face (the largest box) got the right smoothed verdict, out of the
segment's frames; the rest split into wrong / uncertain / no face.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from liveness_app.demo import DemoScorecard  # noqa: E402


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    card = DemoScorecard.load()  # the app's own reading of assets/demo.json and its time -> segment rule
    for path in paths:
        counts = {id(s): Counter() for s in card.scores}
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            seg = card.segment_at(rec["t"]) if "frame" in rec else None
            if seg is not None:
                faces = rec.get("faces") or []
                main_face = max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None
                counts[id(seg)][main_face["verdict"] if main_face else "no face"] += 1
        cells = []
        for seg in card.scores:
            c, want = counts[id(seg)], seg.segment.label
            rest = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != want)
            cells.append(f"{seg.segment.name} {c[want]}/{sum(c.values())}" + (f" ({rest})" if rest else ""))
        print(f"{Path(path).stem}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
