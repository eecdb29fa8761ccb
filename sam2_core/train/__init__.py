"""sam2_core.train"""
