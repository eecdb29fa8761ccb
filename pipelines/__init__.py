"""Kubeflow Pipelines v2 pipelines (wiring only) and compile/submit/schedule helpers."""
