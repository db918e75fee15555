"""``python -m dsg_viz`` = the ``dsg-viz`` command (also under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
