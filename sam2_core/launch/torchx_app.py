"""TorchX component: ``sam2kf train`` on N nodes x M processes.

Install with the ``torchx`` extra (``pip install -e ".[torchx]"``), which pins
``torchx-nightly==2026.10.26``: torchx 0.7.0, the last stable release (2024), pins
``urllib3<1.27`` and cannot share an environment with kfp 2.17 (urllib3 2.x); a joint install
silently backtracks to torchx 0.3.0. The dated nightly has no such pin.

Locally (CPU, 2 processes; ``torchrun`` must be on PATH, i.e. the venv's ``bin``)::

    torchx run -s local_cwd sam2_core/launch/torchx_app.py:train -j 1x2 --image local \\
        -- experiment=smoke model=tiny trainer.max_steps=2 trainer.device=cpu

On Kubernetes (TorchX's scheduler creates a Volcano ``batch.volcano.sh/v1alpha1`` Job, so the
cluster needs Volcano and a queue; ``--dryrun`` prints it without a cluster)::

    torchx run -s kubernetes -cfg queue=default,namespace=ml --workspace "" \\
        sam2_core/launch/torchx_app.py:train -j 2x8 --gpu 8 --cpu 96 --memMB 900000 \\
        --mounts type=volume,src=sam2kf-data,dst=/data \\
        -- model=sam2.1_hiera_b+ data.shards=/data/datasets/v1 trainer.output_dir=/data/runs/tx1

Note: TorchX's Kubernetes scheduler sets no pod securityContext, so its pods do not meet the
"restricted" Pod Security profile: submit them to a namespace enforcing "baseline" (the image
itself runs as UID 1000), or use the PyTorchJob manifests, which are restricted-compliant.
"""

# No `from __future__ import annotations`: TorchX reads the real annotation objects.

import shlex

import torchx.specs as specs

from sam2_core import image_ref

#: What torchrun starts on every node; ``--entry`` replaces it (tests use a tiny script).
DEFAULT_ENTRY = "sam2kf train"


def _parse_j(j: str) -> tuple[int, int, int]:
    """``[min:]NxM`` -> (min_nodes, nodes, procs_per_node)."""
    try:
        nodes_part, procs = j.split("x")
        lo, _, hi = nodes_part.rpartition(":")
        nodes = int(hi)
        min_nodes = int(lo) if lo else nodes
        nproc = int(procs)
    except ValueError as e:
        raise ValueError(f"-j {j!r}: expected [MIN:]NODESxPROCS, e.g. 2x8 or 1:4x8") from e
    if not 1 <= min_nodes <= nodes or nproc < 1:
        raise ValueError(f"-j {j!r}: need 1 <= MIN <= NODES and PROCS >= 1")
    return min_nodes, nodes, nproc


def train(
    *overrides: str,
    j: str = "1x2",
    image: str = image_ref(flavour="train"),
    cpu: int = 4,
    gpu: int = 0,
    memMB: int = 16384,
    name: str = "sam2kf-train",
    entry: str = DEFAULT_ENTRY,
    env: dict[str, str] | None = None,
    mounts: list[str] | None = None,
    max_retries: int = 0,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Fine-tune SAM 2.1 with ``sam2kf train`` under torchrun on NODES x PROCS processes.

    Args:
        overrides: Hydra overrides passed to ``sam2kf train`` (e.g. model=tiny trainer.max_steps=2)
        j: [MIN:]NODESxPROCS, e.g. 1x2 (one node, two processes) or 2x8; MIN enables elastic
        image: container image (version-tagged; ignored by local_cwd)
        cpu: CPUs per node
        gpu: GPUs per node (nvidia.com/gpu); PROCS must not exceed it when > 0
        memMB: memory per node in MB
        name: application name
        entry: command torchrun starts in every process (default ``sam2kf train``)
        env: extra environment variables, e.g. NCCL_DEBUG=WARN
        mounts: volume mounts, e.g. type=volume,src=sam2kf-data,dst=/data (a PVC on Kubernetes)
        max_retries: scheduler-level retries of the whole job
        rdzv_port: c10d rendezvous port on the first node (multi-node only)
    """
    min_nodes, nodes, nproc = _parse_j(j)
    if gpu and nproc > gpu:
        raise ValueError(f"{nproc} processes per node exceed --gpu {gpu}")
    entry_argv = shlex.split(entry)
    if not entry_argv:
        raise ValueError("--entry must not be empty")
    if nodes == 1:
        # One agent: port 0 lets torchrun pick a free port, so parallel local runs never clash.
        endpoint = "localhost:0"
    else:
        # Schedulers export the first replica's host name in this variable; bash expands it
        # when the container starts (the "$$" survives TorchX's own macro substitution).
        endpoint = f"$${{{specs.macros.rank0_env}:=localhost}}:{rdzv_port}"
    torchrun = [
        "torchrun",
        f"--nnodes={min_nodes}:{nodes}" if min_nodes != nodes else f"--nnodes={nodes}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-id={specs.macros.app_id}",
        "--tee=3",
        "--no-python",
    ]
    user = [*entry_argv, *overrides]
    # Only the endpoint is left unquoted: it must be expanded by the shell.
    command = " ".join([shlex.join(torchrun), f"--rdzv-endpoint={endpoint}", shlex.join(user)])
    role_env = {"PYTHONUNBUFFERED": "1", "LOGLEVEL": "WARNING", **(env or {})}
    role = specs.Role(
        name="trainer",
        image=image,
        entrypoint="bash",
        args=["-c", command],
        env=role_env,
        num_replicas=nodes,
        min_replicas=min_nodes,
        resource=specs.Resource(cpu=cpu, gpu=gpu, memMB=memMB),
        port_map={"c10d": rdzv_port},
        max_retries=max_retries,
        mounts=specs.parse_mounts(mounts) if mounts else [],
    )
    return specs.AppDef(name=name, roles=[role])
