import sys

from napari_regional_mil.cli import main

sys.exit(main())
