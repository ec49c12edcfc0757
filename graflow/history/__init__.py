"""The run history: every run's record (graflow.history.recorder), where it is kept
(SQLite locally, Redis for Redis runs), and what ``graflow runs`` and ``graflow ui`` read."""
