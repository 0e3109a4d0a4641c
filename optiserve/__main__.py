from optiserve.cli import main

main()
