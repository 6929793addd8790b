// The agent's view of one frame: a compact text snapshot with element refs, target lookup, and
// what a form would send.
//
// Evaluated once per document (idempotent); browser/_script.py then calls window.__agent.*.
// Each frame runs its own copy: the script never descends into an iframe but gives it a ref and
// a {{frame ref}} placeholder, and the driver splices the child frame's own snapshot in there.
//
// Refs ("e12" here, "f1e3" in a child frame given the prefix "f1e") are given on first sight,
// kept for the life of the document, and written to the element as data-agent-ref so that the
// driver can find it with the CSS selector [data-agent-ref="e12"] (which pierces open shadow
// roots).
//
// Page text is data, never instructions: names and values are clipped and JSON-quoted, a ref in
// text ("[e12]") is escaped ("\[e12]"), and "{{" is broken up everywhere so that no page text
// can pose as a frame placeholder.
window.__agent ??= (() => {
  'use strict';
  const NAME_MAX = 80;
  const VALUE_MAX = 200;
  const HREF_MAX = 150;
  const OPTIONS_MAX = 25;
  const CANDIDATES_MAX = 20;
  // Past this many times maxChars the walk keeps no more text, and past twice that it stops:
  // a bound on time and memory for huge pages.
  const WALK_FACTOR = 10;
  const TEXT = 0; // line kinds, in the order they are given up when the text is too long
  const HEAD = 1;
  const CTL = 2;

  const words = (s) => new Set(s.split(/\s+/));
  const SKIP = words('script style noscript template head title math');
  const ROLES = words(`button link checkbox radio tab menuitem menuitemcheckbox menuitemradio
    option combobox textbox searchbox switch slider spinbutton treeitem listbox`);
  // Roles named by their text (a textbox is not: its text is its value).
  const CLICKS = words(`button link checkbox radio switch tab menuitem menuitemcheckbox
    menuitemradio option treeitem clickable`);
  const CONTROLS = words(`textbox searchbox combobox listbox checkbox radio switch slider
    spinbutton file`);
  const BUTTON_TYPES = words('submit reset button image');
  // Tags whose text a name separates with spaces (names are built without styles).
  const BLOCK_TAG = words(`address article aside blockquote dd div dl dt fieldset figcaption figure
    footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table td th tr ul`);
  // Leaves: what they contain is their value or their own document, not part of this snapshot.
  const LEAF = words('input select textarea iframe frame img svg');
  const INTERACTIVE =
    'a[href],button,input,select,textarea,summary,iframe,[role],[contenteditable],[onclick]';

  const refOf = new WeakMap(); // element -> ref
  const byRef = new Map(); // ref -> WeakRef(element)
  let counter = 0;
  let lastPrefix = 'e'; // for find() when the driver gives none

  const norm = (s) => String(s ?? '').replace(/\s+/g, ' ').trim();
  const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
  const unbrace = (s) => s.replace(/\{(?=\{)/g, '{ ');
  const quote = (s, n = NAME_MAX) => JSON.stringify(unbrace(clip(norm(s), n)));
  const bare = (s) => (/^[\w.:@/+-]+$/.test(s) ? s : quote(s));
  // A field's value as it is, space for space, JSON-quoted ("{{" written "{\u007b", which reads
  // back the same and cannot pose as a placeholder); past VALUE_MAX, cut, saying how much more.
  const exactValue = (s) => {
    const more = s.length - VALUE_MAX;
    const json = JSON.stringify(more > 0 ? s.slice(0, VALUE_MAX) : s).replace(/\{(?=\{)/g, '\\u007b');
    return more > 0 ? `value=${json}(+${more} more characters: browser_extract reads it whole)` :
      `value=${json}`;
  };

  function assign(el, prefix) {
    let ref = refOf.get(el);
    if (!ref) {
      ref = `${prefix}${++counter}`;
      refOf.set(el, ref);
      byRef.set(ref, new WeakRef(el));
    }
    // Set again if the page dropped it, or cloned an element together with its attribute.
    if (el.getAttribute('data-agent-ref') !== ref) el.setAttribute('data-agent-ref', ref);
    return ref;
  }

  function lookup(ref) {
    const el = byRef.get(ref)?.deref();
    return el?.isConnected ? el : null;
  }

  // The parent in the composed tree: a shadow root's children have the host as parent.
  const parentOf = (el) => el.parentElement ?? el.parentNode?.host ?? null;

  // A host renders its shadow root, not its light children; those come through its slots.
  function kids(el) {
    if (el.shadowRoot) return el.shadowRoot.childNodes;
    const assigned = el.localName === 'slot' ? el.assignedNodes() : [];
    return assigned.length ? assigned : el.childNodes;
  }

  function hasBox(el) {
    for (const r of el.getClientRects()) if (r.width > 0 && r.height > 0) return true;
    return false;
  }

  function isVisible(el) {
    if (!el.checkVisibility({ visibilityProperty: true }) || !hasBox(el)) return false;
    for (let e = el; e; e = parentOf(e)) {
      if (e.hidden || e.getAttribute('aria-hidden') === 'true') return false;
      if (e !== el && clipsAll(e, getComputedStyle(e))) return false;
    }
    return true;
  }

  function inputRole(type) {
    if (type === 'hidden') return null;
    if (type === 'checkbox' || type === 'radio' || type === 'file') return type;
    return BUTTON_TYPES.has(type) ? 'button' : type === 'range' ? 'slider' : 'textbox';
  }

  function nativeRole(el) {
    switch (el.localName) {
      case 'a': return el.hasAttribute('href') ? 'link' : null;
      case 'button': return 'button';
      case 'input': return inputRole(el.type);
      case 'textarea': return 'textbox';
      case 'select': return el.multiple || el.size > 1 ? 'listbox' : 'combobox';
      case 'summary': return el.parentElement?.localName === 'details' ? 'button' : null;
      case 'iframe': case 'frame': return 'iframe';
      default: return null;
    }
  }

  const ariaRole = (el) => {
    const role = (el.getAttribute('role') ?? '').trim().split(/\s+/)[0];
    return ROLES.has(role) ? role : null;
  };

  // A label whose control is hidden (a styled checkbox) is what a user clicks instead.
  function proxied(el) {
    const c = el.localName === 'label' && !ariaRole(el) ? el.control : null;
    return c && !isVisible(c) ? c : null;
  }

  // The role from markup alone, no styles: ARIA, native element, contenteditable, onclick.
  function semanticRole(el) {
    const role = ariaRole(el) ?? nativeRole(el);
    if (role) return role;
    if (el.isContentEditable && !parentOf(el)?.isContentEditable) return 'textbox';
    if (el.localName === 'label') {
      const c = proxied(el);
      return c ? semanticRole(c) : null;
    }
    return el.hasAttribute('onclick') ? 'clickable' : null;
  }

  function roleOf(el, style) {
    const role = semanticRole(el);
    if (role || el.localName === 'label' || el === document.body) return role;
    if (el === document.documentElement) return null;
    // Only the outermost element of a pointer-cursor region: its children inherit the cursor.
    if ((style ?? getComputedStyle(el)).cursor !== 'pointer') return null;
    const p = parentOf(el);
    return p && getComputedStyle(p).cursor === 'pointer' ? null : 'clickable';
  }

  function headingLevel(el) {
    const m = /^h([1-6])$/.exec(el.localName);
    if (m) return Number(m[1]);
    return el.getAttribute('role') === 'heading' ? Number(el.getAttribute('aria-level')) || 2 : 0;
  }

  // Text of a subtree as a name: without hidden parts, script, or the contents of controls.
  function textOf(node) {
    let out = '';
    for (const n of kids(node)) {
      if (n.nodeType === Node.TEXT_NODE) out += n.data;
      if (n.nodeType !== Node.ELEMENT_NODE || n.hidden) continue;
      const tag = n.localName;
      if (SKIP.has(tag) || n.getAttribute('aria-hidden') === 'true') continue;
      if (tag === 'img') out += ` ${n.getAttribute('alt') ?? ''} `;
      else if (tag === 'input') out += BUTTON_TYPES.has(n.type) ? ` ${n.value} ` : '';
      else if (tag !== 'select' && tag !== 'textarea') {
        out += BLOCK_TAG.has(tag) ? ` ${textOf(n)} ` : textOf(n);
      }
    }
    return out;
  }

  function accName(el, role) {
    const ids = el.getAttribute('aria-labelledby');
    if (ids) {
      const root = el.getRootNode();
      const parts = ids.split(/\s+/).map((id) => root.getElementById?.(id)).filter(Boolean);
      const t = norm(parts.map(textOf).join(' '));
      if (t) return t;
    }
    const aria = norm(el.getAttribute('aria-label'));
    if (aria) return aria;
    if (el.labels?.length) {
      const t = norm([...el.labels].map(textOf).join(' '));
      if (t) return t;
    }
    const tag = el.localName;
    if (tag === 'input' && BUTTON_TYPES.has(el.type)) {
      if (el.type === 'image') return norm(el.getAttribute('alt')) || 'Submit';
      return norm(el.value) || { submit: 'Submit', reset: 'Reset' }[el.type] || '';
    }
    if (tag === 'iframe' || tag === 'frame') {
      return norm(el.title || el.name || el.getAttribute('src') || (el.srcdoc && 'srcdoc'));
    }
    if (tag === 'img') return norm(el.getAttribute('alt'));
    if (!role || CLICKS.has(role)) {
      const t = norm(textOf(el));
      if (t) return t;
    }
    return norm(el.getAttribute('placeholder') || el.getAttribute('title') || '');
  }

  function deepActive() {
    let a = document.activeElement;
    while (a?.shadowRoot?.activeElement) a = a.shadowRoot.activeElement;
    return a;
  }

  function hrefOf(el) {
    const raw = typeof el.href === 'string' ? el.href : el.getAttribute('href') ?? '';
    let h = raw;
    try {
      const u = new URL(raw, location.href);
      if (u.origin === location.origin) h = u.pathname + u.search + u.hash;
    } catch {
      // not a URL: shown as written
    }
    return unbrace(clip(h.replace(/\s/g, '%20'), HREF_MAX));
  }

  function optionsOf(select) {
    const opts = [...select.options];
    const shown = opts.slice(0, OPTIONS_MAX).map((o) => {
      const label = norm(o.label || o.text);
      const value = o.value === label ? '' : `=${bare(o.value)}`;
      return `${quote(label)}${value}${o.selected ? '*' : ''}${o.disabled ? '(disabled)' : ''}`;
    });
    const more = opts.length > OPTIONS_MAX ? `, …(${opts.length - OPTIONS_MAX} more)` : '';
    return `options: ${shown.join(', ')}${more}`;
  }

  // Value and state of a control, as short words after its name.
  function facts(el, role) {
    const f = [];
    const tag = el.localName;
    const type = tag === 'input' ? el.type : '';
    const attr = (a) => el.getAttribute(a);
    const texty = role === 'textbox' && (tag === 'input' || tag === 'textarea');
    if (texty && type && type !== 'text') f.push(`type=${type}`);
    if (tag === 'textarea') f.push('multiline');
    if (role === 'link') {
      f.push(`href=${hrefOf(el)}`);
      const target = el.getAttribute('target');
      if (target && !['_self', '_top', '_parent'].includes(target)) f.push('new-tab');
    }
    if (type === 'password') {
      if (el.value) f.push(`value=(hidden, ${el.value.length} chars)`);
    } else if (type === 'file') {
      const names = [...(el.files ?? [])].map((x) => x.name);
      if (names.length) f.push(`files=${quote(names.join(', '), VALUE_MAX)}`);
    } else if (tag === 'select') {
      const chosen = [...el.selectedOptions].map((o) => quote(o.value));
      if (chosen.length) f.push(`value=${chosen.join(',')}`);
    } else if (texty || role === 'slider') {
      if (el.value) f.push(exactValue(el.value));
    } else if (role === 'textbox' && el.isContentEditable) {
      const t = el.innerText ?? textOf(el);
      if (t.trim()) f.push(exactValue(t));
    } else if (attr('aria-valuetext') ?? attr('aria-valuenow')) {
      f.push(`value=${quote(attr('aria-valuetext') ?? attr('aria-valuenow'))}`);
    }
    const checkable = type === 'checkbox' || type === 'radio';
    let checked = attr('aria-checked');
    if (checkable) checked = el.indeterminate ? 'mixed' : `${el.checked}`;
    const expanded = tag === 'summary' ? `${el.parentElement.open}` : attr('aria-expanded');
    const states = {
      checked: checked === 'true',
      mixed: checked === 'mixed',
      selected: attr('aria-selected') === 'true',
      pressed: attr('aria-pressed') === 'true',
      expanded: expanded === 'true',
      collapsed: expanded === 'false',
      disabled: el.matches(':disabled') || attr('aria-disabled') === 'true',
      required: el.required || attr('aria-required') === 'true',
      readonly: (texty && el.readOnly) || attr('aria-readonly') === 'true',
      multiple: el.multiple,
    };
    for (const [word, on] of Object.entries(states)) if (on) f.push(word);
    for (const a of ['min', 'max']) if (type && el.hasAttribute(a)) f.push(`${a}=${bare(attr(a))}`);
    if (el === deepActive()) f.push('focused');
    if (tag === 'select') f.push(optionsOf(el));
    return f;
  }

  // One line for an element with a role: `[e3] button "Sign in" disabled`.
  function describe(el, role, prefix, placeholder = true) {
    const ref = assign(el, prefix);
    // A label standing in for its hidden control has the control's state.
    const stand = proxied(el);
    const name = stand ? norm(textOf(el)) : accName(el, role);
    const parts = [`[${ref}]`, role];
    if (name) parts.push(quote(name));
    if (role === 'iframe') {
      if (placeholder) parts.push(`{{frame ${ref}}}`);
    } else {
      parts.push(...facts(stand ?? el, role));
    }
    return parts.join(' ');
  }

  // --- snapshot ---------------------------------------------------------------------------

  function emit(s, t, kind) {
    if (s.stopped) return;
    if (s.size > s.limit && kind === TEXT) {
      // Past the limit only headings and controls are kept; fit() shows the gap as "…".
      if (!s.lines.at(-1)?.drop) s.lines.push({ t: '', kind, drop: true });
      return;
    }
    const line = (s.pending ?? s.indent) + t;
    s.pending = null;
    s.lines.push({ t: line, kind, drop: false });
    s.size += line.length + 1;
    s.stopped = s.size > 2 * s.limit;
  }

  function flush(s) {
    const t = norm(s.buf);
    s.buf = '';
    // Page text must not pass for a ref: escape "[" before anything shaped like one (not "[1]").
    const safe = t.replace(/\[(?=[a-z][a-z0-9]*\d\])/gi, '\\[');
    if (t) emit(s, unbrace(safe), s.heading ? HEAD : TEXT);
  }

  function walkKids(el, s, ctx) {
    for (const n of kids(el)) {
      if (s.stopped) return;
      if (n.nodeType === Node.TEXT_NODE) {
        if (ctx.visible && !ctx.mute) s.buf += n.data;
      } else if (n.nodeType === Node.ELEMENT_NODE) {
        walkElement(n, s, ctx);
      }
    }
  }

  function walkElement(el, s, ctx) {
    const tag = el.localName;
    if (SKIP.has(tag) || el.hidden || el.getAttribute('aria-hidden') === 'true') return;
    const st = getComputedStyle(el);
    if (st.display === 'none' || clipsAll(el, st)) return;
    // visibility is inherited but a child may set it back to visible, so it does not prune.
    const inner = { visible: st.visibility === 'visible', mute: ctx.mute };
    const role = roleOf(el, st);
    if (role) return control(el, role, s, inner);
    if (tag === 'br') return flush(s);
    if (tag === 'img') {
      const alt = norm(el.getAttribute('alt'));
      if (alt && inner.visible && !ctx.mute) s.buf += ` (image ${quote(alt)}) `;
      return;
    }
    if (LEAF.has(tag)) return;
    // The control's own line carries the label's text.
    if (tag === 'label' && el.control) inner.mute = true;
    const level = headingLevel(el);
    if (level || tag === 'li') {
      flush(s);
      const outer = s.indent;
      let marker = '#'.repeat(level) + ' ';
      if (!level) marker = el.parentElement?.localName === 'ol' ? `${ordinal(el)}. ` : '- ';
      s.pending = (s.pending ?? outer) + marker;
      if (level) s.heading++;
      else s.indent = outer + '  ';
      walkKids(el, s, inner);
      flush(s);
      if (level) s.heading--;
      s.indent = outer;
      s.pending = null;
      return;
    }
    if (tag === 'tr') return row(el, s, inner);
    if (tag === 'details' && !el.open) {
      // Closed details render only their summary (the rest is hidden by the UA shadow root).
      flush(s);
      for (const c of el.children) if (c.localName === 'summary') walkElement(c, s, inner);
      return;
    }
    const block = !(st.display.startsWith('inline') || st.display === 'contents');
    if (block) flush(s);
    walkKids(el, s, inner);
    if (block) flush(s);
  }

  // A box with nothing to show: zero size on an axis it clips.
  function clipsAll(el, st) {
    const clipX = st.overflowX === 'hidden' || st.overflowX === 'clip';
    const clipY = st.overflowY === 'hidden' || st.overflowY === 'clip';
    if (!clipX && !clipY) return false;
    const r = el.getBoundingClientRect();
    return (clipX && r.width === 0) || (clipY && r.height === 0);
  }

  function ordinal(li) {
    let n = li.parentElement.start ?? 1;
    for (let e = li.previousElementSibling; e; e = e.previousElementSibling) {
      if (e.localName === 'li') n++;
    }
    return n;
  }

  function control(el, role, s, ctx) {
    if (!ctx.visible || !hasBox(el)) return;
    flush(s);
    emit(s, describe(el, role, s.prefix), CTL);
    if (role === 'iframe') s.frames.push(refOf.get(el));
    // A container made clickable (a card, a row) may hold controls of its own: list them too.
    if (!LEAF.has(el.localName) && el.querySelector(INTERACTIVE)) {
      walkKids(el, s, { visible: ctx.visible, mute: true });
      flush(s);
    }
  }

  // A table row on one line, `| cell | cell |`, controls in a cell inline.
  function row(tr, s, ctx) {
    flush(s);
    const saved = { lines: s.lines, pending: s.pending, indent: s.indent };
    const cells = [];
    let kind = TEXT;
    for (const cell of tr.children) {
      Object.assign(s, { lines: [], pending: null, indent: '' });
      walkElement(cell, s, ctx);
      flush(s);
      cells.push(s.lines.map((l) => l.t.trim()).join(' '));
      if (s.lines.some((l) => l.kind === CTL)) kind = CTL;
    }
    Object.assign(s, saved);
    if (cells.some(Boolean)) emit(s, `| ${cells.join(' | ')} |`, kind);
  }

  // Bring the lines under maxChars, giving up plain text before headings and controls: shorten
  // long text lines, then drop text lines from the end (each run becomes "…"), then cut.
  function fit(s, maxChars) {
    const { lines } = s;
    const total = () => lines.reduce((n, l) => n + (l.drop ? 0 : l.t.length + 1), 0);
    let truncated = s.stopped || lines.some((l) => l.drop);
    let size = total();
    if (size > maxChars) {
      truncated = true;
      for (const cap of [240, 100]) {
        for (const l of lines) if (l.kind === TEXT && l.t.length > cap) l.t = clip(l.t, cap);
        size = total();
        if (size <= maxChars) break;
      }
      for (let i = lines.length - 1; i >= 0 && size > maxChars; i--) {
        if (lines[i].kind !== TEXT) continue;
        lines[i].drop = true;
        size -= lines[i].t.length + 1;
      }
    }
    const kept = [];
    let elided = false;
    for (const l of lines) {
      if (!l.drop) kept.push(l.t);
      else if (!elided) kept.push('…');
      elided = l.drop;
    }
    let text = kept.join('\n');
    if (text.length > maxChars) {
      truncated = true;
      const cut = text.lastIndexOf('\n', maxChars);
      text = text.slice(0, cut > 0 ? cut : maxChars);
    }
    const frames = s.frames.filter((ref) => text.includes(`{{frame ${ref}}}`));
    return { text, truncated, frames };
  }

  function snapshot(opts) {
    const prefix = String(opts?.prefix ?? lastPrefix);
    lastPrefix = prefix;
    const maxChars = Math.max(1, Math.floor(Number(opts?.maxChars) || 20000));
    // pending: the marker ("- ", "## ") the next line starts with, instead of the indent.
    const s = { prefix, lines: [], frames: [], buf: '', pending: null, indent: '', heading: 0,
      size: 0, limit: maxChars * WALK_FACTOR, stopped: false };
    emit(s, `page ${quote(document.title, 200)} url=${unbrace(clip(location.href, 300))}`, HEAD);
    const root = document.documentElement;
    if (root) walkKids(root, s, { visible: true, mute: false });
    flush(s);
    return fit(s, maxChars);
  }

  // --- find ----------------------------------------------------------------------------------

  // Every element in document order, open shadow trees right after their host.
  function allElements(root = document, out = []) {
    for (const el of root.querySelectorAll('*')) {
      out.push(el);
      if (el.shadowRoot) allElements(el.shadowRoot, out);
    }
    return out;
  }

  // Items whose texts equal the wanted one (case and spacing aside), and those that contain it.
  function matches(items, textsOf, wanted) {
    const needle = norm(wanted).toLowerCase();
    const [exact, partial] = [[], []];
    for (const item of needle ? items : []) {
      const texts = textsOf(item).map((t) => norm(t).toLowerCase());
      if (texts.includes(needle)) exact.push(item);
      else if (texts.some((t) => t.includes(needle))) partial.push(item);
    }
    return { exact, partial };
  }

  function pick(items, textsOf, wanted) {
    const { exact, partial } = matches(items, textsOf, wanted);
    return exact.length ? exact : partial;
  }

  const buttonValue = (el) =>
    el.localName === 'input' && BUTTON_TYPES.has(el.type) ? el.value : null;

  function byText(wanted) {
    const needle = norm(wanted).toLowerCase();
    const cache = new Map();
    const has = (el) => {
      if (!cache.has(el)) {
        cache.set(el, norm(buttonValue(el) ?? el.textContent).toLowerCase().includes(needle));
      }
      return cache.get(el);
    };
    // The innermost holders of the text (no child has all of it), so that a container never
    // matches through a child that is hidden. textContent is cheap; innerText then says what shows.
    const holders = allElements().filter((el) => !SKIP.has(el.localName) && has(el) &&
      ![...el.children, ...(el.shadowRoot?.children ?? [])].some(has) && isVisible(el));
    const found = pick(holders, (el) => [buttonValue(el) ?? el.innerText ?? el.textContent], wanted)
      .map((el) => {
        // The control the text is part of: the button around a span, a label's control.
        for (let e = el; e && e !== document.body; e = parentOf(e)) {
          if (roleOf(e)) return e;
          if (e.localName === 'label' && e.control) return e.control;
        }
        return el;
      });
    const controls = found.filter((el) => roleOf(el));
    return controls.length ? controls : found;
  }

  function byLabel(wanted) {
    const els = allElements().filter((el) => CONTROLS.has(semanticRole(el)) && isVisible(el));
    const texts = (el) => {
      const labels = el.localName === 'label' ? [el] : [...(el.labels ?? [])];
      return [accName(el, semanticRole(el)), ...labels.map(textOf)];
    };
    return pick(els, texts, wanted);
  }

  function byName(wanted) {
    const els = allElements().filter((el) => semanticRole(el) && isVisible(el));
    // The name or id attribute of a form control (labelable elements have .labels), exactly.
    const named = els.filter(
      (el) => el.labels !== undefined && (el.name === wanted || el.id === wanted));
    const { exact, partial } = matches(els, (el) => [accName(el, semanticRole(el))], wanted);
    const hits = [...named, ...exact];
    return hits.length ? hits : partial;
  }

  function byCss(selector) {
    const shadows = allElements().filter((el) => el.shadowRoot).map((el) => el.shadowRoot);
    const roots = [document, ...shadows];
    return roots.flatMap((root) => [...root.querySelectorAll(selector)]).filter(isVisible);
  }

  function candidate(el, prefix) {
    const role = roleOf(el) ?? (headingLevel(el) ? 'heading' : 'text');
    if (role === 'heading' || role === 'text') {
      const ref = assign(el, prefix);
      const name = clip(norm(el.innerText ?? el.textContent), NAME_MAX);
      return { ref, role, name, tag: el.localName, line: `[${ref}] ${role} ${quote(name)}` };
    }
    const line = describe(el, role, prefix, false);
    const name = proxied(el) ? norm(textOf(el)) : accName(el, role);
    return { ref: refOf.get(el), role, name: clip(name, NAME_MAX), tag: el.localName, line };
  }

  const FINDERS = {
    ref: (ref) => [lookup(ref)].filter((el) => el && isVisible(el)),
    text: byText,
    label: byLabel,
    placeholder: (wanted) => pick(
      allElements().filter((el) => el.hasAttribute('placeholder') && isVisible(el)),
      (el) => [el.getAttribute('placeholder')], wanted),
    name: byName,
    css: byCss,
  };
  const KINDS = Object.keys(FINDERS);

  function find(target, prefix) {
    const keys = Object.keys(target ?? {}).filter((k) => target[k] != null);
    if (keys.length !== 1 || !KINDS.includes(keys[0])) {
      const got = JSON.stringify(keys);
      return { error: `a target is exactly one of ${KINDS.join(', ')}; got ${got}` };
    }
    const [kind] = keys;
    const value = String(target[kind]);
    if (kind === 'css') {
      try {
        document.querySelector(value); // throws SyntaxError for a bad selector
      } catch (e) {
        return { error: `invalid CSS selector ${JSON.stringify(value)}: ${e.message}` };
      }
    }
    const els = FINDERS[kind](value);
    const p = String(prefix ?? lastPrefix);
    const unique = [...new Set(els)].slice(0, CANDIDATES_MAX);
    return { candidates: unique.map((el) => candidate(el, p)) };
  }

  // --- formOf --------------------------------------------------------------------------------

  function isSubmitter(el) {
    if (el.localName === 'button') return el.type === 'submit';
    return el.localName === 'input' && (el.type === 'submit' || el.type === 'image');
  }

  function formOf(ref) {
    const el = lookup(ref);
    if (!el) return { error: `no element with ref ${ref} in this document` };
    // Form controls have a form owner (which honours form="id"); other elements an ancestor.
    let form = el.localName === 'form' ? el : el.form;
    if (form === undefined) form = el.closest('form');
    if (!form) return { form: null };
    const submitter = isSubmitter(el) && el.form === form;
    const over = (attr, value) => (submitter && el.hasAttribute(attr) ? value : null);
    const action = over('formaction', el.formAction) ?? form.action;
    const method = (over('formmethod', el.formMethod) ?? form.method).toUpperCase();
    const fields = [];
    const add = (c, value) =>
      fields.push({ name: c.name, label: accName(c, nativeRole(c)), type: c.type, value });
    for (const c of form.elements) {
      const tag = c.localName;
      if (!['input', 'select', 'textarea', 'button'].includes(tag)) continue;
      if (!c.name || c.matches(':disabled')) continue;
      if (tag === 'button' || BUTTON_TYPES.has(c.type)) {
        // Only the button that submits is sent (an image button sends coordinates: left out).
        if (c === el && submitter && c.type !== 'image') add(c, c.value);
      } else if (c.type === 'checkbox' || c.type === 'radio') {
        if (c.checked) add(c, c.value);
      } else if (tag === 'select') {
        for (const o of c.selectedOptions) add(c, o.value);
      } else if (c.type === 'file') {
        add(c, [...c.files].map((f) => f.name).join(', '));
      } else {
        add(c, c.type === 'password' ? '•'.repeat(c.value.length) : c.value);
      }
    }
    return { form: { action, method, fields, submitter } };
  }

  // --- one: find exactly one element and read or set it, in one round trip -------------------
  // The tools' fast path: a read, or a select, costs one evaluate like Playwright's own call,
  // rather than a find and then the call. Anything but exactly one match returns the find's
  // answer unchanged, for the driver to report.

  function rowsOf(el) {
    const rows = el.rows ? [...el.rows] : [...el.querySelectorAll('tr')];
    return rows.map((r) => [...(r.cells ?? r.children)].map((c) => norm(c.innerText)));
  }

  function selectIn(el, wanted) {
    if (el.localName !== 'select') return { refused: 'that element is not a select' };
    if (el.matches(':disabled')) return { refused: 'the select is disabled' };
    const w = norm(wanted).toLowerCase();
    const options = [...el.options];
    const hit =
      options.find((o) => norm(o.label).toLowerCase() === w || o.value === wanted) ??
      options.find((o) => norm(o.label).toLowerCase().includes(w));
    if (!hit) return { options: options.map((o) => norm(o.label)) };
    // As a person's choice does: the option selected, then input and change.
    hit.selected = true;
    el.dispatchEvent(new Event('input', { bubbles: true, composed: true }));
    el.dispatchEvent(new Event('change', { bubbles: true }));
    return { value: norm(hit.label) };
  }

  function one(a) {
    const found = find(a.target, a.prefix);
    if (found.error || found.candidates.length !== 1) return found;
    let el = lookup(found.candidates[0].ref);
    if (!el) return found;
    if (a.op === 'text') {
      // A field's text is its value, exactly (set by typing or by script alike).
      const field = el.localName === 'input' || el.localName === 'textarea';
      return { ...found, value: field ? el.value : el.innerText ?? el.textContent ?? '' };
    }
    if (a.op === 'rows') return { ...found, value: rowsOf(el) };
    if (a.op === 'select') {
      if (el.localName === 'label' && el.control) el = el.control; // a label stands for its control
      return { ...found, ...selectIn(el, String(a.arg ?? '')) };
    }
    return { error: `unknown operation ${JSON.stringify(a.op)}` };
  }

  // The controls inside an element, each with its ref (a click on it would land on one of them).
  function controlsIn(el, prefix) {
    const p = String(prefix ?? lastPrefix);
    const found = [];
    for (const d of allElements(el)) {
      const role = roleOf(d);
      if (role && role !== 'clickable' && (CLICKS.has(role) || CONTROLS.has(role)) &&
          isVisible(d)) {
        found.push(candidate(d, p));
        if (found.length >= CANDIDATES_MAX) break;
      }
    }
    return found;
  }

  // What a click on an element would meet: the controls inside it (it would land on one of
  // them), and what covers its centre, if something else is on top there.
  function clickCheck(el, prefix) {
    const controls = controlsIn(el, prefix);
    const r = el.getBoundingClientRect();
    const [x, y] = [r.left + r.width / 2, r.top + r.height / 2];
    let covered = null;
    if (x >= 0 && y >= 0 && x < innerWidth && y < innerHeight) {
      // Asked of the element's own root: in a shadow tree, the document answers with the host.
      const root = el.getRootNode();
      const top = (root.elementFromPoint ? root : document).elementFromPoint(x, y);
      const mine = (e) => e && (e === el || el.contains(e) || (e.localName === 'label' && e.control === el));
      if (top && !mine(top) && !top.contains(el)) {
        const text = clip(norm(top.getAttribute('aria-label') || top.innerText || ''), 60);
        const id = top.id ? `#${top.id}` : (top.classList[0] ? `.${top.classList[0]}` : '');
        covered = `<${top.localName}${id}>` + (text ? ` ${JSON.stringify(text)}` : '');
      }
    }
    return { controls, covered };
  }

  return { snapshot, find, formOf, one, controlsIn, clickCheck };
})();
