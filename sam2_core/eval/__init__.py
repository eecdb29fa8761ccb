"""sam2_core.eval"""
