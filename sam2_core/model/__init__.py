"""sam2_core.model"""
