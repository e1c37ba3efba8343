// hashshift NOC page: polls the JSON API and renders rigs, pools and power.
// Rules: every piece of data goes into the DOM as text (textContent, Option, SVG attributes),
// never as markup; the rigs table renders only the rows in view (10k rigs stay fast);
// changes carry the bearer token kept in sessionStorage (this tab only).
'use strict';
(() => {
  const POLL_MS = 5000;
  const HISTORY_EVERY = 6; // fetch the power history every 6th poll
  const ROW_H = 26; // px; must match `#rigs-table tbody tr` in noc.css
  const OVERSCAN = 10;
  const STATES = ['mining', 'draining', 'asleep', 'waking', 'fault', 'unknown'];
  const TOKEN_KEY = 'hashshift.noc.token';
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const svg = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };

  const st = {
    rigs: [],
    view: [],
    sort: { key: 'id', dir: 1 },
    filter: '',
    stateFilter: '',
    polls: 0,
    pending: null, // an action waiting for the token
  };

  // ---- formatting ----
  const num = (x, d) => (typeof x === 'number' && isFinite(x) ? x.toFixed(d) : '–');
  const kw = (x) => num(x, 1) + ' kW';
  function hashrate(ths) {
    if (typeof ths !== 'number' || !isFinite(ths) || ths <= 0) return '0 H/s';
    let h = ths * 1e12;
    const units = ['H/s', 'kH/s', 'MH/s', 'GH/s', 'TH/s', 'PH/s', 'EH/s'];
    let i = 0;
    while (h >= 1000 && i < units.length - 1) { h /= 1000; i++; }
    return h.toFixed(h < 10 ? 2 : 1) + ' ' + units[i];
  }
  function ago(secs) {
    if (typeof secs !== 'number' || !isFinite(secs)) return 'never';
    if (secs < 60) return Math.round(secs) + ' s ago';
    if (secs < 3600) return Math.round(secs / 60) + ' min ago';
    return (secs / 3600).toFixed(1) + ' h ago';
  }
  const hhmm = (ms) => new Date(ms).toTimeString().slice(0, 5);

  // ---- API ----
  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  async function getJson(path) {
    const r = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    const body = await r.json();
    if (!body.ok) throw new Error(body.error || 'HTTP ' + r.status);
    return body.result;
  }
  // Every change the page makes goes through here: POST JSON with the bearer token.
  async function post(path, body) {
    const r = await fetch(path, {
      method: 'POST',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token() },
      body: JSON.stringify(body),
    });
    let answer = {};
    try { answer = await r.json(); } catch (_) { /* not JSON: keep the status */ }
    return { status: r.status, answer };
  }

  function say(text, isError) {
    const m = $('message');
    m.textContent = text;
    m.className = 'message' + (isError ? ' error' : '');
  }

  // ---- token ----
  function showToken() {
    const has = token() !== '';
    $('token-state').textContent = has ? 'token set' : 'no token';
    $('token-forget').hidden = !has;
  }
  function askToken(why, action) {
    st.pending = action;
    $('token-why').textContent = why;
    $('token-form').hidden = false;
    $('token-input').focus();
  }

  // A drain or resume of {rig} or {group}: asks for the token first if there is none.
  async function act(what, target) {
    const name = target.rig !== undefined ? 'rig ' + target.rig : 'group ' + target.group;
    const run = async () => {
      const reason = $('reason').value.trim() || 'NOC page';
      const { status, answer } = await post('/api/' + what, { ...target, reason, by: 'noc-page' });
      if (status === 401 || status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        showToken();
        if (status === 401) askToken('the token was refused', run);
        else say(answer.error || 'changes over HTTP are disabled', true);
        return;
      }
      if (answer.ok) {
        const rigs = (answer.result && answer.result.rigs) || [];
        say(what + ' ' + name + ': accepted (' + rigs.length + ' rigs)', false);
        refresh();
      } else {
        say(what + ' ' + name + ': ' + (answer.error || 'HTTP ' + status), true);
      }
    };
    if (!window.confirm(what + ' ' + name + '?')) return;
    if (token() === '') askToken('needed to ' + what + ' ' + name, run);
    else await run();
  }

  // ---- rigs table ----
  const COLS = [
    { key: 'id', label: 'Rig', val: (r) => r.id },
    { key: 'state', label: 'State', val: (r) => r.state || '' },
    // How it is slept: firmware kind, `antminer+pdu`, `pdu`, `none`; `pdu-cut` once we cut it.
    { key: 'control', label: 'Control', val: (r) => r.control || '' },
    { key: 'group', label: 'Group', val: (r) => r.group || '' },
    { key: 'hashrate_ths', label: 'Hashrate', num: true, val: (r) => r.hashrate_ths || 0, text: (r) => hashrate(r.hashrate_ths) },
    { key: 'power_w', label: 'Power', num: true, val: (r) => (typeof r.power_w === 'number' ? r.power_w : -1),
      text: (r) => (typeof r.power_w === 'number' ? num(r.power_w / 1000, 2) + ' kW' + (r.power_source ? ' · ' + r.power_source : '') : '–') },
    { key: 'pool', label: 'Pool', val: (r) => r.pool || '' },
    { key: 'last_share_age_secs', label: 'Last share', num: true,
      val: (r) => (typeof r.last_share_age_secs === 'number' ? r.last_share_age_secs : Infinity), text: (r) => ago(r.last_share_age_secs) },
    { key: 'accepted', label: 'Acc / Rej', num: true, val: (r) => r.accepted || 0, text: (r) => (r.accepted || 0) + ' / ' + (r.rejected || 0) },
  ];

  function buildHead() {
    const tr = $('rigs-head');
    for (const c of COLS) {
      const th = el('th', c.num ? 'num sortable' : 'sortable', c.label);
      th.dataset.key = c.key;
      th.addEventListener('click', () => {
        st.sort = { key: c.key, dir: st.sort.key === c.key ? -st.sort.dir : 1 };
        applyView();
      });
      tr.appendChild(th);
    }
    tr.appendChild(el('th', null, 'Action'));
    const sel = $('state-filter');
    for (const s of STATES) sel.appendChild(new Option(s, s));
  }

  function applyView() {
    const t0 = performance.now();
    const q = st.filter;
    const sf = st.stateFilter;
    const col = COLS.find((c) => c.key === st.sort.key) || COLS[0];
    const dir = st.sort.dir;
    const rows = st.rigs.filter((r) => (sf === '' || r.state === sf) && (q === '' || r._text.includes(q)));
    // Keys computed once, not per comparison (10k rows: ~140k comparisons).
    const keys = rows.map(col.val);
    const order = rows.map((_, i) => i);
    order.sort((i, j) => {
      const x = keys[i];
      const y = keys[j];
      if (x < y) return -dir;
      if (x > y) return dir;
      return rows[i].id < rows[j].id ? -1 : rows[i].id > rows[j].id ? 1 : 0;
    });
    st.view = order.map((i) => rows[i]);
    for (const th of $('rigs-head').children) {
      th.classList.toggle('asc', th.dataset.key === col.key && dir > 0);
      th.classList.toggle('desc', th.dataset.key === col.key && dir < 0);
    }
    renderRows();
    const ms = performance.now() - t0;
    const shown = $('render-ms');
    if (shown) shown.textContent = ms.toFixed(1);
    $('rig-count').textContent = st.view.length === st.rigs.length
      ? '(' + st.rigs.length + ')' : '(' + st.view.length + ' of ' + st.rigs.length + ')';
    return ms;
  }

  function rigRow(r) {
    const tr = el('tr', 'rig');
    tr.dataset.id = r.id;
    tr.dataset.state = r.state || '';
    for (const c of COLS) {
      const td = el('td', c.num ? 'num' : null);
      if (c.key === 'state') {
        td.appendChild(el('span', 'badge s-' + (STATES.includes(r.state) ? r.state : 'none'), r.state || '–'));
        if (r.pinned) td.appendChild(el('span', 'pin', 'pinned')).title = r.pinned;
        if (r.escalated) td.appendChild(el('span', 'esc', '!')).title = 'last command unconfirmed';
        if (r.identity === 'unverified') {
          td.appendChild(el('span', 'unv', 'unverified')).title =
            'management API has not answered: counted at its live estimate, forgotten after it leaves';
        }
        if (r.identity_conflicts > 0) {
          td.appendChild(el('span', 'conflict', 'conflict ×' + r.identity_conflicts)).title =
            'its worker name was used from ' + (r.last_conflict || 'another address');
        }
      } else {
        td.textContent = c.text ? c.text(r) : c.val(r);
      }
      if (c.key === 'id' && r.address) td.title = r.address;
      if (c.key === 'control') {
        if (r.management) td.title = r.management;
        if (r.control === 'pdu-cut') td.classList.add('cut');
      }
      tr.appendChild(td);
    }
    const td = el('td', 'act');
    if (r.state) {
      const resumable = r.pinned || r.state === 'asleep' || r.state === 'draining';
      const b = el('button', resumable ? 'resume' : 'drain', resumable ? 'resume' : 'drain');
      b.type = 'button';
      b.addEventListener('click', () => act(resumable ? 'resume' : 'drain', { rig: r.id }));
      td.appendChild(b);
    }
    tr.appendChild(td);
    return tr;
  }

  // Only the rows in view (plus some), between two spacer rows that keep the scroll height.
  function renderRows() {
    const box = $('rigs-scroll');
    const body = $('rigs-body');
    const n = st.view.length;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - OVERSCAN);
    const count = Math.ceil((box.clientHeight || 600) / ROW_H) + 2 * OVERSCAN;
    const last = Math.min(n, first + count);
    const frag = document.createDocumentFragment();
    const spacer = (rows) => {
      const tr = el('tr', 'spacer');
      const td = el('td');
      td.colSpan = COLS.length + 1;
      tr.style.height = rows * ROW_H + 'px';
      tr.appendChild(td);
      return tr;
    };
    if (first > 0) frag.appendChild(spacer(first));
    for (let i = first; i < last; i++) frag.appendChild(rigRow(st.view[i]));
    if (last < n) frag.appendChild(spacer(n - last));
    if (n === 0) {
      const tr = el('tr', 'empty');
      const td = el('td', null, st.rigs.length ? 'no rig matches' : 'no rigs');
      td.colSpan = COLS.length + 1;
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
  }

  function setRigs(rigs) {
    for (const r of rigs) {
      r._text = [r.id, r.worker, r.group, r.pool, r.address, r.model, r.control].filter(Boolean).join(' ').toLowerCase();
    }
    st.rigs = rigs;
    const groups = [...new Set(rigs.map((r) => r.group).filter(Boolean))].sort();
    const sel = $('group');
    const had = sel.value;
    if (sel.options.length !== groups.length || groups.some((g, i) => sel.options[i].value !== g)) {
      sel.replaceChildren(...groups.map((g) => new Option(g, g)));
      if (groups.includes(had)) sel.value = had;
    }
    $('group-drain').disabled = $('group-resume').disabled = groups.length === 0;
    return applyView();
  }

  // ---- pools ----
  function setPools(pools) {
    const frag = document.createDocumentFragment();
    for (const p of pools) {
      const state = p.active ? 'active' : p.up ? 'standby' : 'down';
      const tr = el('tr', 'pool');
      tr.dataset.state = state;
      tr.appendChild(el('td', null, p.url)).title = p.url;
      const s = el('td');
      s.appendChild(el('span', 'badge p-' + state, state));
      tr.appendChild(s);
      for (const k of ['miners', 'connections', 'accepted', 'rejected', 'lost']) {
        tr.appendChild(el('td', 'num', typeof p[k] === 'number' ? p[k] : '–'));
      }
      frag.appendChild(tr);
    }
    $('pools-body').replaceChildren(frag);
  }

  // ---- power ----
  function setPower(p) {
    const figs = [
      ['cap', kw(p.effective_cap_kw) + (p.effective_cap_kw !== p.site_cap_kw ? ' (site ' + kw(p.site_cap_kw) + ')' : '')],
      ['mining', kw(p.mining_kw) + (p.draining_kw > 0 ? ' (' + kw(p.draining_kw) + ' draining)' : '')],
      ['GPU granted', kw(p.gpu_granted_kw) + (p.gpu_pending_kw > 0 ? ' (+' + kw(p.gpu_pending_kw) + ' pending)' : '')],
      ['GPU in use', kw(p.gpu_in_use_kw)],
      ['headroom', kw(p.headroom_kw)],
      ['free', kw(p.free_kw)],
    ];
    if (p.curtailment) {
      const until = p.curtailment.until_unix ? ' until ' + hhmm(p.curtailment.until_unix * 1000) : '';
      figs.push(['curtailment', kw(p.curtailment.cap_kw) + until + ' · ' + (p.curtailment.source || '')]);
    }
    const frag = document.createDocumentFragment();
    for (const [k, v] of figs) {
      const d = el('div', 'figure');
      d.appendChild(el('span', 'k', k));
      d.appendChild(el('span', 'v', v));
      frag.appendChild(d);
    }
    $('power-figures').replaceChildren(frag);
  }

  const SERIES = [
    { key: 'mining_kw', name: 'mining', cls: 'mining' },
    { key: 'gpu_granted_kw', name: 'GPU granted', cls: 'gpu' },
    { key: 'cap_kw', name: 'cap', cls: 'cap' },
  ];

  function setHistory(h) {
    const W = 900, H = 220, L = 48, R = 10, T = 10, B = 24;
    let samples = (h.samples || []).filter((s) => typeof s.at_unix_ms === 'number');
    if (samples.length === 1) samples = [{ ...samples[0], at_unix_ms: samples[0].at_unix_ms - 60000 }, samples[0]];
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'power-chart', role: 'img' });
    root.appendChild(svg('title')).textContent = 'mining, GPU granted and cap (kW)';
    if (samples.length === 0) {
      $('chart').replaceChildren(root);
      return;
    }
    const t0 = samples[0].at_unix_ms;
    const t1 = Math.max(samples[samples.length - 1].at_unix_ms, t0 + 1);
    let top = 0;
    for (const s of samples) for (const se of SERIES) top = Math.max(top, s[se.key] || 0);
    top = top > 0 ? top * 1.1 : 1;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      const v = top * f;
      root.appendChild(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
      root.appendChild(svg('text', { x: L - 4, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' })).textContent = num(v, 0);
    }
    root.appendChild(svg('text', { x: L, y: H - 6, class: 'axis' })).textContent = hhmm(t0);
    root.appendChild(svg('text', { x: W - R, y: H - 6, class: 'axis', 'text-anchor': 'end' })).textContent = hhmm(t1);
    root.appendChild(svg('text', { x: 4, y: T + 30, class: 'axis' })).textContent = 'kW';
    SERIES.forEach((se, i) => {
      const pts = samples.map((s) => x(s.at_unix_ms).toFixed(1) + ',' + y(s[se.key] || 0).toFixed(1)).join(' ');
      const line = svg('polyline', { points: pts, class: 'series ' + se.cls, 'data-series': se.cls });
      line.appendChild(svg('title')).textContent = se.name;
      root.appendChild(line);
      const lx = L + 10 + i * 130;
      root.appendChild(svg('line', { x1: lx, x2: lx + 18, y1: T + 6, y2: T + 6, class: 'series ' + se.cls }));
      const last = samples[samples.length - 1][se.key];
      root.appendChild(svg('text', { x: lx + 22, y: T + 10, class: 'legend' })).textContent = se.name + ' ' + num(last, 1);
    });
    $('chart').replaceChildren(root);
  }

  // ---- polling ----
  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    const withHistory = st.polls % HISTORY_EVERY === 0;
    st.polls++;
    const [rigs, pools, power, history] = await Promise.allSettled([
      getJson('/api/rigs'),
      getJson('/api/pools'),
      getJson('/api/power'),
      withHistory ? getJson('/api/power/history') : Promise.resolve(null),
    ]);
    const errors = [];
    let ms = null;
    if (rigs.status === 'fulfilled') ms = setRigs(rigs.value); else errors.push('rigs: ' + rigs.reason.message);
    if (pools.status === 'fulfilled') setPools(pools.value); else errors.push('pools: ' + pools.reason.message);
    // Without [power] the power panel says why instead.
    if (power.status === 'fulfilled') setPower(power.value);
    else $('power-figures').replaceChildren(el('span', 'muted', power.reason.message));
    if (history.status === 'fulfilled' && history.value) setHistory(history.value);
    const status = $('status');
    status.replaceChildren();
    status.appendChild(el('span', null, 'updated ' + new Date().toLocaleTimeString()));
    if (ms !== null) {
      status.appendChild(el('span', null, ' · table in '));
      status.appendChild(el('span', null, ms.toFixed(1))).id = 'render-ms';
      status.appendChild(el('span', null, ' ms'));
    }
    if (errors.length) status.appendChild(el('span', 'error', ' · ' + errors.join('; ')));
    timer = setTimeout(refresh, POLL_MS);
  }

  function start() {
    buildHead();
    showToken();
    let scheduled = false;
    $('rigs-scroll').addEventListener('scroll', () => {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => { scheduled = false; renderRows(); });
    });
    $('filter').addEventListener('input', (e) => { st.filter = e.target.value.trim().toLowerCase(); applyView(); });
    $('state-filter').addEventListener('change', (e) => { st.stateFilter = e.target.value; applyView(); });
    $('group-drain').addEventListener('click', () => act('drain', { group: $('group').value }));
    $('group-resume').addEventListener('click', () => act('resume', { group: $('group').value }));
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = $('token-input').value.trim();
      $('token-input').value = '';
      $('token-form').hidden = true;
      if (t === '') return;
      sessionStorage.setItem(TOKEN_KEY, t);
      showToken();
      const run = st.pending;
      st.pending = null;
      if (run) run();
    });
    $('token-cancel').addEventListener('click', () => { $('token-form').hidden = true; st.pending = null; });
    $('token-forget').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); showToken(); });
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
