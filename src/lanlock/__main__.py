from lanlock.cli import main

main(prog_name="lanlock")
