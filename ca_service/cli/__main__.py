from ca_service.cli.main import main

main()
