"""Real servers on 127.0.0.1 that the tests talk to (the fake ESP lives in tests/esp_server.py,
which also runs as its own process)."""
