import sys

from coophash_keras.cli import main

sys.exit(main())
