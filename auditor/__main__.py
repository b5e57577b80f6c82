"""``python -m auditor``: the command line (as ``torchrun -m auditor`` starts it)."""

from auditor.cli import main

main()
