import sys

from llf_recipes.cli import main

sys.exit(main())
