from gan_core.cli import main

main()
