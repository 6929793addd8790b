"""The web inbox's script and style sheet, served as files of their own (the page's content
security policy runs no inline script)."""

from __future__ import annotations

from typing import Final

#: Live updates: the API's stream says when the inbox changes; the list is then fetched again,
#: rendered (and neutralised) by the server; an open request whose decision was made elsewhere
#: says so. Nothing from a request is ever put in the page by this script as markup of its own.
SCRIPT: Final = """\
"use strict";
const rows = document.getElementById("rows");
const opened = document.body.dataset.request;
const stream = new EventSource("/api/stream");
stream.addEventListener("inbox", async () => {
  if (rows) {
    const answer = await fetch("/rows" + window.location.search);
    if (answer.status === 401) {
      window.location.reload();  // signed out: to the sign-in page
    } else if (answer.ok) {
      rows.innerHTML = await answer.text();
    }
  }
  if (opened) {
    const answer = await fetch("/api/requests/" + encodeURIComponent(opened));
    const note = document.getElementById("elsewhere");
    if (answer.ok && note && (await answer.json()).decided) {
      note.hidden = false;
    }
  }
});
"""

STYLE: Final = """\
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1.2em;
         background: #1d1d1f; color: #fafafa; }
header a { color: #fafafa; font-weight: 600; text-decoration: none; }
header .who { margin-left: auto; }
main { padding: 1em 1.2em; max-width: 72em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd;
         vertical-align: top; }
pre, textarea { font: 13px/1.4 ui-monospace, monospace; white-space: pre-wrap;
                overflow-wrap: anywhere; }
pre { background: #fff; border: 1px solid #ddd; padding: .6em; }
textarea { width: 100%; box-sizing: border-box; }
.banner { padding: .6em; border-radius: 4px; margin: .6em 0; }
.ok { background: #e3f5e6; } .refused { background: #fdecea; } .note { background: #fff6d6; }
.risk { font-weight: 600; }
form.inline { display: inline; }
button { font: inherit; padding: .3em .9em; margin-right: .4em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
dt { color: #555; }
"""
