"""Flex template entry point: the template's parameters arrive as command-line options."""

import sys

from beam_pipeline.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
