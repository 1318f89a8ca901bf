// scaler dashboard: plain JavaScript, no dependencies, served by the
// aggregator. It polls the API every two seconds and draws SVG plots of
// allocated (current, blue steps) against used (usage, orange) for the
// selected host, application or container (the same picture as the
// workloads bench), power against the cap, and recent events.
'use strict';

const RES = ['energy', 'cpu', 'mem', 'disk_read', 'disk_write', 'net_rx', 'net_tx'];
const REFRESH_MS = 2000;
// Smallest top of a plot's scale: an idle resource shows as a flat zero.
const YMIN = { energy: 1000, cpu: 100, mem: 64 << 20, disk_read: 1024, disk_write: 1024, net_rx: 1024, net_tx: 1024 };
const st = { sel: null, range: '15m', lists: { apps: [], hosts: [], containers: [], users: [] }, busy: false };
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const SVGNS = 'http://www.w3.org/2000/svg';

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function fmtBytes(v, suffix) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${u[i]}${suffix}`;
}

function fmt(res, v) {
  if (v === null || v === undefined) return '–';
  switch (res) {
    case 'cpu': return v >= 1000 ? `${(v / 1000).toFixed(2)} cores` : `${Math.round(v)} m`;
    case 'mem': return fmtBytes(v, '');
    case 'energy': return `${(v / 1000).toFixed(v >= 100000 ? 0 : 1)} W`;
    default: return fmtBytes(v, '/s');
  }
}

function clock(ms, secs) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}${secs ? ':' + p(d.getSeconds()) : ''}`;
}

function parseHash() {
  const parts = decodeURIComponent(location.hash.slice(1)).split('/');
  if (parts[0] === 'app' && parts[1]) return { kind: 'app', name: parts.slice(1).join('/') };
  if (parts[0] === 'host' && parts[1]) return { kind: 'host', name: parts.slice(1).join('/') };
  if (parts[0] === 'user' && parts[1]) return { kind: 'user', name: parts.slice(1).join('/') };
  if (parts[0] === 'container' && parts[2]) return { kind: 'container', host: parts[1], name: parts.slice(2).join('/') };
  return null;
}

function hashOf(sel) {
  return sel.kind === 'container' ? `#container/${sel.host}/${sel.name}` : `#${sel.kind}/${sel.name}`;
}

function apiPath(sel) {
  if (sel.kind === 'app') return `/v1/apps/${enc(sel.name)}`;
  if (sel.kind === 'host') return `/v1/hosts/${enc(sel.name)}`;
  if (sel.kind === 'user') return `/v1/users/${enc(sel.name)}`;
  return `/v1/containers/${enc(sel.host)}/${enc(sel.name)}`;
}

function eventFilter(sel) {
  if (sel.kind === 'app') return `app=${enc(sel.name)}`;
  if (sel.kind === 'host') return `host=${enc(sel.name)}`;
  if (sel.kind === 'user') return '';
  return `host=${enc(sel.host)}&container=${enc(sel.name)}`;
}

function el(tag, attrs, text) {
  const e = tag.startsWith('svg:') ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function navItem(sel, label, status, extra) {
  const a = el('a', { href: hashOf(sel) });
  const left = el('span');
  left.append(el('span', { class: `dot ${status || ''}` }), document.createTextNode(label));
  a.append(left, el('span', { class: 'muted' }, extra || ''));
  if (st.sel && hashOf(st.sel) === hashOf(sel)) a.classList.add('sel');
  const li = el('li');
  li.append(a);
  return li;
}

function renderNav() {
  const { apps, hosts, containers, users } = st.lists;
  $('users').replaceChildren(...users.map((u) =>
    navItem({ kind: 'user', name: u.name }, u.name, '', u.cpu_budget ? `${fmt('cpu', u.cpu_used)} / ${fmt('cpu', u.cpu_budget)}` : fmt('cpu', u.cpu_used))));
  $('apps').replaceChildren(...apps.map((a) =>
    navItem({ kind: 'app', name: a.name }, a.name, a.stale ? 'stale' : '', fmt('cpu', a.cpu_mc))));
  $('hosts').replaceChildren(...hosts.map((h) =>
    navItem({ kind: 'host', name: h.name }, h.name, h.status === 'ok' ? '' : h.status, `${h.containers} c`)));
  $('containers').replaceChildren(...containers.map((c) =>
    navItem({ kind: 'container', host: c.host, name: c.name }, `${c.host}/${c.name}`, c.stale ? 'stale' : '',
      fmt('cpu', c.resources.cpu.usage))));
}

async function refreshLists() {
  const [apps, hosts, containers, health, users] = await Promise.all([
    getJSON('/v1/apps'), getJSON('/v1/hosts'), getJSON('/v1/containers'), getJSON('/healthz'), getJSON('/v1/users'),
  ]);
  st.lists = { apps: apps.apps, hosts: hosts.hosts, containers: containers.containers, users: users.users };
  if (!st.sel) {
    const first = st.lists.apps[0] ? { kind: 'app', name: st.lists.apps[0].name }
      : st.lists.hosts[0] ? { kind: 'host', name: st.lists.hosts[0].name } : null;
    if (first) { history.replaceState(null, '', hashOf(first)); st.sel = first; }
  }
  renderNav();
  const p50 = health.round_ms && health.round_ms.p50 !== null ? `${health.round_ms.p50.toFixed(1)} ms` : '–';
  $('status').textContent = `${health.hosts} hosts (${health.stale_hosts} stale) · ${health.apps} apps · ` +
    `${health.containers} containers · round p50 ${p50}`;
}

function kpi(label, value) {
  const d = el('div', { class: 'kpi' });
  d.append(el('b', {}, value), el('span', {}, label));
  return d;
}

function renderHead(view) {
  const s = st.sel;
  $('title').textContent = s.kind === 'container' ? `container ${s.host}/${s.name}` : `${s.kind} ${s.name}`;
  const badges = [];
  const stale = view.stale || (view.status && view.status !== 'ok');
  badges.push(el('span', { class: `badge ${stale ? 'stale' : ''}` }, stale ? 'stale' : 'fresh'));
  if (view.age_ms !== undefined && view.age_ms !== null) badges.push(el('span', { class: 'badge' }, `data ${(view.age_ms / 1000).toFixed(1)} s old`));
  if (view.error) badges.push(el('span', { class: 'badge bad' }, view.error));
  $('badges').replaceChildren(...badges);
  const k = [];
  const t = view.totals || view.resources || {};
  if (t.cpu) k.push(kpi('CPU used / allocated', `${fmt('cpu', t.cpu.usage)} / ${fmt('cpu', t.cpu.current)}`));
  if (t.mem) k.push(kpi('memory used / limit', `${fmt('mem', t.mem.usage)} / ${fmt('mem', t.mem.current)}`));
  const power = view.power_mw ?? (view.power ? view.power.power_mw : null);
  k.push(kpi(view.power && view.power.source ? `power (${view.power.source})` : 'power', fmt('energy', power)));
  if (view.energy_cap) {
    const e = view.energy_cap;
    k.push(kpi('cap', fmt('energy', e.cap_mw)));
    k.push(kpi('cap status', e.status.state || '–'));
    if (e.status.settled_after_ms !== null) k.push(kpi('settled after', `${(e.status.settled_after_ms / 1000).toFixed(1)} s`));
  }
  if (view.reporting !== undefined) k.push(kpi('containers reporting', `${view.reporting} / ${view.containers.length}`));
  if (view.ceiling) k.push(kpi('CPU ceiling', fmt('cpu', view.ceiling.cpu)));
  if (s.kind === 'user') {
    k.push(kpi('CPU used / allocated', `${fmt('cpu', view.cpu_used)} / ${fmt('cpu', view.cpu_allocated)}`));
    k.push(kpi('CPU budget', fmt('cpu', view.cpu_budget)));
    k.push(kpi('energy budget', view.energy_budget_w === null ? '–' : `${view.energy_budget_w} W`));
    k.push(kpi('applications', view.apps.join(', ') || '–'));
  }
  $('summary').replaceChildren(...k);
}

function plot(svg, res, data) {
  const W = svg.clientWidth || 600, H = svg.clientHeight || 180;
  const m = { l: 62, r: 10, t: 12, b: 20 };
  const pts = data.points.map((p) => ({ t: p.time_ms, step: p.step_ms, r: p.resources[res] }));
  // The window, narrowed to the data when there is less (at least a minute).
  const x1 = data.until_ms;
  const x0 = Math.min(Math.max(data.since_ms, pts.length ? pts[0].t : data.since_ms), x1 - 60e3);
  let ymax = YMIN[res] || 1;
  for (const p of pts) ymax = Math.max(ymax, p.r.usage ?? 0, p.r.current ?? 0);
  ymax *= 1.1;
  const X = (t) => m.l + ((t - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (v) => H - m.b - (v / ymax) * (H - m.t - m.b);
  const nodes = [];
  for (let i = 0; i <= 4; i++) {
    const v = (ymax / 4) * i, y = Y(v);
    nodes.push(el('svg:line', { class: 'grid', x1: m.l, x2: W - m.r, y1: y, y2: y }));
    nodes.push(el('svg:text', { x: m.l - 4, y: y + 3, 'text-anchor': 'end' }, fmt(res, v)));
  }
  const secs = x1 - x0 <= 3600e3;
  for (let i = 0; i <= 4; i++) {
    const t = x0 + ((x1 - x0) / 4) * i;
    nodes.push(el('svg:text', { x: X(t), y: H - 4, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, clock(t, secs)));
  }
  // A limit holds until it changes: drawn as steps.
  const line = (key, step) => {
    let d = '', prev = null;
    for (const p of pts) {
      const v = p.r[key];
      if (v === null || v === undefined) { prev = null; continue; }
      const gap = prev && p.t - prev.t > 3 * Math.max(p.step, 1000);
      if (prev && !gap && step) d += `L${X(p.t).toFixed(1)},${Y(prev.r[key]).toFixed(1)}`;
      d += `${!prev || gap ? 'M' : 'L'}${X(p.t).toFixed(1)},${Y(v).toFixed(1)}`;
      prev = p;
    }
    return d;
  };
  const used = line('usage', false), alloc = line('current', true);
  const usedPts = pts.filter((p) => p.r.usage !== null && p.r.usage !== undefined);
  if (usedPts.length > 1) {
    const first = usedPts[0], last = usedPts[usedPts.length - 1];
    const area = `${used}L${X(last.t).toFixed(1)},${Y(0)}L${X(first.t).toFixed(1)},${Y(0)}Z`;
    if (!used.slice(1).includes('M')) nodes.push(el('svg:path', { class: 'usage-area', d: area }));
  }
  if (alloc) nodes.push(el('svg:path', { class: res === 'energy' ? 'cap' : 'current', d: alloc }));
  if (used) nodes.push(el('svg:path', { class: 'usage', d: used }));
  const names = res === 'energy' ? [['usage', 'power'], ['cap', 'cap']] : [['usage', 'used'], ['current', 'allocated']];
  names.forEach(([cls, label], i) => {
    const x = W - m.r - 150 + i * 78;
    nodes.push(el('svg:rect', { x, y: 2, width: 10, height: 4, style: `fill: var(--${cls})` }));
    nodes.push(el('svg:text', { x: x + 14, y: 8 }, label));
  });
  if (!usedPts.length) nodes.push(el('svg:text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet'));
  svg.replaceChildren(...nodes);
  svg.dataset.points = String(usedPts.length);
  svg.dataset.lastTime = usedPts.length ? String(usedPts[usedPts.length - 1].t) : '';
}

function renderEvents(events) {
  const rows = events.slice().reverse().map((e) => {
    const tr = el('tr');
    for (const [v, cls] of [[clock(e.time_ms, true)], [e.host], [e.container], [e.resource],
      [fmt(e.resource, e.old), 'num'], [fmt(e.resource, e.new), 'num'], [`${e.source}: ${e.reason}`]]) {
      tr.append(el('td', cls ? { class: cls } : {}, v));
    }
    return tr;
  });
  if (!rows.length) {
    const tr = el('tr');
    tr.append(el('td', { colspan: 7, class: 'empty' }, 'no events in the window'));
    rows.push(tr);
  }
  $('events').tBodies[0].replaceChildren(...rows);
}

// A user's history: its applications' points summed by time.
async function userHistory(view) {
  const hs = await Promise.all(view.apps.map((a) => getJSON(`/v1/apps/${enc(a)}/history?since=${st.range}`)));
  const now = Date.now();
  const out = { since_ms: now - 15 * 60e3, until_ms: now, points: [] };
  const by = new Map();
  for (const h of hs) {
    out.since_ms = h.since_ms; out.until_ms = h.until_ms;
    for (const p of h.points) {
      const q = by.get(p.time_ms) || { time_ms: p.time_ms, step_ms: p.step_ms, resources: {} };
      for (const [r, v] of Object.entries(p.resources)) {
        const acc = q.resources[r] || { usage: null, current: null };
        for (const f of ['usage', 'current']) if (v[f] !== null && v[f] !== undefined) acc[f] = (acc[f] || 0) + v[f];
        q.resources[r] = acc;
      }
      by.set(p.time_ms, q);
    }
  }
  out.points = [...by.values()].sort((a, b) => a.time_ms - b.time_ms);
  for (const p of out.points) for (const r of RES) p.resources[r] = p.resources[r] || { usage: null, current: null };
  return out;
}

async function refreshEntity() {
  if (!st.sel) return;
  const base = apiPath(st.sel);
  const user = st.sel.kind === 'user';
  let [view, hist, ev] = await Promise.all([
    getJSON(base), user ? null : getJSON(`${base}/history?since=${st.range}`),
    getJSON(`/v1/events?limit=25&${eventFilter(st.sel)}`),
  ]);
  renderHead(view);
  renderEditors(view);
  if (user) hist = await userHistory(view);
  for (const r of RES) plot($(`plot-${r}`), r, hist);
  renderEvents(ev.events);
  $('updated').textContent = `updated ${clock(Date.now(), true)}`;
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

async function tick(force) {
  if (st.busy || (!force && !$('live').checked)) return;
  st.busy = true;
  try {
    await refreshLists();
    await refreshEntity();
  } catch (e) {
    $('updated').textContent = `error: ${e.message}`;
  } finally {
    st.busy = false;
  }
}

window.addEventListener('hashchange', () => { st.sel = parseHash(); renderNav(); tick(true); });
$('range').addEventListener('change', (e) => { st.range = e.target.value; tick(true); });
$('live').addEventListener('change', () => tick(true));
st.sel = parseHash();
tick(true);
setInterval(() => tick(false), REFRESH_MS);
