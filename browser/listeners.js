// Which elements a page's scripts listen to for a person's input, noted as the page adds the
// listeners (a script cannot ask the DOM later): the snapshot lists such an element as a control
// even when nothing else marks it (no role, no pointer cursor).
//
// Installed as an init script, before any of the page's own scripts; idempotent. It wraps
// EventTarget.prototype.addEventListener and changes nothing else about it.
(() => {
  'use strict';
  if (Object.getOwnPropertyDescriptor(window, '__agentHandlers')) return;
  const INPUT = new Set(['click', 'dblclick', 'mousedown', 'mouseup', 'pointerdown', 'pointerup',
    'touchstart', 'keydown', 'keyup', 'keypress', 'dragstart', 'contextmenu']);
  const handled = new WeakSet();
  Object.defineProperty(window, '__agentHandlers', { value: handled });
  const add = EventTarget.prototype.addEventListener;
  EventTarget.prototype.addEventListener = function addEventListener(type, listener, options) {
    if (this instanceof Element && INPUT.has(type)) handled.add(this);
    return add.call(this, type, listener, options);
  };
})();
