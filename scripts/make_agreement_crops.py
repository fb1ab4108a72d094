"""Build assets/agreement_crops.jpg: the fixed face crops that guard reduced-precision runtimes.

    python scripts/make_agreement_crops.py                 # writes assets/agreement_crops.jpg
    python scripts/make_agreement_crops.py --every 3 --size 128 --quality 60 --out assets/agreement_crops.jpg

The crops are cut from the bundled demo clip (assets/demo.mp4: all four segments, live, print, replay and face
swap) exactly as the app cuts them: the mediapipe short-range FaceDetector in VIDEO mode (minimum confidence
0.5), the largest face of a frame, the design.md crop contract (liveness_app.pipeline.crop_faces) at the
bundled model's input size, RGB. Every ``--every``-th frame is kept. The crops are tiled row-major into one
JPEG mosaic, ``--cols`` tiles per row, each tile ``--size`` px square; ``models.deploy.runtime.load_agreement_crops``
cuts the mosaic back into crops; the tiles of a partial last row are left black, and the loader drops
all-black tiles.

The reference probabilities are never stored: the start-up guard scores the decoded crops with torch eager
fp32 and with the candidate runtime, so JPEG loss does not matter (both see the same pixels). Deterministic
for one set of library versions (same clip, same detector, same encoder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from liveness_app.config import AppConfig
    from liveness_app.detection import FaceDetector
    from liveness_app.pipeline import crop_faces

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=ROOT / "assets" / "demo.mp4")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "agreement_crops.jpg")
    ap.add_argument("--every", type=int, default=3, help="keep every n-th frame (default 3: 200 of 600)")
    ap.add_argument("--size", type=int, default=128, help="tile size: the bundled model's input size")
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--quality", type=int, default=60, help="JPEG quality (60: 488 KiB for 200 crops)")
    a = ap.parse_args(argv)
    if a.every < 1 or a.size < 16 or a.cols < 1 or not 1 <= a.quality <= 100:
        ap.error("--every >= 1, --size >= 16, --cols >= 1, --quality in 1..100")
    cap = cv2.VideoCapture(str(a.video))
    if not cap.isOpened():
        print(f"cannot open {a.video}", file=sys.stderr)
        return 2
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    crops: list[np.ndarray] = []
    cfg = AppConfig()
    with FaceDetector(min_confidence=0.5) as det:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            boxes = det.detect(frame, i / fps)  # every frame: VIDEO mode tracks like the app
            if i % a.every == 0 and boxes:
                box = max(boxes, key=lambda b: b.w * b.h)
                crop, _ = crop_faces(frame, [box], a.size, cfg)
                crops.append(crop[0])
            i += 1
    cap.release()
    if not crops:
        print("no face found in the clip", file=sys.stderr)
        return 2
    rows = -(-len(crops) // a.cols)
    mosaic = np.zeros((rows * a.size, a.cols * a.size, 3), np.uint8)
    for k, c in enumerate(crops):
        r, q = divmod(k, a.cols)
        mosaic[r * a.size:(r + 1) * a.size, q * a.size:(q + 1) * a.size] = c
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, a.quality])
    if not ok:
        print("JPEG encoding failed", file=sys.stderr)
        return 2
    a.out.write_bytes(buf.tobytes())
    print(f"wrote {a.out}: {len(crops)} crops of {a.size} px from {i} frames, {len(buf) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
