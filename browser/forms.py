"""Form fields as a person fills them: selects by label, radio groups by their choice, dates in a
native field or through a calendar widget, and a form submitted as its button would."""

from __future__ import annotations

import calendar
import json
import re
import secrets
from datetime import date
from typing import Any

from playwright.async_api import Locator, Page

from base.errors import ErrorCode
from browser.errors import PageError

NATIVE_DATES = ("date", "time", "datetime-local", "month", "week")
TRUE = ("true", "yes", "on", "1", "checked", "x")
FALSE = ("false", "no", "off", "0", "unchecked", "")
#: how many months a calendar widget is paged through at most
MAX_MONTHS = 240


# Marks the radio of a group whose label (or value) is `wanted`: the group is the element's own
# (same name) when it is a radio, else the radios inside its fieldset or radiogroup.
_RADIO = """(e, [wanted, mark]) => {
  const norm = s => (s || '').replace(/\\s+/g, ' ').trim().toLowerCase();
  let radios;
  if (e.type === 'radio') {
    const scope = e.form || e.getRootNode();
    radios = Array.from(scope.querySelectorAll('input[type=radio]')).filter(r => r.name === e.name);
  } else {
    const box = e.closest('fieldset, [role=radiogroup]') || e.parentElement || e;
    radios = Array.from(box.querySelectorAll('input[type=radio], [role=radio]'));
  }
  const label = r => norm(Array.from(r.labels || []).map(l => l.innerText).join(' ')
    || r.getAttribute('aria-label') || r.innerText || r.value);
  const want = norm(wanted);
  let hits = radios.filter(r => label(r) === want || norm(r.value) === want);
  if (!hits.length) hits = radios.filter(r => label(r).includes(want));
  if (hits.length !== 1) return {count: hits.length, options: radios.map(label)};
  hits[0].setAttribute('data-agent-pick', mark);
  return {count: 1};
}"""

# A submit control submits as itself (its formaction and its name=value are what was approved);
# anything else submits its form as the form's own default would.
_SUBMIT = """e => {
  const form = e.tagName === 'FORM' ? e : (e.form || e.closest('form'));
  if (!form) return false;
  const submits = (e.localName === 'button' && e.type === 'submit')
    || (e.localName === 'input' && (e.type === 'submit' || e.type === 'image'));
  form.requestSubmit(submits && e.form === form ? e : undefined);
  return true;
}"""

# A calendar widget: its visible "Month Year" header, and its previous/next controls. jQuery UI's
# datepicker by its class names; others by what a person reads (a month name and a year, arrows).
_CALENDAR = """([action, day]) => {
  const shown = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const months = ['january','february','march','april','may','june','july','august',
    'september','october','november','december'];
  const all = Array.from(document.querySelectorAll(
    '.ui-datepicker-title, [class*=calendar] [class*=title], [class*=picker] [class*=title], '
    + '[class*=month], caption, th, [role=heading], h2, h3, h4, div, span')).filter(shown);
  let header = null, month = -1, year = -1;
  for (const e of all) {
    const text = (e.innerText || '').trim().toLowerCase();
    if (text.length > 30) continue;
    const m = text.match(/^([a-z]+)[\\s,]+(\\d{4})$/);
    if (m && months.indexOf(m[1]) >= 0) { header = e; month = months.indexOf(m[1]); year = +m[2];
      break; }
  }
  if (!header) return null;
  // The calendar is the smallest box around the header that also holds the days; failing that,
  // the nearest one named like a calendar above the header (whose own class may say "picker"
  // too: jQuery UI's title is a "ui-datepicker-title", with neither arrows nor days in it).
  let root = header.parentElement;
  while (root && root !== document.body && !root.querySelector('td, [role=gridcell]'))
    root = root.parentElement;
  if (!root || root === document.body)
    root = header.parentElement.closest('[class*=calendar], [class*=picker], [role=dialog]')
      || header.parentElement;
  const controls = Array.from(root.querySelectorAll('a, button, [role=button], span, th'))
    .filter(shown);
  const named = re => controls.find(c => re.test(((c.getAttribute('aria-label') || '') + ' '
    + (c.title || '') + ' ' + (c.className || '') + ' ' + (c.innerText || '')).toLowerCase()));
  if (action === 'prev' || action === 'next') {
    const c = action === 'prev' ? named(/prev|‹|«|</) : named(/next|›|»|>/);
    if (!c) return {month, year, missing: action};
    c.click();
    return {month, year, clicked: action};
  }
  if (action === 'day') {
    const cells = Array.from(root.querySelectorAll('td a, td button, td, [role=gridcell], button'))
      .filter(shown).filter(c => (c.innerText || '').trim() === String(day)
        && !/other-month|disabled|outside/.test(
          c.className + ' ' + (c.parentElement || {}).className));
    if (!cells.length) return {month, year, missing: 'day'};
    cells[0].click();
    return {month, year, clicked: 'day'};
  }
  return {month, year};
}"""


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def choose_radio(locator: Locator, choice: str) -> None:
    """Check the radio button labelled `choice` in the group of `locator` (a radio of the group,
    or the fieldset or radiogroup around it)."""
    mark = secrets.token_hex(4)
    found = await locator.evaluate(_RADIO, [choice, mark])
    if found["count"] != 1:
        listed = ", ".join(repr(o) for o in found["options"][:30])
        what = "several choices match" if found["count"] else "no choice matches"
        raise PageError(f"{what} {choice!r}; the choices are: {listed}", code=ErrorCode.NOT_FOUND)
    root = locator.locator("xpath=ancestor-or-self::*[last()]")
    await root.locator(f'[data-agent-pick="{mark}"]').check()


async def submit_form(locator: Locator) -> None:
    if not await locator.evaluate(_SUBMIT):
        raise PageError("that element is in no form", code=ErrorCode.NOT_IN_FORM)


def flag(value: str) -> bool:
    text = value.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise PageError(f"a checkbox takes true or false, not {value!r}", code=ErrorCode.BAD_VALUE)


def input_type(line: str) -> str | None:
    """An input's type, as its snapshot line says it (`type=date`); None if it says none."""
    found = re.search(r"\btype=([\w-]+)", line)
    return found.group(1) if found else None


async def set_date_value(page: Page, locator: Locator, value: str, kind: str | None = None) -> None:
    """Set a date (YYYY-MM-DD), time or both: in a native field directly; in a text field with a
    calendar widget by paging the calendar to the month and clicking the day, as a person would;
    in a plain text field by typing it. `kind` is the field's type, if known already."""
    if kind is None:
        kind = await locator.evaluate("e => (e.type || '').toLowerCase()")
    if kind in NATIVE_DATES:
        await locator.fill(value)
        return
    try:
        wanted = date.fromisoformat(value[:10])
    except ValueError:
        raise PageError(
            f"{value!r} is not a date as YYYY-MM-DD", code=ErrorCode.BAD_VALUE
        ) from None
    await locator.click()
    seen = await page.evaluate(_CALENDAR, ["look", 0])
    if seen is None:
        if not await locator.is_editable():
            raise PageError(
                "no calendar opened, and the field cannot be typed in", code=ErrorCode.BAD_FIELD
            )
        await locator.fill(value)
        return
    for _ in range(MAX_MONTHS):
        target = (wanted.year, wanted.month - 1)
        here = (seen["year"], seen["month"])
        if here == target:
            picked = await page.evaluate(_CALENDAR, ["day", wanted.day])
            if picked is None or picked.get("missing"):
                raise PageError(f"the calendar shows no day {wanted.day}", code=ErrorCode.NOT_FOUND)
            return
        step = "prev" if here > target else "next"
        seen = await page.evaluate(_CALENDAR, [step, 0])
        if seen is None or seen.get("missing"):
            raise PageError(f"the calendar has no {step} control", code=ErrorCode.NOT_FOUND)
        seen = await page.evaluate(_CALENDAR, ["look", 0])
        if seen is None:
            raise PageError("the calendar closed while paging it", code=ErrorCode.NOT_FOUND)
    name = calendar.month_name[wanted.month]
    raise PageError(f"the calendar did not reach {name} {wanted.year}", code=ErrorCode.NOT_FOUND)
