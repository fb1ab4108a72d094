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

ROOT = Path(__file__).resolve().parents[1]


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    segments = json.loads((ROOT / "assets" / "demo.json").read_text())["segments"]
    for path in paths:
        verdicts = {}
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            if "frame" in rec:
                faces = rec.get("faces") or []
                main_face = max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None
                verdicts[rec["frame"]] = main_face["verdict"] if main_face else "no face"
        cells = []
        for seg in segments:
            want = "live" if seg["label"] == "live" else "attack"
            c = Counter(verdicts.get(i, "no face") for i in range(seg["start_frame"], seg["end_frame"]))
            n = seg["end_frame"] - seg["start_frame"]
            rest = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != want)
            cells.append(f"{seg['name']} {c[want]}/{n}" + (f" ({rest})" if rest else ""))
        print(f"{Path(path).stem}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
