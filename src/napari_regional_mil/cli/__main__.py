"""``python -m napari_regional_mil.cli``: the ``napari-regional-mil`` command line."""

import sys

from . import main

sys.exit(main())
