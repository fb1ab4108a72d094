"""Deployment: export of the deployable module (torch.export, ONNX, OpenVINO, TensorRT) and the runtimes."""
