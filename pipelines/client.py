"""Start runs and recurring runs of the pipeline on a KFP installation (``kfp.Client``)."""

import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.compile import compile_pipeline
from pipelines.finetune import PIPELINE_NAME, ClusterSettings

DEFAULT_EXPERIMENT = "sam2-finetune"
# KFP's backend parses cron with robfig/cron in its 6-field form: seconds come first.
_CRON6 = re.compile(r"^\S+(\s+\S+){5}$")


def make_client(
    host: str, *, namespace: str | None = None, token: str | None = None, verify_ssl: bool = True
) -> Any:
    """A ``kfp.Client`` for ``host`` (e.g. http://localhost:8080 after a port-forward)."""
    import kfp

    return kfp.Client(host=host, namespace=namespace, existing_token=token, verify_ssl=verify_ssl)


def _experiment_id(client: Any, name: str, namespace: str | None) -> str:
    exp = client.create_experiment(name=name, namespace=namespace)  # returns the existing one
    return str(exp.experiment_id)


@contextmanager
def compiled_package(settings: ClusterSettings | None) -> Iterator[str]:
    """The pipeline compiled for ``settings`` into a temporary file (removed afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        yield str(compile_pipeline(Path(tmp) / "pipeline.yaml", settings=settings))


def submit(
    client: Any,
    *,
    arguments: dict[str, Any],
    settings: ClusterSettings | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str = "",
    namespace: str | None = None,
    service_account: str | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Compile and start one run; returns the run id."""
    with compiled_package(settings) as package:
        result = client.create_run_from_pipeline_package(
            package,
            arguments=arguments,
            run_name=run_name or f"{PIPELINE_NAME} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            experiment_name=experiment,
            namespace=namespace,
            pipeline_root=pipeline_root,
            enable_caching=None,
            service_account=service_account,
        )
    return str(result.run_id)


def check_cron(cron: str) -> str:
    """Validate the 6-field (seconds first) cron KFP expects, e.g. ``"0 0 3 * * 0"``."""
    cron = cron.strip()
    if not _CRON6.match(cron):
        raise ValueError(
            f"cron {cron!r} must have 6 fields, seconds first (KFP uses robfig/cron): "
            "e.g. '0 0 3 * * 0' = Sundays 03:00"
        )
    return cron


def schedule(
    client: Any,
    *,
    cron: str,
    arguments: dict[str, Any],
    settings: ClusterSettings | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    job_name: str = f"{PIPELINE_NAME}-scheduled",
    namespace: str | None = None,
    service_account: str | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Create a recurring run: at most one run at a time and no catch-up after a pause."""
    cron = check_cron(cron)
    exp_id = _experiment_id(client, experiment, namespace)
    with compiled_package(settings) as package:
        rec = client.create_recurring_run(
            experiment_id=exp_id,
            job_name=job_name,
            description="scheduled SAM 2.1 retraining (warm start from the champion)",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=arguments,
            pipeline_package_path=package,
            enabled=True,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    return str(rec.recurring_run_id)
