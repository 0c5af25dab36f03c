"""Sub-commands beyond ``run`` and ``list``, one module each.

A module here defines ``add_parser(subparsers)``, which adds its parser and sets
``handler`` (a function ``args -> exit code``) as the parser's default. Modules
import heavy libraries only inside their handler.
"""
