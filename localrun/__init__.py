"""Running the bot's processes on this machine: shared by the tests, ``bench/`` and the demo."""
