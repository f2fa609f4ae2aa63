"""catfacts bot: answers every X direct message with a cat fact.

One module per concern:

- ``settings``  the immutable configuration object everything else receives
- ``security``  CRC answer and webhook signature check (pure functions)
- ``events``    turning an Account Activity delivery into incoming DMs
- ``replies``   what the bot says: commands, framing, help text
- ``journal``   the webhook's per-process append-only record (embedded default)
- ``store``     the source of truth: de-duplication, pending replies, user state, rate budget
- ``queue``     huey: wake-ups, delayed retries, periodic sweep, embedded consumer
- ``account_activity``  X's webhook and subscription endpoints (set-up, replay)
- ``worker``    ``python -m catbot.worker``, a process that only sends replies
- ``xclient``   the tweepy client and how X's answers are classified
- ``delivery``  the job that turns pending messages into sent replies
- ``runtime``   wiring the parts together from settings
- ``web``       the Flask app factory
- ``logs``      one structured log line per meaningful event
"""
