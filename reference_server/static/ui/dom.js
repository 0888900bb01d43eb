// Small DOM helpers shared by the UI modules (rendering only: no state lives here).

/** Create an element: h('li', {class: 'x', dataset: {state: 'ok'}}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'class') el.className = value;
    else if (name === 'testid') el.dataset.testid = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** The element with `data-testid=id` inside `root`; throws naming the id when missing. */
export function byTestId(root, id) {
  const el = root.querySelector(`[data-testid="${id}"]`);
  if (!el) throw new Error(`index.html has no element with data-testid="${id}"`);
  return el;
}

/** Local wall-clock time HH:MM:SS of an ISO timestamp ('' for none). */
export function formatTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** A <time> element showing HH:MM:SS with the full ISO timestamp as its datetime and title. */
export function timeEl(iso) {
  return h('time', { datetime: iso, title: iso }, formatTime(iso));
}

/**
 * Call `render(slice)` only when the JSON of `select(state)` changed since last time:
 * list re-renders stay cheap and inputs keep their focus.
 */
export function memo(select, render) {
  let last;
  return (state) => {
    const slice = select(state);
    const key = JSON.stringify(slice);
    if (key === last) return;
    last = key;
    render(slice);
  };
}

/** Replace the children of `el`. */
export function replaceChildren(el, children) {
  el.replaceChildren(...children);
}
