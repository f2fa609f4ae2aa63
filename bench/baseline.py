"""The benchmark's baseline: a bare Flask app whose webhook POST returns 200 and does nothing.

Run under the same gunicorn settings as the bot, it shows what the web stack itself costs, so
the bot's figures can be read as a ratio of that limit.
"""
from flask import Flask

app = Flask("baseline")


@app.post("/webhook/twitter")
def webhook():
    return "", 200
