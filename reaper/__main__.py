from reaper.app.cli import main

main()
