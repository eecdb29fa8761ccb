"""sam2_core.k8s"""
