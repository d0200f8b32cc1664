from ferqueue.cli import main

main()
