"""The benchmark's baseline: a bare Flask app whose webhook POST returns 200 and does nothing.

Run under the same gunicorn settings as the bot (``gunicorn.conf.py``: the same worker class,
threads and keep-alive), it shows what the web stack itself costs, so the bot's figures can be
read as a ratio of that limit. It imports nothing of the bot's, and neither does the worker
class (``catbot.server``), so the baseline's cost is the server's and Flask's alone.
"""
from flask import Flask

app = Flask("baseline")


@app.post("/webhook/twitter")
def webhook():
    return "", 200
