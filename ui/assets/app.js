// tollgate's page: reads the query API with the user's query key and draws plain SVG charts.
// Views are chosen by the URL fragment: #spend, #budgets, #latency, #calls, #sql; options follow a `?`
// (e.g. #spend?from=2026-11-01&to=2026-11-30&group=team). A `key=` option is moved into sessionStorage
// and removed from the address at once. When a view has drawn, <body data-ready="<view>"> is set.
'use strict';

const KEY = 'tollgate-query-key';
const COLORS = ['#3366cc', '#dc3912', '#ff9900', '#109618', '#990099', '#0099c6', '#dd4477', '#66aa00',
  '#b82e2e', '#316395'];
const SVG = 'http://www.w3.org/2000/svg';

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('data-')) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

// Exact USD text of an integer nano-USD amount (integers below 2^53 are exact in JS).
function usd(nanos) {
  const s = String(BigInt(Math.round(Number(nanos)))).padStart(10, '0');
  return s.slice(0, -9) + '.' + s.slice(-9);
}

function sqlString(v) { return "'" + String(v).replace(/\\/g, '\\\\').replace(/'/g, "''") + "'"; }

function today(offsetDays) {
  const d = new Date(Date.now() + (offsetDays || 0) * 86400000);
  return d.toISOString().slice(0, 10);
}

function parseFragment() {
  const raw = location.hash.replace(/^#/, '');
  const [view, query] = raw.split('?');
  const params = new URLSearchParams(query || '');
  if (params.has('key')) {
    sessionStorage.setItem(KEY, params.get('key'));
    params.delete('key');
    const rest = params.toString();
    history.replaceState(null, '', '#' + (view || 'spend') + (rest ? '?' + rest : ''));
  }
  return { view: view || 'spend', params };
}

function status(msg, isError) {
  const s = $('status');
  s.textContent = msg || '';
  s.className = isError ? 'error' : '';
  if (isError) document.body.dataset.error = msg; else delete document.body.dataset.error;
}

async function api(path, body) {
  const key = sessionStorage.getItem(KEY) || '';
  const opts = { headers: { Authorization: 'Bearer ' + key } };
  if (body !== undefined) {
    opts.method = 'POST';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v;
  try { v = JSON.parse(text); } catch (_) { v = { error: { message: text } }; }
  if (!r.ok) {
    const m = (v.error && (v.error.message || v.error)) || r.statusText;
    throw new Error(r.status === 401 || r.status === 403 ? 'The query key was refused: ' + m : m);
  }
  return v;
}

function table(id, columns, rows, foot) {
  const t = $(id);
  t.tHead.replaceChildren(el('tr', {}, ...columns.map((c) => el('th', {}, c.title))));
  t.tBodies[0].replaceChildren(...rows.map((r) => {
    const tr = el('tr', r.attrs || {});
    for (const c of columns) {
      const td = el('td', { class: c.cls || '' }, c.get(r));
      if (c.data) td.setAttribute('data-value', c.data(r));
      tr.append(td);
    }
    return tr;
  }));
  if (t.tFoot) t.tFoot.replaceChildren(...(foot ? [foot] : []));
}

// A stacked bar chart: x = categories, one series per key; values are numbers.
function stackedBars(container, xs, series, unit) {
  const w = 900, h = 260, left = 70, bottom = 40, top = 10;
  const totals = xs.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = Math.max(1e-12, ...totals);
  const bw = Math.max(4, (w - left - 10) / Math.max(1, xs.length) * 0.7);
  const step = (w - left - 10) / Math.max(1, xs.length);
  const root = svg('svg', { viewBox: `0 0 ${w} ${h + 30}`, class: 'chart-svg', role: 'img' });
  for (let g = 0; g <= 4; g++) {
    const y = top + (h - top - bottom) * (1 - g / 4);
    root.append(svg('line', { x1: left, x2: w, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' },
      (max * g / 4).toPrecision(3) + (unit || '')));
  }
  xs.forEach((x, i) => {
    let acc = 0;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      if (v <= 0) return;
      const y0 = top + (h - top - bottom) * (1 - acc / max);
      acc += v;
      const y1 = top + (h - top - bottom) * (1 - acc / max);
      const r = svg('rect', { x: left + i * step + (step - bw) / 2, y: y1, width: bw, height: Math.max(0.5, y0 - y1),
        fill: COLORS[k % COLORS.length], 'data-series': s.name, 'data-x': x });
      r.append(svg('title', {}, `${s.name} ${x}: ${v}${unit || ''}`));
      root.append(r);
    });
    root.append(svg('text', { x: left + i * step + step / 2, y: h - bottom + 16, class: 'axis', 'text-anchor': 'middle' }, x));
  });
  series.forEach((s, k) => {
    const x = left + k * 150;
    root.append(svg('rect', { x, y: h + 8, width: 12, height: 12, fill: COLORS[k % COLORS.length] }));
    root.append(svg('text', { x: x + 16, y: h + 18, class: 'legend' }, s.name || '(none)'));
  });
  container.replaceChildren(root);
}

// ---- Spend -------------------------------------------------------------------------------------
async function showSpend(params) {
  const from = params.get('from') || $('spend-from').value || today(-6);
  const to = params.get('to') || $('spend-to').value || today(0);
  const group = params.get('group') || $('spend-group').value || 'department';
  $('spend-from').value = from; $('spend-to').value = to; $('spend-group').value = group;
  const q = `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  const [byDay, totals] = await Promise.all([
    api(`/v1/showback?${q}&group_by=date,${group}`),
    api(`/v1/showback?${q}&group_by=${group}`),
  ]);
  const days = [...new Set(byDay.rows.map((r) => r.date))].sort();
  const names = [...new Set(byDay.rows.map((r) => r[group]))].sort();
  const series = names.map((n) => ({
    name: n,
    values: days.map((d) => byDay.rows.filter((r) => r.date === d && r[group] === n)
      .reduce((a, r) => a + Number(r.cost_nanousd) / 1e9, 0)),
  }));
  stackedBars($('spend-chart'), days, series, ' $');
  table('spend-table', [
    { title: group, get: (r) => r[group] || '(none)', cls: 'group' },
    { title: 'calls', get: (r) => r.calls, cls: 'num calls' },
    { title: 'input tokens', get: (r) => r.input_tokens, cls: 'num' },
    { title: 'output tokens', get: (r) => r.output_tokens, cls: 'num' },
    { title: 'cost (USD)', get: (r) => r.cost_usd, cls: 'num cost', data: (r) => r.cost_nanousd },
  ], totals.rows.map((r) => Object.assign({ attrs: { 'data-group': r[group] } }, r)),
  el('tr', { class: 'total' }, el('td', {}, 'total'), el('td', { class: 'num calls' }, totals.total.calls),
    el('td', { class: 'num' }, totals.total.input_tokens), el('td', { class: 'num' }, totals.total.output_tokens),
    el('td', { class: 'num cost' }, totals.total.cost_usd)));
}

// ---- Budgets -----------------------------------------------------------------------------------
const SCOPE_COLUMN = { key: 'api_key_id', user: 'user', project: 'project', team: 'team', department: 'department',
  tenant: 'tenant' };

async function budgetHistory(b) {
  const col = SCOPE_COLUMN[b.scope];
  if (!col || !b.match || !b.counting_from) return [];
  // By day from the window's first (UTC) day: `date` reads the same on both engines.
  const fromDay = new Date(Date.parse(b.counting_from)).toISOString().slice(0, 10);
  const sql = `SELECT date AS day, sum(cost_nanousd) AS cost FROM calls WHERE ${col} = ${sqlString(b.match)} ` +
    `AND date >= ${sqlString(fromDay)} GROUP BY date ORDER BY date`;
  const r = await api('/v1/sql', { sql });
  return r.rows.map((row) => ({ day: String(row.day), cost: Number(row.cost) }));
}

function burnDown(b, history) {
  const w = 600, h = 180, left = 90, top = 10, bottom = 24;
  const start = Date.parse(b.window_start || b.counting_from), end = Date.parse(b.resets_at);
  const now = Date.now();
  const cap = Number(b.cap_nanousd);
  const x = (t) => left + (w - left - 10) * Math.min(1, Math.max(0, (t - start) / Math.max(1, end - start)));
  const y = (rem) => top + (h - top - bottom) * (1 - Math.max(0, rem) / Math.max(1, cap));
  const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, class: 'chart-svg burn', role: 'img' });
  root.append(svg('line', { x1: left, x2: w - 10, y1: y(0), y2: y(0), class: 'grid' }));
  const capLabel = '$' + b.cap_usd.replace(/0+$/, '').replace(/\.$/, '');
  root.append(svg('text', { x: left - 4, y: y(cap) + 4, class: 'axis', 'text-anchor': 'end' }, capLabel));
  root.append(svg('text', { x: left - 4, y: y(0) + 4, class: 'axis', 'text-anchor': 'end' }, '$0'));
  let acc = 0;
  const pts = [[x(start), y(cap)]];
  for (const p of history) {
    acc += p.cost;
    pts.push([x(Math.min(now, Date.parse(p.day + 'T23:59:59Z'))), y(cap - acc)]);
  }
  pts.push([x(now), y(cap - Number(b.spent_nanousd))]);
  root.append(svg('polyline', { points: pts.map((p) => p.join(',')).join(' '), class: 'actual' }));
  const burn = Number(b.burn_rate_nanousd_per_hour);
  if (burn > 0) {
    const left_ = cap - Number(b.spent_nanousd);
    const tEx = now + Math.max(0, left_) / burn * 3600000;
    const tEnd = Math.min(tEx, end);
    const remEnd = cap - Number(b.spent_nanousd) - burn * (tEnd - now) / 3600000;
    root.append(svg('line', { x1: x(now), y1: y(cap - Number(b.spent_nanousd)), x2: x(tEnd), y2: y(remEnd),
      class: 'projected' }));
  }
  root.append(svg('circle', { cx: x(now), cy: y(cap - Number(b.spent_nanousd)), r: 4, class: 'now' }));
  return root;
}

function exhaustion(b) {
  const spent = Number(b.spent_nanousd), cap = Number(b.cap_nanousd), burn = Number(b.burn_rate_nanousd_per_hour);
  if (spent >= cap) return 'cap reached';
  if (!(burn > 0)) return 'not at the current rate';
  const t = Date.now() + (cap - spent) / burn * 3600000;
  if (t >= Date.parse(b.resets_at)) return 'not before the window resets';
  return new Date(t).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

async function showBudgets() {
  const r = await api('/v1/budgets');
  const list = $('budget-list');
  list.replaceChildren();
  for (const b of r.budgets) {
    const card = el('div', { class: 'budget ' + (b.state || ''), 'data-budget': b.id });
    card.append(el('h3', {}, b.id, el('span', { class: 'state' }, b.state || '')));
    const dl = el('dl', {});
    const row = (k, v, cls) => { dl.append(el('dt', {}, k), el('dd', { class: cls || '' }, v)); };
    row('scope', `${b.scope} = ${b.match || '*'}`);
    row('period', `${b.period} (${b.time_zone})`);
    if (b.state !== 'inactive') {
      row('spent (USD)', b.spent_usd, 'spent');
      row('cap (USD)', b.cap_usd, 'cap');
      row('used', b.percent + ' %', 'percent');
      row('projected for the period (USD)', b.projected_usd, 'projected');
      row('projected exhaustion', exhaustion(b), 'exhaustion');
      row('resets at', b.resets_at);
    } else {
      row('cap (USD)', b.cap_usd, 'cap');
    }
    card.append(dl);
    if (b.state !== 'inactive') {
      let history = [];
      try { history = await budgetHistory(b); } catch (e) { card.append(el('p', { class: 'error' }, e.message)); }
      card.append(burnDown(b, history));
    }
    list.append(card);
  }
  if (!r.budgets.length) list.append(el('p', {}, 'No budgets are configured.'));
}

// ---- Latency -----------------------------------------------------------------------------------
async function showLatency(params) {
  const from = params.get('from') || $('latency-from').value || today(-6);
  const to = params.get('to') || $('latency-to').value || today(0);
  $('latency-from').value = from; $('latency-to').value = to;
  const r = await api(`/v1/latency?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&group_by=model`);
  const p = (o, k) => (o ? o[k] : '-');
  table('latency-table', [
    { title: 'model', get: (x) => x.model, cls: 'group' },
    { title: 'calls', get: (x) => x.calls, cls: 'num calls' },
    { title: 'p50', get: (x) => x.latency_ms.p50, cls: 'num p50' },
    { title: 'p95', get: (x) => x.latency_ms.p95, cls: 'num p95' },
    { title: 'p99', get: (x) => x.latency_ms.p99, cls: 'num p99' },
    { title: 'TTFT p50', get: (x) => p(x.ttft_ms, 'p50'), cls: 'num ttft-p50' },
    { title: 'TTFT p95', get: (x) => p(x.ttft_ms, 'p95'), cls: 'num ttft-p95' },
    { title: 'TTFT p99', get: (x) => p(x.ttft_ms, 'p99'), cls: 'num ttft-p99' },
  ], r.rows.map((x) => Object.assign({ attrs: { 'data-model': x.model } }, x)));
  const models = r.rows.map((x) => x.model);
  const kinds = ['p50', 'p95', 'p99'];
  const series = kinds.map((k) => ({ name: 'latency ' + k, values: r.rows.map((x) => x.latency_ms[k]) }));
  groupedBars($('latency-chart'), models, series, ' ms');
}

function groupedBars(container, xs, series, unit) {
  const w = 900, h = 240, left = 70, bottom = 40, top = 10;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const step = (w - left - 10) / Math.max(1, xs.length);
  const bw = step * 0.8 / Math.max(1, series.length);
  const root = svg('svg', { viewBox: `0 0 ${w} ${h + 30}`, class: 'chart-svg', role: 'img' });
  for (let g = 0; g <= 4; g++) {
    const y = top + (h - top - bottom) * (1 - g / 4);
    root.append(svg('line', { x1: left, x2: w, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, Math.round(max * g / 4) + unit));
  }
  xs.forEach((x, i) => {
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      const y1 = top + (h - top - bottom) * (1 - v / max);
      const r = svg('rect', { x: left + i * step + step * 0.1 + k * bw, y: y1, width: bw - 1,
        height: Math.max(0.5, h - bottom - y1), fill: COLORS[k % COLORS.length], 'data-series': s.name, 'data-x': x });
      r.append(svg('title', {}, `${x} ${s.name}: ${v}${unit}`));
      root.append(r);
    });
    root.append(svg('text', { x: left + i * step + step / 2, y: h - bottom + 16, class: 'axis', 'text-anchor': 'middle' }, x));
  });
  series.forEach((s, k) => {
    root.append(svg('rect', { x: left + k * 150, y: h + 8, width: 12, height: 12, fill: COLORS[k % COLORS.length] }));
    root.append(svg('text', { x: left + k * 150 + 16, y: h + 18, class: 'legend' }, s.name));
  });
  container.replaceChildren(root);
}

// ---- Recent calls ------------------------------------------------------------------------------
// Columns both engines have (Parquet's `ts_start` is a timestamp, ClickHouse's a DateTime); event ids are
// UUIDv7, so they order calls by time within a second too.
const CALL_COLUMNS = ['ts_start', 'request_id', 'department', 'team', 'user', 'api_key_id', 'served_model',
  'status_code', 'outcome', 'input_tokens', 'output_tokens', 'cost_nanousd', 'latency_ms', 'ttft_ms', 'event_id'];

function callsSql(params) {
  const where = [];
  for (const [name, col] of [['department', 'department'], ['team', 'team'], ['model', 'served_model'],
    ['outcome', 'outcome']]) {
    const v = params.get(name) != null ? params.get(name) : $('calls-' + name).value;
    $('calls-' + name).value = v || '';
    if (v) where.push(`${col} = ${sqlString(v)}`);
  }
  return `SELECT ${CALL_COLUMNS.join(', ')} FROM calls` + (where.length ? ' WHERE ' + where.join(' AND ') : '') +
    ' ORDER BY ts_start DESC, event_id DESC LIMIT 100';
}

async function showCalls(params) {
  const r = await api('/v1/sql', { sql: callsSql(params) });
  const rows = r.rows.map((x) => Object.assign({ attrs: { 'data-event': x.event_id } }, x));
  table('calls-table', [
    { title: 'time (UTC)', get: (x) => String(x.ts_start).replace('T', ' ').replace('Z', '') },
    { title: 'request', get: (x) => el('button', { type: 'button', class: 'link', 'data-event': x.event_id }, x.request_id) },
    { title: 'department', get: (x) => x.department },
    { title: 'team', get: (x) => x.team },
    { title: 'user', get: (x) => x.user },
    { title: 'key', get: (x) => x.api_key_id },
    { title: 'model', get: (x) => x.served_model },
    { title: 'status', get: (x) => x.status_code, cls: 'num' },
    { title: 'outcome', get: (x) => x.outcome, cls: 'outcome' },
    { title: 'in', get: (x) => x.input_tokens, cls: 'num' },
    { title: 'out', get: (x) => x.output_tokens, cls: 'num' },
    { title: 'cost (USD)', get: (x) => usd(x.cost_nanousd), cls: 'num cost', data: (x) => x.cost_nanousd },
    { title: 'latency ms', get: (x) => x.latency_ms, cls: 'num' },
    { title: 'TTFT ms', get: (x) => x.ttft_ms, cls: 'num' },
  ], rows);
  $('call-detail').hidden = true;
  const id = params.get('event');
  if (id) await showCall(id);
}

async function showCall(eventId) {
  const r = await api('/v1/sql', { sql: `SELECT * FROM calls WHERE event_id = ${sqlString(eventId)}` });
  const dl = $('call-detail-fields');
  dl.replaceChildren();
  const row = r.rows[0] || {};
  for (const c of r.columns) {
    let v = row[c.name];
    if (c.name === 'cost_nanousd' || c.name === 'saved_nanousd') v = `${v} (${usd(v)} USD)`;
    dl.append(el('dt', {}, c.name), el('dd', { 'data-field': c.name }, typeof v === 'object' ? JSON.stringify(v) : v));
  }
  $('call-detail-id').textContent = eventId;
  $('call-detail').hidden = false;
}

// ---- SQL console -------------------------------------------------------------------------------
function csvField(v) {
  const s = v == null ? '' : (typeof v === 'object' ? JSON.stringify(v) : String(v));
  return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

async function showSql(params, run) {
  if (params.get('q')) $('sql-text').value = params.get('q');
  if (!run && !params.get('q')) return;
  const r = await api('/v1/sql', { sql: $('sql-text').value });
  const cols = r.columns.map((c) => c.name);
  table('sql-table', cols.map((c) => ({ title: c, get: (x) => {
    const v = x[c];
    return typeof v === 'object' && v !== null ? JSON.stringify(v) : v;
  } })), r.rows);
  const csv = [cols.map(csvField).join(',')].concat(r.rows.map((x) => cols.map((c) => csvField(x[c])).join(',')))
    .join('\r\n') + '\r\n';
  const a = $('sql-csv');
  if (a.href.startsWith('blob:')) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
  a.hidden = false;
  a.dataset.csv = csv;
  $('sql-info').textContent = `${r.row_count} rows` + (r.truncated ? ' (truncated)' : '');
}

// ---- Router ------------------------------------------------------------------------------------
const VIEWS = { spend: showSpend, budgets: showBudgets, latency: showLatency, calls: showCalls, sql: showSql };

async function route(extra) {
  const { view, params } = parseFragment();
  const name = VIEWS[view] ? view : 'spend';
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== 'view-' + name;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === name);
  $('key-state').textContent = sessionStorage.getItem(KEY) ? 'key set' : 'no key';
  delete document.body.dataset.ready;
  if (!sessionStorage.getItem(KEY)) { status('Enter a query key (a virtual key with query = true).', true); return; }
  status('Loading…');
  try {
    await VIEWS[name](params, extra);
    status('');
    document.body.dataset.ready = name;
  } catch (e) {
    status(e.message, true);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $('key-input').value.trim());
    $('key-input').value = '';
    route();
  });
  for (const id of ['spend-form', 'latency-form', 'calls-form']) {
    $(id).addEventListener('submit', (e) => {
      e.preventDefault();
      const view = id.split('-')[0];
      const p = new URLSearchParams();
      for (const input of $(id).querySelectorAll('input, select')) {
        if (input.value) p.set(input.id.replace(view + '-', ''), input.value);
      }
      location.hash = view + '?' + p.toString();
    });
  }
  $('sql-form').addEventListener('submit', (e) => { e.preventDefault(); route(true); });
  $('calls-table').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-event]');
    if (b) showCall(b.dataset.event).catch((err) => status(err.message, true));
  });
  window.addEventListener('hashchange', () => route());
  route();
});
