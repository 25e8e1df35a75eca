// The secrets page (SPEC §10). Plain script, no framework, no build step.
//
// What it holds: only what GET /api/secrets shows (redacted values,
// fingerprints, sources) and what the user types into the value fields.
// A typed value leaves in one PUT and the field is emptied once the host
// took it; nothing is ever read back, put in a URL or in storage. Every
// text from the host goes into the page through textContent.
'use strict';

(() => {
  const TOKEN_KEY = 'milady.apiToken';
  const SECRETS_PLUGIN = '@milady/plugin-secrets';
  const $ = (id) => document.getElementById(id);

  /** An element with attributes (booleans as properties) and children. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) {
        if (value === undefined || value === null) continue;
        if (name === 'text') e.textContent = value;
        else if (typeof value === 'boolean') e[name] = value;
        else e.setAttribute(name, value);
      }
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  /** Text for screen readers only. */
  const hiddenText = (text) => el('span', { class: 'vh', text });

  const state = {
    etag: null,
    secrets: {}, // key -> info, as the last GET showed them
    rows: new Map(), // key -> the row's elements
    edits: new Set(), // keys whose field holds a typed value
    clears: new Set(), // keys to clear on save
    warnings: new Map(), // key -> the host's warning from the last save
    errors: new Map(), // key -> why the last save refused it
    saving: false,
    rendered: false,
    seq: 0,
  };

  class AuthNeeded extends Error {}

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return '';
    }
  }

  /** One request to the host's API; a 401 asks for the token. */
  async function api(method, path, body, extraHeaders) {
    const headers = { Accept: 'application/json' };
    const token = storedToken();
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    Object.assign(headers, extraHeaders || {});
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
    let json = null;
    try {
      json = await resp.json();
    } catch {
      json = null;
    }
    if (resp.status === 401) {
      if (token) {
        try {
          sessionStorage.removeItem(TOKEN_KEY);
        } catch {
          // nothing stored, nothing to remove
        }
      }
      askToken(token ? 'The host refused that token. Enter the current one.' : '');
      throw new AuthNeeded();
    }
    return { status: resp.status, etag: resp.headers.get('ETag'), body: json };
  }

  function errorText(r) {
    if (r.body && typeof r.body.error === 'string') return r.body.error;
    return 'the host answered ' + r.status;
  }

  // ---- the token -------------------------------------------------------

  function askToken(message) {
    $('token-error').textContent = message || '';
    $('token-panel').hidden = false;
    $('secrets-form').hidden = true;
    // Its target is hidden until the token is known.
    document.querySelector('.skip').hidden = true;
    $('summary').textContent = 'This host needs its API token.';
    document.body.dataset.state = 'token';
    $('token-input').focus();
  }

  function submitToken(ev) {
    ev.preventDefault();
    const input = $('token-input');
    const token = input.value.trim();
    if (!token) {
      $('token-error').textContent = 'Enter the API token.';
      input.focus();
      return;
    }
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      $('token-error').textContent = 'This browser refuses session storage; the page cannot keep the token.';
      return;
    }
    input.value = '';
    $('token-error').textContent = '';
    $('token-panel').hidden = true;
    load().then(() => $('search').focus());
  }

  // ---- loading and rendering ------------------------------------------

  async function load() {
    let r;
    try {
      r = await api('GET', '/api/secrets');
    } catch (e) {
      if (!(e instanceof AuthNeeded)) showLoadError('The host did not answer (' + e.message + ').');
      return false;
    }
    if (r.status !== 200 || !r.body || typeof r.body.secrets !== 'object') {
      showLoadError('The keys could not be loaded: ' + errorText(r) + '.');
      return false;
    }
    if (!state.rendered) performance.mark('secrets-first-data');
    $('load-error').hidden = true;
    state.etag = r.etag;
    state.secrets = r.body.secrets;
    render(r.body);
    if (!state.rendered) performance.mark('secrets-first-dom');
    $('token-panel').hidden = true;
    $('secrets-form').hidden = false;
    document.querySelector('.skip').hidden = false;
    document.body.dataset.state = 'ready';
    if (!state.rendered) {
      state.rendered = true;
      // After the first frame that shows the list: how long a user waited.
      requestAnimationFrame(() =>
        setTimeout(() => {
          performance.mark('secrets-first-render');
          document.body.dataset.rendered = 'true';
        }, 0),
      );
    }
    return true;
  }

  function showLoadError(text) {
    const p = $('load-error');
    p.textContent = text;
    p.hidden = false;
    document.body.dataset.state = 'error';
  }

  /** The plugin a key is grouped under, and its name. */
  function owner(info) {
    const ref = (info.usedBy || []).find((u) => u.id === info.pluginId);
    return { id: info.pluginId, name: ref ? ref.name : info.pluginId, enabled: !!info.pluginEnabled };
  }

  function render(body) {
    const stale = $('stale');
    if (body.stale && typeof body.stale === 'object') {
      stale.textContent =
        'Shown from this host\'s copy: the secret store has not answered for ' +
        body.stale.seconds + ' s (' + body.stale.reason + '). Saving waits until it answers.';
      stale.hidden = false;
    } else {
      stale.hidden = true;
    }

    const groups = new Map();
    for (const [key, info] of Object.entries(state.secrets)) {
      const o = owner(info);
      let g = groups.get(o.id);
      if (!g) {
        g = { ...o, keys: [] };
        groups.set(o.id, g);
      }
      g.keys.push(key);
    }
    const ordered = [...groups.values()].sort(
      (a, b) => (b.enabled - a.enabled) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id),
    );

    const fragment = document.createDocumentFragment();
    let n = 0;
    for (const g of ordered) {
      n += 1;
      const headingId = 'g' + n;
      const section = el('section', { class: 'group', 'aria-labelledby': headingId });
      const heading = el('h2', { id: headingId }, g.name);
      heading.append(
        ' ',
        el('span', { class: g.enabled ? 'badge on' : 'badge off', text: g.enabled ? 'enabled' : 'disabled' }),
      );
      section.append(heading, el('p', { class: 'plugin-id', text: g.id }));
      const list = el('ul', { class: 'keys' });
      g.keys.sort();
      for (const key of g.keys) {
        let row = state.rows.get(key);
        if (!row) {
          row = createRow(key);
          state.rows.set(key, row);
        }
        fill(row, state.secrets[key]);
        list.append(row.li);
      }
      section.append(list);
      section.group = g;
      fragment.append(section);
    }
    // Keys no plugin declares any more.
    for (const key of [...state.rows.keys()]) {
      if (!(key in state.secrets)) {
        state.rows.delete(key);
        state.edits.delete(key);
        state.clears.delete(key);
      }
    }
    $('keys').replaceChildren(fragment);

    const keys = Object.values(state.secrets);
    const set = keys.filter((i) => i.set).length;
    const enabled = ordered.filter((g) => g.enabled).length;
    $('summary').textContent =
      `${keys.length} keys, ${set} set, across ${ordered.length} plugins (${enabled} enabled). ` +
      'Values are shown redacted; type a new value to replace one.';
    applyFilter();
    updatePending();
  }

  const SOURCES = {
    process: 'process environment (at start-up)',
    config: 'config file',
    api: 'saved here or through the API',
  };

  function createRow(key) {
    state.seq += 1;
    const id = 'k' + state.seq;
    const r = { key, id };
    r.li = el('li', { class: 'key', 'data-key': key });
    r.state = el('span', { class: 'badge', id: id + '-state' });
    r.required = el('span', { class: 'badge req', text: 'required', hidden: true });
    const head = el('div', { class: 'key-head' }, el('h3', { class: 'key-name', id: id + '-name', text: key }), r.state, r.required);
    r.desc = el('p', { class: 'desc' });

    const item = (label, dd) => el('div', null, el('dt', { text: label }), dd);
    r.value = el('dd', { class: 'value' });
    r.source = el('dd');
    r.fingerprint = el('dd', { class: 'mono' });
    r.updated = el('dd');
    r.encrypted = el('dd');
    r.usedBy = el('dd');
    const meta = el(
      'dl',
      { class: 'meta' },
      item('Value', r.value),
      item('Source', r.source),
      item('Fingerprint', r.fingerprint),
      item('Updated', r.updated),
      item('Encrypted', r.encrypted),
      item('Used by', r.usedBy),
    );
    r.note = el('p', { class: 'note', id: id + '-note', hidden: true });
    r.warning = el('p', { class: 'warning', id: id + '-warning', hidden: true });
    r.error = el('p', { class: 'error', id: id + '-error', hidden: true });

    r.input = el('input', {
      id: id + '-value',
      class: 'value-input',
      type: 'password',
      autocomplete: 'off',
      spellcheck: 'false',
      autocapitalize: 'off',
      'aria-describedby': `${id}-state ${id}-note ${id}-warning ${id}-error`,
    });
    r.input.addEventListener('input', () => onInput(r));
    const label = el('label', { for: id + '-value' }, 'New value', hiddenText(' for ' + key));
    r.reveal = el('button', { type: 'button', class: 'reveal', 'aria-pressed': 'false', 'aria-controls': id + '-value' }, 'Show', hiddenText(' what you typed for ' + key));
    r.reveal.addEventListener('click', () => toggleReveal(r));
    r.clear = el('button', { type: 'button', class: 'clear', 'aria-pressed': 'false' }, 'Clear', hiddenText(' ' + key));
    r.clear.addEventListener('click', () => toggleClear(r));
    r.historyButton = el('button', { type: 'button', class: 'history', 'aria-expanded': 'false', 'aria-controls': id + '-history' }, 'History', hiddenText(' of ' + key));
    r.historyButton.addEventListener('click', () => toggleHistory(r));
    r.history = el('div', { class: 'audit', id: id + '-history', hidden: true });
    const edit = el('div', { class: 'edit' }, label, el('div', { class: 'row' }, r.input, r.reveal), el('div', { class: 'row' }, r.clear, r.historyButton));

    r.li.append(el('div', { class: 'info' }, head, r.desc, meta, r.note, r.warning, r.error), edit, r.history);
    return r;
  }

  function fill(r, info) {
    r.info = info;
    const unreadable = typeof info.unreadable === 'string';
    r.state.textContent = info.set ? 'Set' : unreadable ? 'Unreadable' : 'Not set';
    r.state.className = 'badge ' + (info.set ? 'set' : unreadable ? 'bad' : 'unset');
    r.required.hidden = !info.required;
    r.desc.textContent = info.description || '';
    r.desc.hidden = !info.description;
    r.value.textContent = info.set ? info.value : 'not set';
    r.source.textContent = info.source ? SOURCES[info.source] || info.source : '—';
    r.fingerprint.textContent = info.fingerprint || '—';
    if (info.updatedAt) {
      const when = new Date(info.updatedAt);
      r.updated.replaceChildren(
        el('time', { datetime: info.updatedAt, text: isNaN(when) ? info.updatedAt : when.toLocaleString() }),
      );
    } else {
      r.updated.textContent = info.set ? 'unknown' : '—';
    }
    r.encrypted.textContent = info.encrypted
      ? 'yes, at rest in the config file'
      : !info.set
        ? '—'
        : info.source === 'process'
          ? 'no (held in the process environment)'
          : 'no, plaintext at rest';
    r.usedBy.replaceChildren(
      ...(info.usedBy || []).flatMap((u, i) => [
        i ? ', ' : '',
        el('span', { class: u.enabled ? 'uses on' : 'uses', title: u.id, text: u.name + (u.enabled ? '' : ' (disabled)') }),
      ]),
    );

    let note = '';
    if (unreadable) {
      note = 'The stored value cannot be read: ' + info.unreadable + '. Saving a new value replaces it.';
    } else if (info.overriddenByProcess) {
      note = 'Precedence: the process environment sets this key over the stored value. The process value is the one in use, and it wins again after a restart, whatever you save here.';
    } else if (info.source === 'process') {
      note = 'Precedence: this value comes from the process environment at start-up. A value saved here is used until the next restart; then the process environment wins again.';
    }
    r.note.textContent = note;
    r.note.hidden = !note;

    const warning = state.warnings.get(r.key);
    r.warning.textContent = warning ? 'Provider check: ' + warning : '';
    r.warning.hidden = !warning;
    const error = state.errors.get(r.key);
    r.error.textContent = error ? 'Not saved: ' + error : '';
    r.error.hidden = !error;

    r.input.placeholder = info.set ? info.value : 'not set';
    const clearing = state.clears.has(r.key);
    r.clear.disabled = !info.set && !unreadable && !clearing;
    r.li.classList.toggle('edited', state.edits.has(r.key));
    r.li.classList.toggle('clearing', clearing);
    r.li.classList.toggle('has-error', !!error);
    r.search = [
      r.key,
      info.description || '',
      ...(info.usedBy || []).flatMap((u) => [u.id, u.name]),
    ]
      .join(' ')
      .toLowerCase();
  }

  // ---- search -----------------------------------------------------------

  function applyFilter() {
    const terms = $('search').value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    let total = 0;
    for (const section of $('keys').children) {
      let any = false;
      for (const li of section.querySelector('ul').children) {
        const r = state.rows.get(li.dataset.key);
        const group = section.group;
        const text = r.search + ' ' + group.name.toLowerCase() + ' ' + group.id.toLowerCase();
        const match = terms.every((t) => text.includes(t));
        li.hidden = !match;
        total += 1;
        if (match) {
          shown += 1;
          any = true;
        }
      }
      section.hidden = !any;
    }
    $('count').textContent = terms.length
      ? `Showing ${shown} of ${total} keys.`
      : `Showing all ${total} keys.`;
  }

  // ---- editing ------------------------------------------------------------

  function onInput(r) {
    if (r.input.value !== '') {
      state.edits.add(r.key);
      if (state.clears.delete(r.key)) setClear(r, false);
    } else {
      state.edits.delete(r.key);
    }
    state.errors.delete(r.key);
    r.error.hidden = true;
    r.li.classList.remove('has-error');
    r.li.classList.toggle('edited', state.edits.has(r.key));
    updatePending();
  }

  function toggleReveal(r) {
    const show = r.input.type === 'password';
    r.input.type = show ? 'text' : 'password';
    r.reveal.setAttribute('aria-pressed', String(show));
    r.reveal.firstChild.textContent = show ? 'Hide' : 'Show';
  }

  function setClear(r, on) {
    r.clear.setAttribute('aria-pressed', String(on));
    r.clear.firstChild.textContent = on ? 'Keep' : 'Clear';
    r.li.classList.toggle('clearing', on);
    r.state.textContent = on ? 'Will be cleared' : r.info.set ? 'Set' : 'Not set';
  }

  function toggleClear(r) {
    const on = !state.clears.has(r.key);
    if (on) {
      state.clears.add(r.key);
      state.edits.delete(r.key);
      r.input.value = '';
      r.li.classList.remove('edited');
    } else {
      state.clears.delete(r.key);
    }
    setClear(r, on);
    updatePending();
  }

  function updatePending() {
    const keys = [...state.edits, ...state.clears].sort();
    const p = $('pending');
    if (keys.length === 0) {
      p.textContent = 'No unsaved changes';
    } else {
      const names = keys.slice(0, 4).join(', ') + (keys.length > 4 ? ` and ${keys.length - 4} more` : '');
      p.textContent = `${keys.length} unsaved ${keys.length === 1 ? 'change' : 'changes'}: ${names}`;
    }
    $('save').disabled = keys.length === 0 || state.saving;
    $('discard').disabled = keys.length === 0 || state.saving;
  }

  function discard() {
    for (const key of [...state.edits, ...state.clears]) {
      const r = state.rows.get(key);
      if (!r) continue;
      r.input.value = '';
      r.li.classList.remove('edited');
      if (state.clears.has(key)) {
        state.clears.delete(key);
        setClear(r, false);
      }
    }
    state.edits.clear();
    state.clears.clear();
    updatePending();
  }

  // ---- saving -------------------------------------------------------------

  async function save(ev) {
    ev.preventDefault();
    if (state.saving) return;
    $('save-error').textContent = '';
    const secrets = {};
    let refused = 0;
    for (const key of state.edits) {
      const r = state.rows.get(key);
      const value = r.input.value;
      if (value === '') continue;
      // The masked placeholder must never become the secret.
      if (r.info.set && value === r.info.value) {
        state.errors.set(key, 'that is the redacted value shown here, not the secret. Type the real value, or empty the field to keep the key as it is.');
        fill(r, r.info);
        refused += 1;
        continue;
      }
      secrets[key] = value;
    }
    for (const key of state.clears) secrets[key] = '';
    if (refused) {
      $('save-error').textContent = 'Nothing was saved: fix the fields marked "Not saved".';
      return;
    }
    if (Object.keys(secrets).length === 0) return;

    state.saving = true;
    updatePending();
    document.body.dataset.state = 'saving';
    $('pending').textContent = 'Saving…';
    let r;
    try {
      r = await api('PUT', '/api/secrets', { secrets }, state.etag ? { 'If-Match': state.etag } : undefined);
    } catch (e) {
      state.saving = false;
      updatePending();
      if (!(e instanceof AuthNeeded)) {
        $('save-error').textContent = 'The host did not answer; nothing is known to be saved (' + e.message + ').';
        document.body.dataset.state = 'error';
      }
      return;
    }
    const sent = Object.keys(secrets);
    if (r.status === 200) {
      for (const key of sent) {
        const row = state.rows.get(key);
        state.edits.delete(key);
        state.clears.delete(key);
        state.errors.delete(key);
        state.warnings.delete(key);
        if (row) {
          row.input.value = '';
          if (row.input.type !== 'password') toggleReveal(row);
          setClear(row, false);
          row.li.classList.remove('edited');
        }
      }
      for (const [key, message] of Object.entries((r.body && r.body.warnings) || {})) {
        state.warnings.set(key, message);
      }
      $('conflict').hidden = true;
      await load();
      state.saving = false;
      updatePending();
      showResult(r.body || {});
      document.body.dataset.state = 'saved';
      return;
    }
    state.saving = false;
    updatePending();
    if (r.status === 412) {
      await showConflict();
      return;
    }
    if (r.status === 400 && r.body && r.body.rejected) {
      for (const [key, why] of Object.entries(r.body.rejected)) {
        state.errors.set(key, why);
        const row = state.rows.get(key);
        if (row) fill(row, row.info);
      }
    }
    $('save-error').textContent = 'Nothing was saved: ' + errorText(r) + '.';
    document.body.dataset.state = 'error';
  }

  function pluginName(id) {
    for (const info of Object.values(state.secrets)) {
      const ref = (info.usedBy || []).find((u) => u.id === id);
      if (ref) return ref.name;
    }
    return id;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? '' : 's'}`;
  }

  function showResult(result) {
    const updated = result.updated || [];
    const cleared = result.cleared || [];
    const parts = [];
    if (updated.length) parts.push(`Set ${plural(updated.length, 'key')}: ${updated.join(', ')}.`);
    if (cleared.length) parts.push(`Cleared ${plural(cleared.length, 'key')}: ${cleared.join(', ')}.`);
    $('result-text').textContent = parts.join(' ') || 'Nothing changed.';

    const plan = result.restartPlan || {};
    const live = Object.keys(plan).filter((p) => plan[p] === 'live').sort();
    const restart = Object.keys(plan).filter((p) => plan[p] !== 'live').sort();
    const box = $('plan');
    const list = (ids, mode) =>
      el('ul', { class: 'plan-list' }, ...ids.map((id) => el('li', { 'data-plugin': id, 'data-mode': mode }, pluginName(id), ' ', el('span', { class: 'plugin-id', text: id }))));
    const children = [el('h3', { text: 'Restart plan' })];
    if (!live.length && !restart.length) {
      children.push(el('p', { text: 'No enabled plugin uses these keys: nothing to restart.' }));
    }
    if (live.length) {
      children.push(el('p', { class: 'live', text: 'Took the change live, no restart needed:' }), list(live, 'live'));
    }
    if (restart.length) {
      children.push(el('p', { class: 'restart', text: 'Need a restart of the agent to use the change:' }), list(restart, 'restart'));
    }
    box.replaceChildren(...children);

    const warnings = Object.entries(result.warnings || {});
    $('warnings-title').hidden = warnings.length === 0;
    $('result-warnings').replaceChildren(
      ...warnings.map(([key, message]) => el('li', null, el('strong', { text: key }), ': ' + message)),
    );
    const panel = $('result');
    panel.hidden = false;
    $('result-title').textContent = warnings.length ? `Saved, with ${plural(warnings.length, 'warning')}` : 'Saved';
    $('result-title').focus();
  }

  // ---- conflicts ------------------------------------------------------------

  function who(entry) {
    const c = entry.client || {};
    const from = c.peer ? 'from ' + c.peer : 'by the host itself';
    const how = c.auth && c.auth !== 'none'
      ? `with a token (${c.tokenFingerprint || c.auth})`
      : 'without a token';
    const through = entry.plugin && entry.plugin !== SECRETS_PLUGIN ? ` through ${entry.plugin}` : '';
    return `${from}, ${how}${through}`;
  }

  function when(time) {
    const d = new Date(time);
    return isNaN(d) ? time : d.toLocaleString();
  }

  async function showConflict() {
    const items = [];
    try {
      const fresh = await api('GET', '/api/secrets');
      const now = (fresh.body && fresh.body.secrets) || {};
      const changed = Object.keys(now).filter((k) => {
        const a = state.secrets[k];
        const b = now[k];
        return !a || a.set !== b.set || a.fingerprint !== b.fingerprint || a.updatedAt !== b.updatedAt;
      });
      const audit = await api('GET', '/api/secrets/audit?limit=200');
      const entries = (audit.status === 200 && audit.body && audit.body.entries) || [];
      for (const key of changed.sort()) {
        const entry = entries.find(
          (e) => e.action === 'env.update' && e.outcome === 'applied' && (e.keys || []).some((k) => k.key === key),
        );
        const op = entry && entry.keys.find((k) => k.key === key);
        const what = now[key].set ? 'was set' : 'was cleared';
        const li = el('li', { 'data-key': key }, el('strong', { text: key }), ' ' + what);
        if (op && op.fingerprint) li.append(' (fingerprint ', el('code', { text: op.fingerprint }), ')');
        if (entry) li.append(` at ${when(entry.time)}, ${who(entry)}.`);
        else li.append('.');
        items.push(li);
      }
      if (!items.length) {
        const toggle = entries.find((e) => e.action === 'plugins.toggle' && e.outcome === 'applied');
        items.push(
          el('li', {
            text: toggle
              ? `The plugins changed: the last toggle was at ${when(toggle.time)}, ${who(toggle)}.`
              : 'The plugins or their keys changed (a plugin was added, enabled or disabled).',
          }),
        );
      }
    } catch (e) {
      if (e instanceof AuthNeeded) return;
      items.push(el('li', { text: 'What changed could not be read (' + e.message + ').' }));
    }
    $('conflict-list').replaceChildren(...items);
    $('result').hidden = true;
    $('conflict').hidden = false;
    document.body.dataset.state = 'conflict';
    $('conflict-title').focus();
  }

  async function reloadAfterConflict() {
    if (await load()) {
      $('conflict').hidden = true;
      // What the user typed is still in the fields.
      for (const key of state.edits) state.errors.delete(key);
      updatePending();
      $('save').focus();
    }
  }

  // ---- the audit trail of one key ------------------------------------------------

  async function toggleHistory(r) {
    const open = r.history.hidden;
    r.historyButton.setAttribute('aria-expanded', String(open));
    if (!open) {
      r.history.hidden = true;
      return;
    }
    r.history.replaceChildren(el('p', { text: 'Loading the audit trail…' }));
    r.history.hidden = false;
    let resp;
    try {
      resp = await api('GET', '/api/secrets/audit?limit=20&key=' + encodeURIComponent(r.key));
    } catch (e) {
      if (!(e instanceof AuthNeeded)) r.history.replaceChildren(el('p', { class: 'error', text: 'The audit trail could not be read (' + e.message + ').' }));
      return;
    }
    if (resp.status !== 200 || !resp.body) {
      r.history.replaceChildren(el('p', { class: 'error', text: 'The audit trail could not be read: ' + errorText(resp) + '.' }));
      return;
    }
    const entries = resp.body.entries || [];
    const heading = el('h4', { text: `Audit trail of ${r.key}` });
    if (!entries.length) {
      r.history.replaceChildren(heading, el('p', { text: 'No change of this key is in the audit log.' }));
      return;
    }
    const list = el('ol', { class: 'audit-list' });
    for (const e of entries) {
      const k = (e.keys || []).find((x) => x.key === r.key) || {};
      const li = el('li', null, el('time', { datetime: e.time, text: when(e.time) }), ` — ${k.operation || e.action}, ${e.outcome}`);
      if (k.fingerprint) li.append(' (', el('code', { text: k.fingerprint }), ')');
      li.append(`, ${who(e)}`);
      const reasons = Object.entries(e.reasons || {});
      if (reasons.length) li.append(': ' + reasons.map(([item, why]) => `${item}: ${why}`).join('; '));
      list.append(li);
    }
    r.history.replaceChildren(heading, list);
  }

  // ---- start ----------------------------------------------------------------------

  function start() {
    $('token-form').addEventListener('submit', submitToken);
    $('secrets-form').addEventListener('submit', save);
    $('search').addEventListener('input', applyFilter);
    $('discard').addEventListener('click', discard);
    $('conflict-reload').addEventListener('click', reloadAfterConflict);
    $('conflict-dismiss').addEventListener('click', () => {
      $('conflict').hidden = true;
    });
    load();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
