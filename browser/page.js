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
    menuitemradio option treeitem clickable draggable`);
  const CONTROLS = words(`textbox searchbox combobox listbox checkbox radio switch slider
    spinbutton file`);
  const BUTTON_TYPES = words('submit reset button image');
  // Tags whose text a name separates with spaces (names are built without styles).
  const BLOCK_TAG = words(`address article aside blockquote dd div dl dt fieldset figcaption figure
    footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table td th tr ul`);
  // Leaves: what they contain is their value or their own document, not part of this snapshot.
  const LEAF = words('input select textarea iframe frame img svg');
  // Cursors that say "grab me" rather than "click me".
  const GRAB = words('move grab grabbing all-scroll');
  // Class words that say what kind of thing an element is, not what it does: no name in them.
  const GENERIC_CLASS = /^(?:icon|icons|colou?r|box|item|cell|fa[srlbd]?|bi|glyphicon|material-icons?|btn|button|clicked|active|selected|hover|focus|open|closed|disabled|enabled|on|off|small|large|left|right|pull-\w+|float-\w+|ui-.*|js-.*|is-.*|has-.*)$/;
  // CSS's own colours by name, the plain ones people say: the nearest names a box's colour.
  const COLOURS = [['black', 0, 0, 0], ['white', 255, 255, 255], ['grey', 128, 128, 128],
    ['silver', 192, 192, 192], ['red', 255, 0, 0], ['maroon', 128, 0, 0], ['lime', 0, 255, 0],
    ['green', 0, 128, 0], ['olive', 128, 128, 0], ['blue', 0, 0, 255], ['navy', 0, 0, 128],
    ['yellow', 255, 255, 0], ['orange', 255, 165, 0], ['purple', 128, 0, 128],
    ['magenta', 255, 0, 255], ['pink', 255, 192, 203], ['brown', 165, 42, 42],
    ['cyan', 0, 255, 255], ['teal', 0, 128, 128]];

  // How many times the page changed since the last snapshot (nodes, attributes, text), leaving
  // out the script's own marks: the snapshot says so, for telling a page that is still changing
  // (a widget loading) from one a model keeps looking at for nothing.
  let changed = 0;
  const ours = (n) => n.nodeType === Node.ELEMENT_NODE && n.hasAttribute('data-agent-marks');
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'attributes' && r.attributeName === 'data-agent-ref') continue;
      if (r.type === 'childList' && [...r.addedNodes, ...r.removedNodes].every(ours)) continue;
      if (r.target.nodeType === Node.ELEMENT_NODE && r.target.closest('[data-agent-marks]')) continue;
      changed++;
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });

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

  // Whether the page listens to this element for a person's input (listeners.js noted it, or
  // an on* property is set).
  const handles = (el) => window.__agentHandlers?.has(el) === true || el.onclick != null ||
    el.onmousedown != null || el.onpointerdown != null || el.onkeydown != null;

  // Selectors of the rules that give a cursor only on :hover (`.star:hover { cursor: pointer }`),
  // read from the page's style sheets once per call into the script.
  let hoverRules = null;
  function hoverCursors() {
    if (hoverRules) return hoverRules;
    const found = { pointer: [], grab: [] };
    const visit = (rules) => {
      for (const r of rules) {
        if (r.cssRules && !r.selectorText) visit(r.cssRules); // @media, @supports
        const cursor = r.style?.cursor;
        if (!cursor || !r.selectorText?.includes(':hover')) continue;
        const into = cursor === 'pointer' ? found.pointer : GRAB.has(cursor) ? found.grab : null;
        for (const part of r.selectorText.split(',')) {
          if (into && part.includes(':hover')) into.push(part.replace(/:hover/g, '').trim() || '*');
        }
      }
    };
    for (const sheet of document.styleSheets) {
      try {
        visit(sheet.cssRules);
      } catch {
        // a cross-origin sheet cannot be read
      }
    }
    // One selector list each, of the selectors that parse: one match per element.
    const joined = (list) => list.filter((sel) => {
      try {
        document.createDocumentFragment().querySelector(sel);
        return true;
      } catch {
        return false;
      }
    }).join(', ');
    hoverRules = { pointer: joined(found.pointer), grab: joined(found.grab) };
    return hoverRules;
  }

  const matchesAny = (el, selectors) => selectors !== '' && el.matches(selectors);

  // 'pointer', 'grab' or null: the cursor over the element, as styled or on hover.
  function cursorOf(el, style) {
    const c = (style ?? getComputedStyle(el)).cursor;
    if (c === 'pointer') return 'pointer';
    if (GRAB.has(c)) return 'grab';
    const hover = hoverCursors();
    if (matchesAny(el, hover.pointer)) return 'pointer';
    return matchesAny(el, hover.grab) ? 'grab' : null;
  }

  const classText = (el) => (typeof el.className === 'string' ? el.className : el.getAttribute('class') ?? '');

  // A role guessed from how the element is made: a slider's handle, a thing to drag.
  function guessedRole(el) {
    const cls = classText(el);
    if (/\bui-slider-handle\b|slider[-_]?(?:handle|thumb)|(?:handle|thumb)[-_]?slider/i.test(cls)) {
      return 'slider';
    }
    if (el.getAttribute('draggable') === 'true' || /\bui-(?:draggable|sortable-handle)\b/.test(cls)) {
      return 'draggable';
    }
    return null;
  }

  // Focusable by the page's choice (a tabindex), not by nature: a control made of a div.
  const focusable = (el) => el.hasAttribute('tabindex') && el.tabIndex >= 0;

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

  // The role of an element a person could use: from markup; else guessed from its class; else
  // 'clickable' when the page listens to it or made it focusable; else from its cursor.
  function roleOf(el, style) {
    const role = semanticRole(el);
    if (role || el.localName === 'label' || el === document.body) return role;
    if (el === document.documentElement || el instanceof SVGElement) return null;
    const guess = guessedRole(el);
    if (guess) return guess;
    if ((focusable(el) || handles(el)) && !delegating(el)) return 'clickable';
    const cursor = cursorOf(el, style);
    if (!cursor) return null;
    // Only the outermost element of a cursor region: its children inherit the cursor.
    const p = parentOf(el);
    if (p && p !== document.body && cursorOf(p) === cursor) return null;
    return cursor === 'grab' ? 'draggable' : 'clickable';
  }

  // A container that listens for what happens inside it (a page, a form, a menu, a list), not
  // a control: its text is longer than a name, or it holds two controls or more.
  function delegating(el) {
    if (el.firstElementChild === null) return false;
    const text = norm(el.textContent);
    if (text.length > NAME_MAX * 2) return true;
    let inside = 0;
    let only = null;
    const cursor = cursorOf(el);
    for (const d of el.querySelectorAll('*')) {
      const own = semanticRole(d) || guessedRole(d) || handles(d) ||
        (cursor === null && cursorOf(d) !== null && cursorOf(parentOf(d)) === null);
      if (own && ++inside >= 2) return true;
      if (own) only = d;
    }
    // A wrapper around one control and nothing else (a menu of one item) adds nothing to it.
    return only !== null && text !== '' && norm(only.textContent) === text;
  }

  function headingLevel(el) {
    const m = /^h([1-6])$/.exec(el.localName);
    if (m) return Number(m[1]);
    return el.getAttribute('role') === 'heading' ? Number(el.getAttribute('aria-level')) || 2 : 0;
  }

  // Text of a subtree as a name: without hidden parts, script, or the contents of controls.
  function textOf(node, all = false) {
    let out = '';
    for (const n of kids(node)) {
      if (n.nodeType === Node.TEXT_NODE) out += n.data;
      if (n.nodeType !== Node.ELEMENT_NODE || n.hidden) continue;
      const tag = n.localName;
      if (SKIP.has(tag) || n.getAttribute('aria-hidden') === 'true') continue;
      // Names come from what shows: a closed folder is not named after its hidden files.
      if (!all && !n.checkVisibility({ visibilityProperty: true }) &&
        getComputedStyle(n).display !== 'contents') continue;
      if (tag === 'img') out += ` ${n.getAttribute('alt') ?? ''} `;
      else if (tag === 'input') out += BUTTON_TYPES.has(n.type) ? ` ${n.value} ` : '';
      else if (tag !== 'select' && tag !== 'textarea') {
        out += BLOCK_TAG.has(tag) ? ` ${textOf(n, all)} ` : textOf(n, all);
      }
    }
    return out;
  }

  function accName(el, role) {
    const ids = el.getAttribute('aria-labelledby');
    if (ids) {
      const root = el.getRootNode();
      const parts = ids.split(/\s+/).map((id) => root.getElementById?.(id)).filter(Boolean);
      // What aria-labelledby points at names the element even when it is hidden.
      const t = norm(parts.map((p) => textOf(p, true)).join(' '));
      if (t) return t;
    }
    const aria = norm(el.getAttribute('aria-label'));
    if (aria) return aria;
    if (el.labels?.length) {
      const t = norm([...el.labels].map((l) => textOf(l)).join(' '));
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

  // An element's checked and expanded state as ARIA words ('true', 'false', 'mixed'; null when
  // it has none), and whether it is disabled: read alike by the snapshot and by waits.
  function checkedOf(el) {
    const checkable = el.localName === 'input' && (el.type === 'checkbox' || el.type === 'radio');
    if (checkable) return el.indeterminate ? 'mixed' : `${el.checked}`;
    return el.getAttribute('aria-checked');
  }
  const expandedOf = (el) =>
    el.localName === 'summary' ? `${el.parentElement?.open}` : el.getAttribute('aria-expanded');
  const disabledNow = (el) => el.matches(':disabled') || el.getAttribute('aria-disabled') === 'true';

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
    const checked = checkedOf(el);
    const expanded = expandedOf(el);
    const states = {
      checked: checked === 'true',
      mixed: checked === 'mixed',
      selected: attr('aria-selected') === 'true',
      pressed: attr('aria-pressed') === 'true',
      'has-popup': ['true', 'menu', 'listbox', 'tree', 'grid', 'dialog'].includes(attr('aria-haspopup')),
      expanded: expanded === 'true',
      collapsed: expanded === 'false',
      disabled: disabledNow(el),
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

  // A name for a control that has none (an icon): from its class ("trash", "fa-star"), else
  // from the file name of its image ("reply.png"), its own or a child's.
  function guessName(el) {
    const near = [el, ...el.querySelectorAll('*')].slice(0, 8);
    for (const e of near) {
      for (const c of classText(e).split(/\s+/)) {
        const word = c.replace(/^(?:fa|bi|icon|glyphicon|mdi|ion|ui-icon)-/, '');
        if (word && !GENERIC_CLASS.test(word) && /^[a-z][\w-]*$/i.test(word)) return word;
      }
    }
    for (const e of near) {
      const st = getComputedStyle(e);
      const url = /url\(["']?([^"')]*)/.exec(`${st.content} ${st.backgroundImage}`)?.[1] ??
        (e.localName === 'img' ? e.getAttribute('src') : null);
      const file = url?.split(/[?#]/)[0].split('/').pop()?.replace(/\.\w+$/, '');
      if (file) return file.replace(/[-_](?:hover|active|icon|\d+x?\d*)$/i, '');
    }
    return '';
  }

  // An icon: an empty element that shows an image (a background, a CSS content url, an icon
  // font's class); its guessed name, or null.
  function iconOf(el, st) {
    if (el.firstElementChild || norm(el.textContent) || LEAF.has(el.localName) || !hasBox(el)) {
      return null;
    }
    const style = st ?? getComputedStyle(el);
    const image = style.backgroundImage !== 'none' || /url\(/.test(style.content);
    return image ? guessName(el) || 'icon' : null;
  }

  // The icon inside a control that has text of its own (a menu item's), or null.
  function iconIn(el) {
    const inside = el.querySelectorAll('*');
    for (let i = 0; i < inside.length && i < 20; i++) {
      const name = iconOf(inside[i]);
      if (name) return name;
    }
    return null;
  }

  // Where an element is, in CSS pixels of its frame's viewport: `box=x,y,width,height`.
  function boxOf(el) {
    const r = el.getBoundingClientRect();
    return `box=${[r.left, r.top, r.width, r.height].map(Math.round).join(',')}`;
  }

  // How far along its track a guessed slider's handle sits (its parent is the track).
  function along(el) {
    const track = parentOf(el)?.getBoundingClientRect();
    const r = el.getBoundingClientRect();
    if (!track) return null;
    const [pos, len] = track.width >= track.height ?
      [r.left + r.width / 2 - track.left, track.width] :
      [track.bottom - (r.top + r.height / 2), track.height];
    return len > 0 ? `at=${Math.round((100 * pos) / len)}%` : null;
  }

  // One line for an element with a role: `[e3] button "Sign in" disabled`.
  function describe(el, role, prefix, placeholder = true, boxes = false) {
    const ref = assign(el, prefix);
    // A label standing in for its hidden control has the control's state.
    const stand = proxied(el);
    let name = stand ? norm(textOf(el)) : accName(el, role);
    const guessed = !name && CLICKS.has(role) ? guessName(el) : '';
    name ||= guessed;
    const parts = [`[${ref}]`, role];
    if (name) parts.push(quote(name));
    if (guessed) parts.push('(name guessed)');
    // A control with no words of its own (a coloured square to click) is told by its colour.
    if ((role === 'clickable' || role === 'draggable') && !norm(el.textContent)) {
      const colour = ownColour(el);
      if (colour) parts.push(`colour=${colour.replace(' ', '(')})`);
    }
    else if (name && !LEAF.has(el.localName)) {
      const icon = !delegating(el) && iconIn(el);
      if (icon) parts.push(`icon=${quote(icon)}`);
    }
    if (role === 'iframe') {
      if (placeholder) parts.push(`{{frame ${ref}}}`);
    } else {
      parts.push(...facts(stand ?? el, role));
      if (role === 'slider' && !semanticRole(el)) parts.push(along(el) ?? '');
    }
    if (boxes) parts.push(boxOf(el));
    return parts.filter(Boolean).join(' ');
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
    const icon = inner.visible && !ctx.mute && iconOf(el, st);
    if (icon) {
      s.buf += ` (icon ${quote(icon)}) `;
      return;
    }
    const colour = inner.visible && graphic(el, st);
    if (colour) return box(el, colour, s);
    // A canvas that lets the pointer through is a layer over the page (drawn clicks), not a
    // drawing to point at.
    if (tag === 'canvas' && st.pointerEvents === 'none') return;
    if ((tag === 'svg' || tag === 'canvas') && inner.visible && !ctx.mute) return drawing(el, s);
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
    emit(s, describe(el, role, s.prefix, true, s.boxes), CTL);
    if (role === 'iframe') s.frames.push(refOf.get(el));
    // A control made of others (a card, a row, a folder of a tree) lists them too, each with
    // its own ref, indented under it; its text is already its name.
    if (!LEAF.has(el.localName)) {
      const outer = s.indent;
      s.indent = outer + '  ';
      walkKids(el, s, { visible: ctx.visible, mute: true });
      flush(s);
      s.indent = outer;
    }
  }

  // A graphic with nothing to read (a coloured box or square, an empty cell): listed as a box
  // with its colour, so that it can be named by ref. Null for anything else.
  function graphic(el, st) {
    if (el.firstElementChild || norm(el.textContent) || LEAF.has(el.localName)) return null;
    const r = el.getBoundingClientRect();
    // A mark or a square, not a panel or a page's background.
    if (Math.min(r.width, r.height) < 8 || Math.max(r.width, r.height) > 120) return null;
    return ownColour(el, st);
  }

  // An element's background colour when it is its own (not transparent, not its parent's).
  function ownColour(el, st) {
    const colour = colourOf((st ?? getComputedStyle(el)).backgroundColor);
    const p = parentOf(el);
    if (!colour || (p && colourOf(getComputedStyle(p).backgroundColor) === colour)) return null;
    return colour;
  }

  // The nearest plain colour name of a CSS colour, with its hex; null when transparent.
  function colourOf(css) {
    const m = /rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*([\d.]+))?/.exec(css);
    if (!m || (m[4] !== undefined && Number(m[4]) < 0.1)) return null;
    const [r, g, b] = [m[1], m[2], m[3]].map(Number);
    let best = COLOURS[0];
    const far = ([, R, G, B]) => (r - R) ** 2 + (g - G) ** 2 + (b - B) ** 2;
    for (const c of COLOURS) if (far(c) < far(best)) best = c;
    const hex = [r, g, b].map((v) => v.toString(16).padStart(2, '0')).join('');
    return `${best[0]} #${hex}`;
  }

  const SHAPES = words('rect circle ellipse polygon polyline path line');
  const SHAPES_MAX = 40;

  // A drawing, for a model that cannot see it: an SVG's shapes with their colour, size and
  // place (CSS pixels from the drawing's top left) and its words; a canvas's size. Each shape
  // has a ref, to be hovered or clicked like any element.
  function drawing(el, s) {
    flush(s);
    const r = el.getBoundingClientRect();
    const size = `${Math.round(r.width)}x${Math.round(r.height)}`;
    const head = [`[${assign(el, s.prefix)}]`, el.localName === 'svg' ? 'drawing' : 'canvas', size];
    const label = norm(el.getAttribute('aria-label') || el.querySelector(':scope > title')?.textContent);
    if (label) head.splice(2, 0, quote(label));
    if (s.boxes) head.push(boxOf(el));
    emit(s, head.join(' '), CTL);
    if (el.localName !== 'svg') return;
    const outer = s.indent;
    s.indent = outer + '  ';
    let shown = 0;
    const parts = [...el.querySelectorAll('*')].filter((p) =>
      (SHAPES.has(p.localName) || p.localName === 'text') && hasBox(p) &&
      p.checkVisibility({ visibilityProperty: true }));
    for (const p of parts) {
      if (shown++ >= SHAPES_MAX) {
        emit(s, `…(${parts.length - SHAPES_MAX} more shapes)`, TEXT);
        break;
      }
      const b = p.getBoundingClientRect();
      const at = `at=${Math.round(b.left - r.left)},${Math.round(b.top - r.top)}`;
      const dims = `${Math.round(b.width)}x${Math.round(b.height)}`;
      if (p.localName === 'text') {
        emit(s, `[${assign(p, s.prefix)}] text ${quote(p.textContent)} ${at}`, CTL);
        continue;
      }
      const fill = colourOf(getComputedStyle(p).fill) ?? colourOf(getComputedStyle(p).stroke);
      const line = [`[${assign(p, s.prefix)}] shape ${p.localName}`];
      if (fill) line.push(`colour=${fill.replace(' ', '(')})`);
      line.push(dims, at);
      emit(s, line.join(' '), CTL);
    }
    s.indent = outer;
  }

  function box(el, colour, s) {
    flush(s);
    const [name, hex] = colour.split(' ');
    const r = el.getBoundingClientRect();
    const size = `${Math.round(r.width)}x${Math.round(r.height)}`;
    const parts = [`[${assign(el, s.prefix)}] box`, quote(name), `colour=${hex}`, size];
    if (s.boxes) parts.push(boxOf(el));
    emit(s, parts.join(' '), CTL);
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
    hoverRules = null;
    const maxChars = Math.max(1, Math.floor(Number(opts?.maxChars) || 20000));
    // pending: the marker ("- ", "## ") the next line starts with, instead of the indent.
    const s = { prefix, lines: [], frames: [], buf: '', pending: null, indent: '', heading: 0,
      size: 0, limit: maxChars * WALK_FACTOR, stopped: false, boxes: opts?.boxes === true };
    emit(s, `page ${quote(document.title, 200)} url=${unbrace(clip(location.href, 300))}`, HEAD);
    const root = document.documentElement;
    if (root) walkKids(root, s, { visible: true, mute: false });
    flush(s);
    const seen = changed;
    changed = 0;
    return { ...fit(s, maxChars), changes: seen };
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
      return [accName(el, semanticRole(el)), ...labels.map((l) => textOf(l))];
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
    hoverRules = null;
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
      // What markup or make says (a clickable by cursor or listener alone is not counted).
      const role = semanticRole(d) ?? guessedRole(d);
      if (role && role !== 'clickable' && (CLICKS.has(role) || CONTROLS.has(role)) &&
          isVisible(d)) {
        found.push(candidate(d, p));
        if (found.length >= CANDIDATES_MAX) break;
      }
    }
    return found;
  }

  // An element as a person reading its markup would name it: `<div#id>`, `<span.class>`.
  const tagOf = (el) =>
    `<${el.localName}${el.id ? `#${el.id}` : el.classList[0] ? `.${el.classList[0]}` : ''}>`;

  // What a click on an element would meet: the controls inside it (it would land on one of
  // them), and what covers its centre, if something else is on top there.
  function clickCheck(el, prefix) {
    watchPress(el);
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
        covered = tagOf(top) + (text ? ` ${JSON.stringify(text)}` : '');
      }
    }
    return { controls, covered };
  }

  // Note where the next mouse press lands: on the element (or inside it), or on something else
  // (the element moved, or changed as the pointer reached it: a hover image still loading).
  let watching = null; // stops the watch of the last click, and says where its press landed
  function watchPress(el) {
    watching?.();
    const doc = el.ownerDocument;
    const seen = { landed: null, on: '' };
    const on = (e) => {
      if (seen.landed !== null) return;
      seen.landed = e.composedPath().includes(el);
      const t = e.target;
      seen.on = t instanceof Element ? tagOf(t) : '';
    };
    doc.addEventListener('mousedown', on, { capture: true });
    watching = () => {
      doc.removeEventListener('mousedown', on, { capture: true });
      watching = null;
      return seen;
    };
  }

  // Where the press watched by the last clickCheck landed: {landed, on}; landed null if none
  // was seen (or nothing was watched).
  const pressed = () => watching?.() ?? { landed: null, on: '' };

  // --- marks: each element's ref drawn on the page, for a screenshot -------------------------

  const MARK = '#c81e3c';

  // The part of an element's box its scrolling or clipping ancestors let show; null if none.
  function shownRect(el) {
    let { left, top, right, bottom } = el.getBoundingClientRect();
    for (let a = parentOf(el); a && a !== document.documentElement; a = parentOf(a)) {
      const st = getComputedStyle(a);
      if (st.overflowX === 'visible' && st.overflowY === 'visible') continue;
      const c = a.getBoundingClientRect();
      [left, top, right, bottom] =
        [Math.max(left, c.left), Math.max(top, c.top), Math.min(right, c.right), Math.min(bottom, c.bottom)];
      if (right <= left || bottom <= top) return null;
    }
    return { left, top, width: right - left, height: bottom - top };
  }

  // Draw a frame and a ref tag on every element the last snapshot (or find) gave a ref and
  // that shows; or, with `on` false, take them away. How many it drew.
  function marks(on) {
    for (const old of document.querySelectorAll('[data-agent-marks]')) old.remove();
    if (!on) return 0;
    const layer = document.createElement('div');
    layer.setAttribute('data-agent-marks', '');
    layer.style.cssText = 'position:absolute;left:0;top:0;width:0;height:0;overflow:visible;' +
      'z-index:2147483647;pointer-events:none;';
    let drawn = 0;
    for (const [ref, weak] of byRef) {
      const el = weak.deref();
      const r = el?.isConnected && isVisible(el) ? shownRect(el) : null;
      if (!r) continue;
      const frame = document.createElement('div');
      frame.style.cssText = `position:absolute;left:${r.left + scrollX}px;top:${r.top + scrollY}px;` +
        `width:${r.width}px;height:${r.height}px;outline:2px solid ${MARK};box-sizing:border-box;`;
      const tag = document.createElement('span');
      tag.textContent = ref;
      tag.style.cssText = `position:absolute;left:-2px;top:-2px;transform:translateY(-100%);` +
        `background:${MARK};color:#fff;font:bold 11px/13px monospace;padding:0 2px;white-space:nowrap;`;
      frame.append(tag);
      layer.append(frame);
      drawn++;
    }
    document.documentElement.append(layer);
    return drawn;
  }

  // Resolves once something in `el` has changed (nodes, attributes or text) and then been still
  // for `settle` ms, or at `ms` at the latest: how many changes it saw.
  const changes = (el, ms, settle) => new Promise((resolve) => {
    let seen = 0;
    let still = null;
    const done = () => {
      observer.disconnect();
      clearTimeout(limit);
      clearTimeout(still);
      resolve(seen);
    };
    const observer = new MutationObserver((records) => {
      seen += records.length;
      clearTimeout(still);
      still = setTimeout(done, settle);
    });
    observer.observe(el, { subtree: true, childList: true, attributes: true, characterData: true });
    const limit = setTimeout(done, ms);
  });

  // States an element can be waited for, each a test.
  const checked = (el) => checkedOf(el) === 'true';
  const expanded = (el) => expandedOf(el) === 'true';
  const STATES = {
    visible: (el) => el.isConnected && isVisible(el),
    hidden: (el) => !el.isConnected || !isVisible(el),
    enabled: (el) => !disabledNow(el),
    disabled: disabledNow,
    checked,
    unchecked: (el) => !checked(el),
    expanded,
    collapsed: (el) => !expanded(el),
  };

  // Resolves true once `test()` holds (looked at on every change to the document, and every
  // 100 ms for what changes no markup: a property set by script), false at `ms`.
  const when = (test, ms) => new Promise((resolve) => {
    if (test()) return resolve(true);
    const done = (ok) => {
      observer.disconnect();
      clearInterval(poll);
      clearTimeout(limit);
      resolve(ok);
    };
    const observer = new MutationObserver(() => test() && done(true));
    observer.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    const poll = setInterval(() => test() && done(true), 100);
    const limit = setTimeout(() => done(false), ms);
  });

  // Wait until `el` is in `state` (one of STATES): true, or false at `ms`; null for no such state.
  const until = (el, state, ms) => (STATES[state] ? when(() => STATES[state](el), ms) : null);

  // Wait until `text` shows inside `el` (a region of the page, not its instructions): true, or
  // false at `ms`.
  const textIn = (el, text, ms) => {
    const wanted = norm(text).toLowerCase();
    return when(() => norm(el.innerText ?? el.textContent).toLowerCase().includes(wanted), ms);
  };

  return { snapshot, find, formOf, one, controlsIn, clickCheck, watchPress, pressed, marks,
    changes, until, textIn };
})();
