"""Output decoders, one module per model family, behind one registry named like the presets."""

from __future__ import annotations

from edge.inference.decoders import e2e, fastestdet, nanodet, rtdetr, ultralytics, yolov5, yolox
from edge.inference.decoders.base import Decode, DecodeContext, RawDetections

DECODERS: dict[str, Decode] = {
    "ultralytics": ultralytics.decode,
    "yolov5": yolov5.decode,
    "e2e": e2e.decode,
    "rtdetr": rtdetr.decode,
    "yolox": yolox.decode,
    "nanodet": nanodet.decode,
    "fastestdet": fastestdet.decode,
}


def get_decoder(name: str) -> Decode:
    """The decode function registered as ``name``."""
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}") from None


__all__ = ["DECODERS", "Decode", "DecodeContext", "RawDetections", "get_decoder"]
