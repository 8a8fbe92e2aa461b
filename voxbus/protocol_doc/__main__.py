import sys

from voxbus.protocol_doc import main

sys.exit(main())
