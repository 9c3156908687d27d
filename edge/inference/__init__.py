"""Inference core: model card, preprocessing, decoders, detector and classifier."""
