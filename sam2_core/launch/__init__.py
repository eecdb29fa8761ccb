"""Training launch: one spec, rendered and run by the engine it names.

* :mod:`~sam2_core.launch.spec`: :class:`LaunchSpec` (every launch setting, one default each)
  and :class:`JobRun` (what differs per run), the ``torchrun ... sam2kf train`` command;
* :mod:`~sam2_core.launch.engines`: :func:`make_engine`, the one choice of engine by name;
* :mod:`~sam2_core.launch.pytorchjob`: the ``pytorchjob`` renderer (pure);
* :mod:`~sam2_core.launch.local`: the ``local`` engine (torchrun agents on this machine);
* :mod:`~sam2_core.launch.launcher`: the Kubernetes client side (create/attach, watch, logs,
  failure, timeout, cancel) for any job kind;
* :mod:`~sam2_core.launch.validate`: offline CRD + webhook-rule + Pod Security validation;
* :mod:`~sam2_core.launch.render_manifests`: the generated files of ``manifests/overlays``;
* :mod:`~sam2_core.launch.torchx_app`: the same training as a TorchX component.
"""
