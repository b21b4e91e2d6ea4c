from idios.cli import main

main()
