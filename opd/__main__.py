from opd.cli import main

main()
