from inrlab.cli import main

raise SystemExit(main())
