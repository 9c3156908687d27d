"""wildedge device runtime: capture, detect offline, store and deliver.

Importing this package does no work: no torch, no device probing, no environment reads.
"""

__version__ = "0.1.0"
