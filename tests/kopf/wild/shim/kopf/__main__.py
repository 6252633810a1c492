"""``python -m kopf run ...`` under the shim: opd's command line (``opd run`` takes kopf run's flags)."""

from opd.cli import main

main(prog_name="kopf")
