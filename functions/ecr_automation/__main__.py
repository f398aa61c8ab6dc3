from ecr_automation.cli import main

raise SystemExit(main())
