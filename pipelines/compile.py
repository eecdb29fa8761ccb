"""Compile the pipeline: IR YAML for the KFP UI, or Pipeline/PipelineVersion CRs for kubectl."""

from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from pipelines.finetune import PIPELINE_NAME, ClusterSettings, build_pipeline
from sam2_core import launch

#: KFP CRD files; the package ships them (:data:`PACKAGED_CRD_DIR`), any folder holding them works.
CRD_FILES = {
    "Pipeline": "pipelines.kubeflow.org_pipelines.yaml",
    "PipelineVersion": "pipelines.kubeflow.org_pipelineversions.yaml",
}
#: The KFP CRDs shipped with the package (``sam2_core/launch/schemas/``, package data).
PACKAGED_CRD_DIR = Path(launch.__file__).resolve().parent / "schemas"


def missing_crds(crd_dir: str | Path) -> list[Path]:
    """The KFP CRD files that ``crd_dir`` lacks (empty list: validation can run)."""
    return [Path(crd_dir) / f for f in CRD_FILES.values() if not (Path(crd_dir) / f).is_file()]


def compile_pipeline(
    out: str | Path,
    *,
    settings: ClusterSettings | None = None,
    manifests: bool = False,
    namespace: str = "kubeflow",
    version_name: str = "",
    parameters: dict[str, Any] | None = None,
) -> Path:
    """Write the compiled pipeline to ``out`` and return the path.

    ``manifests=False``: the IR YAML the KFP UI's "Upload pipeline" accepts.
    ``manifests=True``: ``Pipeline`` + ``PipelineVersion`` (``pipelines.kubeflow.org/v2beta1``)
    for a KFP running in Kubernetes-native API mode (``kubectl apply -f``).
    ``parameters`` overrides pipeline parameter defaults baked into the YAML.
    """
    from sam2_core import __version__

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(settings)
    kwargs: dict[str, Any] = {"pipeline_parameters": parameters} if parameters else {}
    if manifests:
        kwargs["kubernetes_manifest_format"] = True
        kwargs["kubernetes_manifest_options"] = compiler.KubernetesManifestOptions(
            pipeline_name=PIPELINE_NAME,
            pipeline_version_name=version_name
            or f"{PIPELINE_NAME}-{__version__.replace('.', '-')}",
            namespace=namespace,
            include_pipeline_manifest=True,
        )
    compiler.Compiler().compile(pipeline, str(out), **kwargs)
    return out


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def validate_manifests(path: str | Path, crd_dir: str | Path = PACKAGED_CRD_DIR) -> list[str]:
    """Errors of every Pipeline/PipelineVersion document in ``path`` against the KFP CRDs.

    Raises FileNotFoundError naming the missing CRD files: no CRDs, no validation, never a
    silent pass."""
    from sam2_core.launch.validate import schema_errors

    missing = missing_crds(crd_dir)
    if missing:
        raise FileNotFoundError(
            f"CRD folder {crd_dir} lacks {', '.join(p.name for p in missing)}: point --crd-dir "
            f"at a folder holding them (the package ships them in {PACKAGED_CRD_DIR})"
        )
    errors: list[str] = []
    docs = load_documents(path)
    kinds = [d.get("kind") for d in docs]
    for kind in CRD_FILES:
        if kind not in kinds:
            errors.append(f"{path}: no {kind} document")
    for i, doc in enumerate(docs):
        doc_kind = str(doc.get("kind"))
        if doc_kind not in CRD_FILES:
            errors.append(f"{path}[{i}]: unexpected kind {doc_kind!r}")
            continue
        crd = Path(crd_dir) / CRD_FILES[doc_kind]
        errors += [
            f"{kind} {doc.get('metadata', {}).get('name')}: {e}" for e in schema_errors(doc, crd)
        ]
    return errors


def check_ir(path: str | Path) -> dict[str, Any]:
    """Strictly parse compiled IR (PipelineSpec + PlatformSpec protos) and load it with kfp."""
    from google.protobuf import json_format
    from kfp import components
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = load_documents(path)
    json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    if len(docs) > 1:
        platform = docs[1].get("platforms", {}).get("kubernetes", {})
        for cfg in platform.get("deploymentSpec", {}).get("executors", {}).values():
            json_format.ParseDict(cfg, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
    components.load_component_from_file(str(path))
    return docs[0]
