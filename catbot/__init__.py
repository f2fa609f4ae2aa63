"""catfacts bot: answers every X direct message with a cat fact.

The layout, one module per concern, and how a message becomes a reply: docs/architecture.md.
"""
