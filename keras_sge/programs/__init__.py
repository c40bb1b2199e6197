"""The command-line programs: `python -m keras_sge.programs.<name>` or `keras-sge-<name>`.

Each module has a `main(argv=None)`; `arguments` holds the flags they share.
Importing this package imports nothing beyond the core.
"""
