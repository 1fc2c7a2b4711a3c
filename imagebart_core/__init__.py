"""ImageBART core library (PyTorch). Never imports ComfyUI."""
