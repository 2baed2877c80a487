from criu_aio_plugin.cli.main import main

raise SystemExit(main())
