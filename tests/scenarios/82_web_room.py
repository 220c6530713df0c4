#!/usr/bin/python3
"""The web demo's room features (SPEC 9) in headless Chromium: the display name asked for
once and remembered, authors and who is here, typing with names, the reply-mode switch
(PATCH /sessions/{id}, session_changed), the Regenerate button (message_superseded), a
refused regenerate and a chat over its key's quota shown with the server's message.

Runs tests/web/room.test.mjs against parley-rest and a broker with the echo assistant and
--quota-messages-per-day 2 (a quota only counts once an API key exists: the test makes
one at its end); see tests/lib/web_support.py.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
import web_support  # noqa: E402

NODE_TIMEOUT_S = 90


def main(t):
    web_support.run_browser_test(t, "room.test.mjs", NODE_TIMEOUT_S,
                                 broker_flags={"--quota-messages-per-day": "2"})


if __name__ == "__main__":
    parley.run(main)
