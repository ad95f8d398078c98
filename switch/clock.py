"""Time as the switch and its peers see it: the business day and ISO 8583 date fields."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo


class BusinessCalendar:
    """The business day runs from a cutover time in a time zone (spec: default 00:00 UTC).
    Dedupe and the reversal window are per business day."""

    def __init__(self, cutover: str = "00:00", tz: str = "UTC"):
        hours, minutes = (int(part) for part in cutover.split(":"))
        self._offset = timedelta(hours=hours, minutes=minutes)
        self._zone = ZoneInfo(tz)

    def day_of(self, moment: datetime) -> date:
        return (moment.astimezone(self._zone) - self._offset).date()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Formatting by hand: strftime costs several microseconds a call, and these run for every message.

def transmission_time(moment: datetime) -> str:
    """Field 7: MMDDhhmmss in UTC."""
    if moment.utcoffset():
        moment = moment.astimezone(timezone.utc)
    return f"{moment.month:02d}{moment.day:02d}{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"


def local_time_fields(moment: datetime) -> tuple[str, str]:
    """Fields 12 (hhmmss) and 13 (MMDD)."""
    return f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}", f"{moment.month:02d}{moment.day:02d}"

