"""Kubeflow Pipelines v2 components: thin typed wrappers, one ``sam2_core`` call each."""
