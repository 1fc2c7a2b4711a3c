"""ComfyUI nodes; see nodes/*.py"""
