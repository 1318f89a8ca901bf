// scaler dashboard, the editing half: users and applications created and
// deleted, containers added, reweighted, moved and removed, owners, bounds,
// guard, scaling, caps and budgets set, each through the aggregator's API
// (the token, when the aggregator needs one, is kept in this browser).
// app.js calls renderEditors(view) after drawing a selection.
'use strict';

const cores = (v) => Math.round(Number(v) * 1000);

function token() {
  return localStorage.getItem('scaler-token') || '';
}

// A change through the API; the answer's error (and the field it names)
// is shown in #edit-status and thrown.
async function send(method, url, body) {
  const headers = { 'content-type': 'application/json' };
  if (token()) headers.authorization = `Bearer ${token()}`;
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const v = await r.json().catch(() => ({}));
  if (!r.ok) {
    const msg = `${method} ${url}: ${v.error || r.status}`;
    say(msg, true);
    throw new Error(msg);
  }
  say(`${method} ${url}: done`);
  return v;
}

function say(msg, bad) {
  const s = $('edit-status');
  s.textContent = msg;
  s.className = bad ? 'bad' : 'ok';
  s.dataset.count = String(Number(s.dataset.count || 0) + 1);
}

// Runs an edit, then redraws at once.
function act(fn) {
  return async (e) => {
    if (e) e.preventDefault();
    try { await fn(); } catch (_) { return; }
    await tick(true);
  };
}

function input(id, attrs) {
  return el('input', { id, ...attrs });
}

function button(id, label, cls) {
  return el('button', { id, type: 'button', class: cls || '' }, label);
}

function row(label, ...items) {
  const d = el('div', { class: 'edit-row' });
  d.append(el('label', {}, label), ...items);
  return d;
}

function select(id, options, selected) {
  const s = el('select', { id });
  for (const [value, label] of options) {
    const o = el('option', { value }, label);
    if (value === selected) o.selected = true;
    s.append(o);
  }
  return s;
}

// The forms that are always there: token, new user, new application.
function renderGlobalEditor() {
  if ($('new-user-go')) return;
  const box = $('editor');
  const tok = input('token', { type: 'password', placeholder: 'token (if the aggregator needs one)', value: token() });
  tok.addEventListener('change', () => localStorage.setItem('scaler-token', tok.value));
  box.append(
    row('token', tok),
    row('new user', input('new-user-name', { placeholder: 'name' }), input('new-user-cpu', { placeholder: 'CPU budget, cores', size: 6 }),
      input('new-user-energy', { placeholder: 'energy budget, W', size: 6 }), button('new-user-go', 'create')),
    row('new application', input('new-app-name', { placeholder: 'name' }), button('new-app-go', 'create')),
  );
  $('new-user-go').addEventListener('click', act(async () => {
    const name = $('new-user-name').value.trim();
    const cpu = $('new-user-cpu').value.trim();
    const w = $('new-user-energy').value.trim();
    await send('PUT', `/v1/users/${enc(name)}`, { cpu_budget: cpu ? cores(cpu) : null, energy_budget_w: w ? Number(w) : null });
    location.hash = `#user/${name}`;
  }));
  $('new-app-go').addEventListener('click', act(async () => {
    const name = $('new-app-name').value.trim();
    await send('PUT', `/v1/apps/${enc(name)}`, { containers: [] });
    location.hash = `#app/${name}`;
  }));
}

function appEditor(view, box) {
  const name = view.name;
  const base = `/v1/apps/${enc(name)}`;
  const users = [['', '(no owner)'], ...st.lists.users.map((u) => [u.name, u.name])];
  const members = new Set((view.containers || []).map((c) => `${c.host}/${c.name}`));
  const candidates = st.lists.containers.map((c) => `${c.host}/${c.name}`).filter((k) => !members.has(k));
  const sc = view.scaling || {};
  box.append(
    row('owner', select('app-owner', users, view.user || ''), button('app-owner-go', 'set')),
    row('add container', select('add-container', candidates.map((k) => [k, k])), input('add-weight', { value: '1', size: 3 }),
      button('add-go', 'add')),
  );
  const table = el('table', { id: 'members' });
  const others = st.lists.apps.map((a) => a.name).filter((n) => n !== name);
  for (const c of view.containers || []) {
    const key = `${c.host}/${c.name}`;
    const tr = el('tr', { 'data-container': key });
    const w = el('input', { class: 'weight', value: String((view.weights || {})[key] || 1), size: 3 });
    const mv = el('select', { class: 'mv' });
    for (const o of others) mv.append(el('option', { value: o }, o));
    const path = `${base}/containers/${enc(c.host)}/${enc(c.name)}`;
    const wGo = el('button', { type: 'button', class: 'w-go' }, 'weight');
    wGo.addEventListener('click', act(() => send('PUT', path, { weight: Number(w.value) })));
    const rm = el('button', { type: 'button', class: 'rm' }, 'remove');
    rm.addEventListener('click', act(() => send('DELETE', path)));
    const go = el('button', { type: 'button', class: 'mv-go' }, 'move to');
    go.addEventListener('click', act(async () => {
      const weight = Number(w.value) || 1;
      await send('PUT', `/v1/apps/${enc(mv.value)}/containers/${enc(c.host)}/${enc(c.name)}`, { weight });
      await send('DELETE', path);
    }));
    const td = (x) => { const d = el('td'); d.append(x); return d; };
    tr.append(el('td', {}, key), td(w), td(wGo), td(rm), td(mv), td(go));
    table.append(tr);
  }
  box.append(table);
  box.append(
    row('scale (cores)', input('sc-min', { placeholder: 'min', size: 5, value: view.scaling ? String(sc.cpu_min / 1000) : '' }),
      input('sc-max', { placeholder: 'max', size: 5, value: view.scaling ? String(sc.cpu_max / 1000) : '' }),
      el('label', {}, 'guard'), input('sc-guard', { type: 'checkbox' }),
      input('sc-headroom', { placeholder: 'headroom %', size: 5 }), input('sc-rebalance', { placeholder: 'rebalance %', size: 5 }),
      button('sc-go', 'set'), button('sc-off', 'off')),
    row('energy cap (W)', input('cap-w', { size: 6 }), button('cap-go', 'set'), button('cap-off', 'clear')),
    row('', button('app-delete', 'delete application', 'danger')),
  );
  $('sc-guard').checked = sc.guard !== false;
  $('app-owner-go').addEventListener('click', act(() => send('PUT', `${base}/user`, { user: $('app-owner').value || null })));
  $('add-go').addEventListener('click', act(() => {
    const [host, ...rest] = $('add-container').value.split('/');
    return send('PUT', `${base}/containers/${enc(host)}/${enc(rest.join('/'))}`, { weight: Number($('add-weight').value) || 1 });
  }));
  $('sc-go').addEventListener('click', act(() => {
    const body = { cpu: { min: cores($('sc-min').value), max: cores($('sc-max').value) }, guard: $('sc-guard').checked };
    if ($('sc-headroom').value) body.headroom_percent = Number($('sc-headroom').value);
    if ($('sc-rebalance').value) body.rebalance_percent = Number($('sc-rebalance').value);
    return send('PUT', `${base}/scaling`, body);
  }));
  $('sc-off').addEventListener('click', act(() => send('DELETE', `${base}/scaling`)));
  $('cap-go').addEventListener('click', act(() => send('PUT', `${base}/energy-cap`, { watts: Number($('cap-w').value) })));
  $('cap-off').addEventListener('click', act(() => send('DELETE', `${base}/energy-cap`)));
  $('app-delete').addEventListener('click', act(async () => { await send('DELETE', base); location.hash = ''; }));
}

function containerEditor(view, box) {
  const path = `/v1/containers/${enc(view.host)}/${enc(view.name)}/resources/cpu`;
  box.append(row('CPU bounds (cores)', input('b-min', { placeholder: 'min', size: 5 }), input('b-max', { placeholder: 'max', size: 5 }),
    el('label', {}, 'guard'), input('b-guard', { type: 'checkbox' }), button('b-go', 'set')));
  $('b-guard').checked = true;
  $('b-go').addEventListener('click', act(() => {
    const body = { guard: $('b-guard').checked };
    if ($('b-min').value) body.min = cores($('b-min').value);
    if ($('b-max').value) body.max = cores($('b-max').value);
    return send('PUT', path, body);
  }));
}

function userEditor(view, box) {
  const path = `/v1/users/${enc(view.name)}`;
  box.append(
    row('budgets', input('u-cpu', { placeholder: 'CPU, cores', size: 6, value: view.cpu_budget ? String(view.cpu_budget / 1000) : '' }),
      input('u-energy', { placeholder: 'energy, W', size: 6, value: view.energy_budget_w ?? '' }), button('u-go', 'set')),
    row('', button('u-delete', 'delete user', 'danger')),
  );
  $('u-go').addEventListener('click', act(() => send('PUT', path, {
    cpu_budget: $('u-cpu').value ? cores($('u-cpu').value) : null,
    energy_budget_w: $('u-energy').value ? Number($('u-energy').value) : null,
  })));
  $('u-delete').addEventListener('click', act(async () => { await send('DELETE', path); location.hash = ''; }));
}

// The forms of the selection, rebuilt when the selection changes (not on
// every refresh: what the user is typing stays).
function renderEditors(view) {
  renderGlobalEditor();
  const box = $('entity-edit');
  const key = `${hashOf(st.sel)}|${JSON.stringify(view.containers || [])}|${JSON.stringify(view.weights || {})}|${view.user || ''}|${st.lists.apps.length}|${st.lists.users.length}`;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren();
  if (st.sel.kind === 'app') appEditor(view, box);
  else if (st.sel.kind === 'container') containerEditor(view, box);
  else if (st.sel.kind === 'user') userEditor(view, box);
}
