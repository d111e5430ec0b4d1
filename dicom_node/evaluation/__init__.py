"""Knowing whether the AI is right here: what each result was made under, what readers and reference
standards say of it, local performance, and drift alarms.

Statistics are pure functions on plain rows (no database); the database side lives in `db/`.
"""
