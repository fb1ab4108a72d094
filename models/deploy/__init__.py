"""Deployment: export of the deployable module (torch.export, ONNX, OpenVINO, TensorRT), the runtimes, their
torch-free core (engine) and the warm start that needs no torch (warm)."""
