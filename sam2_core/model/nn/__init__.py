"""Building blocks of SAM 2.1, one concept per module: the Hiera trunk (:mod:`.hiera`), the FPN
neck (:mod:`.image_encoder`), position encodings, the prompt encoder, the two-way transformer,
the mask decoder, memory attention, the memory encoder and small shared layers (:mod:`.common`).

:class:`~sam2_core.model.sam2.SAM2Base` assembles them; parameter names follow Meta's modules so
that official checkpoints load strictly.
"""
