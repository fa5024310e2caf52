// A small DOM: just what charts.js calls, to run the page's own script in Node.
global.Node = class Node {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.listeners = {};
    this.style = { setProperty() {} }; this.hidden = false; this.textContent = "";
    const classes = new Set();
    this.classList = { add: (c) => classes.add(c), toggle: (c, on) => on ? classes.add(c) : classes.delete(c) }; }
  appendChild(child) { this.children.push(child); return child; }
  replaceChildren() { this.children = []; }
  setAttribute(key, value) { this.attrs[key] = String(value); }
  getAttribute(key) { return this.attrs[key]; }
  addEventListener(kind, fn) { (this.listeners[kind] = this.listeners[kind] || []).push(fn); }
  fire(kind, event) { for (const fn of this.listeners[kind] || []) fn(event || {}); }
  getBoundingClientRect() { return { left: 0, width: 960 }; }
  all(tag) { const out = []; const walk = (n) => { if (n.tag === tag) out.push(n); n.children.forEach(walk); }; walk(this); return out; }
};
global.byId = {};
global.document = {
  readyState: "complete",
  createElement: (tag) => new Node(tag),
  createElementNS: (ns, tag) => new Node(tag),
  getElementById: (id) => byId[id] || null,
  addEventListener() {},
};
