"""Offline batch detection over files, folders and videos (``wildedge detect``)."""
