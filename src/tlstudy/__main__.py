from tlstudy.cli import main

raise SystemExit(main())
