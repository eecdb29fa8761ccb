"""sam2_core.launch"""
