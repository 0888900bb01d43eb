// Errors and status history: what went wrong, and how the connection got here.

import { byTestId, h, memo, timeEl } from './dom.js';

export function mount(root) {
  const details = byTestId(root, 'error-details');
  const history = byTestId(root, 'status-history');

  const renders = [
    memo((s) => [s.lastError, s.errors, s.status], ([lastError, errors, status]) => {
      if (!lastError && errors.length === 0) {
        details.replaceChildren(h('p', { class: 'muted', testid: 'no-errors' }, 'No errors'));
        details.dataset.hasError = 'false';
        return;
      }
      details.dataset.hasError = 'true';
      details.replaceChildren(
        lastError ? h('p', { class: `last-error${status === 'error' ? ' severe' : ''}`, testid: 'last-error' }, lastError) : null,
        h('ol', { class: 'error-list' }, ...errors.map((e) => h('li', {
          class: 'error-entry', testid: 'error-entry', dataset: { source: e.source, code: e.code ?? '' },
        },
        timeEl(e.time),
        h('span', { class: `code source-${e.source}`, testid: 'error-code', title: `source: ${e.source}` }, e.code ?? e.source),
        h('span', { class: 'error-message' }, e.message)))),
      );
    }),
    memo((s) => s.statusHistory, (entries) => {
      history.replaceChildren(...entries.slice().reverse().map((e) => h('li', {
        class: 'history-entry', testid: 'status-history-entry', dataset: { status: e.status },
      },
      timeEl(e.time),
      h('span', { class: `badge status-${e.status}` }, e.status),
      h('span', { class: 'history-detail' }, e.detail))));
    }),
  ];
  return (state) => renders.forEach((r) => r(state));
}
