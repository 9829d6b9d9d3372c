"""Scheduled sending.

cron.py     dispatch: the cron entry point (due issues, late window, catch-up)
esp.py      schedule / unschedule with the ESP's own scheduler; confirm passed ones
status.py   the ledger's rows for `status`
times.py    times in the newsletter's zone
"""
