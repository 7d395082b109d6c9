"""``python -m jaxtd._bench [options]``: the same as ``python -m jaxtd bench``."""

import sys

from jaxtd._bench import main

sys.exit(main())
