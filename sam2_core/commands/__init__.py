"""Subcommands of ``sam2kf``; each module defines ``add_arguments(parser)`` and ``run(args)``."""
