from fovea.cli import main

main()
