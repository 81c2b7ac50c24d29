"""``python -m lab.recipe ...``: see ``lab.recipe.cli``."""

from lab.recipe.cli import main

raise SystemExit(main())
