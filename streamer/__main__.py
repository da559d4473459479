import sys

from streamer.app.cli import main

sys.exit(main())
