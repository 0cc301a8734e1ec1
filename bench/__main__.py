"""``python -m bench``: see :mod:`bench.run`.

``python -m bench compare OLD.json NEW.json``: see :mod:`bench.compare`.
"""

import sys

if sys.argv[1:2] == ["compare"]:
    from .compare import main as compare

    sys.exit(compare(sys.argv[2:]))

from .run import main

sys.exit(main())
