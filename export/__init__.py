"""wildedge export stage (workstation): PyTorch/ONNX to a verified INT8 ONNX file with its card."""
