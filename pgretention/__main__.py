from pgretention.cli import main

main()
