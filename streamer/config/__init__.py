"""Settings: one pydantic model per section, read from ``STREAMER_*`` variables (nested with ``__``)."""
