"""What an Ultralytics user runs on a folder, ``YOLO(onnx).predict(folder)``; ``throughput.py`` times it.

Prints one JSON line: files, detections. ``--stream`` uses ``predict(stream=True)`` (a generator that
does not keep every original photo in memory), the form Ultralytics recommends for long sources.

usage: python _ultralytics_predict.py MODEL.onnx FOLDER CONF IOU [--stream]
"""

from __future__ import annotations

import json
import sys


def main(model_path: str, folder: str, conf: float, iou: float, stream: bool) -> None:
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    model = YOLO(model_path, task="detect")
    results = model.predict(source=folder, conf=conf, iou=iou, imgsz=640, max_det=300, device="cpu",
                            verbose=False, stream=stream)
    files = detections = 0
    for result in results:
        files += 1
        detections += len(result.boxes)
    print(json.dumps({"files": files, "detections": detections}))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--stream"]
    if len(args) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(args[0], args[1], float(args[2]), float(args[3]), "--stream" in sys.argv)
