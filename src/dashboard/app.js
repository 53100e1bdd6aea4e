// loaxa dashboard: sign-in and the fleet health view. Plain ES2020, no build step, no
// network beyond this server. The token lives in sessionStorage only and travels in the
// Authorization header, never in a URL, never in the console.
'use strict';
(() => {
  const I18N = {
    vi: {
      title: 'Loa xã — Bảng điều khiển', app_name: 'Loa xã', skip: 'Bỏ qua đến nội dung chính',
      lang_switch: 'English', lang_switch_aria: 'Chuyển sang tiếng Anh',
      signin_title: 'Đăng nhập', token_label: 'Mã truy cập', signin: 'Đăng nhập', signout: 'Đăng xuất',
      token_hint: 'Mã do quản trị viên cấp. Chỉ được giữ trong phiên trình duyệt này.',
      signin_bad: 'Mã truy cập không hợp lệ hoặc đã hết hạn.',
      session_expired: 'Phiên làm việc đã hết hạn, vui lòng đăng nhập lại.',
      signin_failed: 'Không đăng nhập được: {detail}',
      role_admin: 'Quản trị viên', role_operator: 'Điều hành viên', role_officer: 'Cán bộ văn hóa',
      role_technician: 'Kỹ thuật viên', role_agent: 'Thiết bị cụm loa',
      note_later: 'Các chức năng khác (thư viện, lịch phát, phát khẩn cấp) sẽ có trong phiên bản sau.',
      note_no_view: 'Vai trò này chưa có màn hình nào.',
      health_title: 'Tình trạng cụm loa', area_label: 'Khu vực', status_label: 'Trạng thái',
      all_areas: 'Tất cả khu vực', all_statuses: 'Tất cả trạng thái', filter: 'Lọc',
      status_online: 'Trực tuyến', status_degraded: 'Suy giảm', status_offline: 'Mất kết nối',
      status_unknown: 'Chưa rõ', counts_label: 'Tổng hợp theo trạng thái',
      grid_title: 'Sơ đồ cụm loa', list_title: 'Danh sách cụm loa',
      col_name: 'Cụm loa', col_area: 'Khu vực', col_status: 'Trạng thái', col_since: 'Từ lúc',
      col_cause: 'Nguyên nhân', col_loss: 'Mất gói (%)', col_jitter: 'Jitter (ms)',
      col_volume: 'Âm lượng', col_actions: 'Thao tác', col_at: 'Thời điểm', col_from: 'Từ', col_to: 'Sang',
      empty: 'Không có cụm loa nào phù hợp.', loading: 'Đang tải…',
      test_tone: 'Phát âm thử', history: 'Lịch sử', volume_of: 'Âm lượng của {name}',
      test_tone_of: 'Phát âm thử tại {name}', history_of: 'Lịch sử trạng thái của {name}',
      tone_queued: 'Đã gửi lệnh phát âm thử tới {name}; loa sẽ phát trong khoảng {s} giây.',
      volume_set: 'Đã đặt âm lượng của {name}: {v}.',
      history_title: 'Lịch sử trạng thái: {name}', history_empty: 'Chưa có thay đổi trạng thái nào.',
      close: 'Đóng', live_on: 'Đang cập nhật trực tiếp', live_off: 'Mất kết nối cập nhật — đang thử lại',
      error: 'Lỗi: {detail}', network_error: 'Không kết nối được tới máy chủ.',
    },
    en: {
      title: 'Loaxa — Dashboard', app_name: 'Loaxa', skip: 'Skip to main content',
      lang_switch: 'Tiếng Việt', lang_switch_aria: 'Chuyển sang tiếng Việt',
      signin_title: 'Sign in', token_label: 'Access token', signin: 'Sign in', signout: 'Sign out',
      token_hint: 'Issued by your administrator. Kept only for this browser session.',
      signin_bad: 'The access token is invalid or has expired.',
      session_expired: 'Your session has expired; please sign in again.',
      signin_failed: 'Could not sign in: {detail}',
      role_admin: 'Administrator', role_operator: 'Operator', role_officer: 'Culture officer',
      role_technician: 'Technician', role_agent: 'Cluster agent',
      note_later: 'Other views (library, calendar, emergency broadcast) come in a later version.',
      note_no_view: 'There is no view for this role yet.',
      health_title: 'Fleet health', area_label: 'Area', status_label: 'Status',
      all_areas: 'All areas', all_statuses: 'All statuses', filter: 'Filter',
      status_online: 'Online', status_degraded: 'Degraded', status_offline: 'Offline',
      status_unknown: 'Unknown', counts_label: 'Clusters by status',
      grid_title: 'Cluster map', list_title: 'Cluster list',
      col_name: 'Cluster', col_area: 'Area', col_status: 'Status', col_since: 'Since',
      col_cause: 'Cause', col_loss: 'Loss (%)', col_jitter: 'Jitter (ms)',
      col_volume: 'Volume', col_actions: 'Actions', col_at: 'At', col_from: 'From', col_to: 'To',
      empty: 'No clusters match.', loading: 'Loading…',
      test_tone: 'Test tone', history: 'History', volume_of: 'Volume of {name}',
      test_tone_of: 'Play a test tone on {name}', history_of: 'Status history of {name}',
      tone_queued: 'Test tone queued for {name}; it plays within about {s} s.',
      volume_set: 'Volume of {name} set to {v}.',
      history_title: 'Status history: {name}', history_empty: 'No status changes yet.',
      close: 'Close', live_on: 'Live', live_off: 'Live updates disconnected — retrying',
      error: 'Error: {detail}', network_error: 'Cannot reach the server.',
    },
  };

  const TOKEN_KEY = 'loaxa.token';
  const LANG_KEY = 'loaxa.lang';
  const STATUSES = ['online', 'degraded', 'offline', 'unknown'];
  const VIEW_ROLES = ['technician', 'admin', 'operator', 'officer'];
  const FIELD_ROLES = ['technician', 'admin'];
  const ICONS = { online: '●', degraded: '▲', offline: '✕', unknown: '?' };
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  // A stream that stayed up this long was healthy, even if it carried nothing.
  const HEALTHY_STREAM_MS = 5000;
  // Arrow keys fire `change` once per step; wait for the user to settle before PATCHing.
  const VOLUME_SETTLE_MS = 400;

  const $ = (sel, root = document) => root.querySelector(sel);
  const zeroCounts = () => ({ online: 0, degraded: 0, offline: 0, unknown: 0 });
  const state = {
    lang: 'vi', me: null, areas: [], areaByCode: new Map(), children: new Map(),
    filter: { area: '', status: '' }, counts: zeroCounts(), clusters: new Map(), nodes: new Map(),
    loadGen: 0, stream: null, live: false, backoff: BACKOFF_MIN_MS, retryTimer: 0, refetchTimer: 0,
    messageTimer: 0, historyOpener: null,
  };

  // ---- small helpers -------------------------------------------------------------------

  function t(key, vars) {
    let s = I18N[state.lang][key] ?? I18N.vi[key] ?? key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
    return s;
  }

  function el(tag, props = {}, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'class') n.className = v;
      else if (k === 'text') n.textContent = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else if (k.includes('-')) n.setAttribute(k, v === true ? '' : v);
      else n[k] = v;
    }
    n.append(...kids.flat().filter((c) => c != null));
    return n;
  }

  const local = {
    get(k) { try { return localStorage.getItem(k); } catch { return null; } },
    set(k, v) { try { localStorage.setItem(k, v); } catch { /* private mode: not remembered */ } },
  };
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const locale = () => (state.lang === 'vi' ? 'vi-VN' : 'en-GB');
  const canAct = () => !!state.me && FIELD_ROLES.includes(state.me.role);
  const clusterPath = (id) => `/api/v1/clusters/${encodeURIComponent(id)}`;

  const fmtCache = {};
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const f = (fmtCache[state.lang] ??= new Intl.DateTimeFormat(locale(), {
      timeZone: 'Asia/Ho_Chi_Minh', day: '2-digit', month: '2-digit', year: 'numeric',
      hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
    }));
    return f.format(d);
  }
  const fmtNum = (v) => (v == null ? '—'
    : new Intl.NumberFormat(locale(), { maximumFractionDigits: 2 }).format(v));
  const timeEl = (iso) => el('time', { dateTime: iso || '', text: fmtTime(iso) });
  const statusText = (s) => t(`status_${STATUSES.includes(s) ? s : 'unknown'}`);
  const badge = (s) => el('span', { class: 'badge', 'data-status': s },
    el('span', { class: 'icon', 'aria-hidden': 'true', text: ICONS[s] || '?' }), ` ${statusText(s)}`);
  const areaName = (code) => state.areaByCode.get(code)?.name ?? code;

  function say(text, kind = 'info') {
    const m = $('#message');
    m.textContent = text;
    m.dataset.kind = kind;
    clearTimeout(state.messageTimer);
    if (kind === 'info') state.messageTimer = setTimeout(() => { m.textContent = ''; }, 10000);
  }
  const sayError = (err) => say(t('error', { detail: err.message }), 'error');

  // ---- API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function request(method, path, body, { signal, accept = 'application/json' } = {}) {
    const headers = { Authorization: `Bearer ${token() || ''}`, Accept: accept };
    const init = { method, headers, signal, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, t('network_error'));
    }
    if (res.status === 401) {
      signOut(t('session_expired'));
      throw new ApiError(401, t('session_expired'));
    }
    if (!res.ok) {
      let detail = `HTTP ${res.status}`;
      try {
        const p = await res.json(); // application/problem+json
        detail = p.detail || p.title || detail;
      } catch { /* not JSON: keep the status line */ }
      throw new ApiError(res.status, detail);
    }
    return res;
  }

  async function api(method, path, body) {
    const res = await request(method, path, body);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  // ---- language ------------------------------------------------------------------------

  function applyStatic() {
    document.documentElement.lang = state.lang;
    document.title = t('title');
    for (const n of document.querySelectorAll('[data-i18n]')) n.textContent = t(n.dataset.i18n);
    for (const n of document.querySelectorAll('[data-i18n-aria]')) {
      n.setAttribute('aria-label', t(n.dataset.i18nAria));
    }
    const b = $('#lang');
    b.textContent = t('lang_switch');
    b.lang = state.lang === 'vi' ? 'en' : 'vi';
    b.setAttribute('aria-label', t('lang_switch_aria'));
  }

  function switchLang() {
    state.lang = state.lang === 'vi' ? 'en' : 'vi';
    local.set(LANG_KEY, state.lang);
    applyStatic();
    if (!state.me) return;
    renderWho();
    renderAreaOptions();
    renderHealth();
    setLive(state.live);
  }

  // ---- sign-in -------------------------------------------------------------------------

  function show(signedIn) {
    $('#signin-view').hidden = signedIn;
    $('#app-view').hidden = !signedIn;
    $('#whoami').hidden = !signedIn;
    $('#signout').hidden = !signedIn;
    if (!signedIn) $('#live').hidden = true;
  }

  function signOut(errorText) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopStream();
    clearTimeout(state.refetchTimer);
    state.me = null;
    state.clusters.clear();
    state.nodes.clear();
    $('#health-list tbody').replaceChildren();
    $('#health-grid').replaceChildren();
    const dlg = $('#history-dialog');
    if (dlg.open) {
      if (typeof dlg.close === 'function') dlg.close(); else dlg.removeAttribute('open');
    }
    show(false);
    const e = $('#signin-error');
    e.textContent = errorText || '';
    e.hidden = !errorText;
    $('#token').focus();
  }

  function renderWho() {
    const me = state.me;
    $('#whoami').textContent = `${me.name} · ${t(`role_${me.role}`)}`;
    const note = $('#role-note');
    const hasView = VIEW_ROLES.includes(me.role);
    note.hidden = me.role === 'agent' || FIELD_ROLES.includes(me.role);
    note.textContent = hasView ? t('note_later') : t('note_no_view');
  }

  async function start() {
    state.me = await api('GET', '/api/v1/me'); // a failure here is the caller's: sign-in failed
    $('#signin-error').hidden = true;
    show(true);
    renderWho();
    const hasView = VIEW_ROLES.includes(state.me.role);
    $('#health-view').hidden = !hasView;
    $('#col-actions').hidden = !canAct();
    if (!hasView) return;
    $('#live').hidden = false;
    setLive(false);
    try { await loadAreas(); } catch (err) { if (err.status !== 401) sayError(err); }
    if (!state.me) return;
    loadHealth();
    connectStream();
  }

  async function onSignIn(ev) {
    ev.preventDefault();
    const input = $('#token');
    const value = input.value.trim();
    if (!value) { input.focus(); return; }
    sessionStorage.setItem(TOKEN_KEY, value);
    input.value = '';
    const button = $('#signin');
    button.disabled = true;
    try {
      await start();
      $('#main').focus();
    } catch (err) {
      signOut(err.status === 401 ? t('signin_bad') : t('signin_failed', { detail: err.message }));
    } finally {
      button.disabled = false;
    }
  }

  // ---- areas ---------------------------------------------------------------------------

  async function loadAreas() {
    const areas = await api('GET', '/api/v1/areas');
    state.areas = Array.isArray(areas) ? areas : [];
    state.areaByCode = new Map(state.areas.map((a) => [a.code, a]));
    state.children = new Map();
    for (const a of state.areas) {
      // A parent outside the caller's scope makes this area a root of what they see.
      const parent = a.parent_code && state.areaByCode.has(a.parent_code) ? a.parent_code : '';
      if (!state.children.has(parent)) state.children.set(parent, []);
      state.children.get(parent).push(a);
    }
    renderAreaOptions();
  }

  function renderAreaOptions() {
    const select = $('#area-filter');
    const current = select.value;
    const options = [el('option', { value: '', text: t('all_areas') })];
    const seen = new Set();
    const walk = (code, depth) => {
      for (const a of state.children.get(code) || []) {
        if (seen.has(a.code)) continue; // a cycle in bad data must not hang the page
        seen.add(a.code);
        options.push(el('option', { value: a.code, text: `${'\u2003'.repeat(depth)}${a.name}` }));
        walk(a.code, depth + 1);
      }
    };
    walk('', 0);
    select.replaceChildren(...options);
    select.value = state.areaByCode.has(current) ? current : '';
  }

  function subtree(code) {
    const out = new Set([code]);
    const stack = [code];
    while (stack.length) {
      for (const a of state.children.get(stack.pop()) || []) {
        if (!out.has(a.code)) { out.add(a.code); stack.push(a.code); }
      }
    }
    return out;
  }

  // ---- health list and grid ------------------------------------------------------------

  async function loadHealth() {
    const gen = ++state.loadGen;
    const area = $('#area-filter').value;
    const status = $('#status-filter').value;
    const q = new URLSearchParams();
    if (area) q.set('area', area);
    if (status) q.set('status', status);
    const view = $('#health-view');
    view.setAttribute('aria-busy', 'true');
    try {
      const data = await api('GET', `/api/v1/health${q.toString() ? `?${q}` : ''}`);
      if (gen !== state.loadGen) return; // a newer request superseded this one
      state.filter = { area, status };
      state.counts = { ...zeroCounts(), ...(data.counts || {}) };
      state.clusters = new Map((data.clusters || []).map((c) => [c.cluster_id, c]));
      renderHealth();
    } catch (err) {
      if (gen === state.loadGen && err.status !== 401) sayError(err);
    } finally {
      if (gen === state.loadGen) view.removeAttribute('aria-busy');
    }
  }

  function renderCounts() {
    for (const s of STATUSES) {
      $(`#counts [data-status="${s}"] .n`).textContent = String(Math.max(0, state.counts[s] || 0));
    }
  }

  function renderHealth() {
    renderCounts();
    state.nodes.clear();
    const rows = [];
    const tiles = [];
    for (const c of state.clusters.values()) {
      const row = rowFor(c);
      const tile = tileFor(c);
      state.nodes.set(c.cluster_id, { row, tile });
      rows.push(row);
      tiles.push(tile);
    }
    if (!rows.length) {
      const cols = canAct() ? 9 : 8;
      rows.push(el('tr', {}, el('td', { colSpan: cols, class: 'empty', text: t('empty') })));
      tiles.push(el('p', { class: 'empty', text: t('empty') }));
    }
    $('#health-list tbody').replaceChildren(...rows);
    $('#health-grid').replaceChildren(...tiles);
  }

  function rowFor(c) {
    return el('tr', { 'data-cluster-id': c.cluster_id, 'data-status': c.status },
      el('th', { scope: 'row', text: c.name }),
      el('td', { text: areaName(c.area_code) }),
      el('td', { class: 'c-status' }, badge(c.status)),
      el('td', { class: 'c-since' }, timeEl(c.since)),
      el('td', { class: 'c-cause', text: c.cause || '' }),
      el('td', { class: 'num', text: fmtNum(c.loss_pct) }),
      el('td', { class: 'num', text: fmtNum(c.jitter_ms) }),
      el('td', { class: 'c-volume' }, volumeCell(c)),
      canAct() ? el('td', { class: 'c-actions' },
        el('button', { type: 'button', text: t('test_tone'), title: t('test_tone_of', { name: c.name }),
          'aria-label': t('test_tone_of', { name: c.name }), onclick: (e) => testTone(c, e.currentTarget) }),
        el('button', { type: 'button', text: t('history'), title: t('history_of', { name: c.name }),
          'aria-label': t('history_of', { name: c.name }), onclick: (e) => showHistory(c, e.currentTarget) }))
        : null);
  }

  function tileFor(c) {
    return el('div', { class: 'tile', role: 'listitem', 'data-cluster-id': c.cluster_id, 'data-status': c.status },
      el('strong', { class: 't-name', text: c.name }),
      el('span', { class: 't-area', text: areaName(c.area_code) }),
      el('span', { class: 't-status' }, badge(c.status)),
      el('span', { class: 't-since' }, timeEl(c.since)),
      el('span', { class: 't-cause', text: c.cause || '' }));
  }

  // The configured volume if the server sends it, else what the agent last reported.
  const volumeOf = (c) => c.volume ?? c.agent?.volume ?? null;

  function volumeCell(c) {
    const v = volumeOf(c);
    if (!canAct()) return el('span', { text: v == null ? '—' : String(v) });
    const out = el('output', { class: 'vol-value', text: v == null ? '—' : String(v) });
    const input = el('input', { type: 'range', min: 0, max: 100, step: 1, value: v ?? 100 });
    let timer = 0;
    input.addEventListener('input', () => { out.textContent = input.value; });
    input.addEventListener('change', () => {
      clearTimeout(timer);
      timer = setTimeout(() => setVolume(c, input, out), VOLUME_SETTLE_MS);
    });
    return el('label', { class: 'vol' },
      el('span', { class: 'vh', text: t('volume_of', { name: c.name }) }), input, out);
  }

  async function setVolume(c, input, out) {
    const volume = Number(input.value);
    try {
      await api('PATCH', clusterPath(c.cluster_id), { volume });
      c.volume = volume;
      say(t('volume_set', { name: c.name, v: volume }));
    } catch (err) {
      const v = volumeOf(c);
      input.value = v ?? 100;
      out.textContent = v == null ? '—' : String(v);
      if (err.status !== 401) sayError(err);
    }
  }

  async function testTone(c, button) {
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true'); // not `disabled`: that would drop keyboard focus
    try {
      const r = await api('POST', `${clusterPath(c.cluster_id)}/test-tone`, {});
      say(t('tone_queued', { name: c.name, s: r?.heartbeat_interval_s ?? '?' }));
    } catch (err) {
      if (err.status !== 401) sayError(err);
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  async function showHistory(c, opener) {
    const dlg = $('#history-dialog');
    const body = $('#history-list tbody');
    const note = (text) => body.replaceChildren(el('tr', {}, el('td', { colSpan: 4, text })));
    $('#history-title').textContent = t('history_title', { name: c.name });
    note(t('loading'));
    state.historyOpener = opener;
    if (!dlg.open) {
      if (typeof dlg.showModal === 'function') dlg.showModal(); else dlg.setAttribute('open', '');
    }
    try {
      const items = await api('GET', `${clusterPath(c.cluster_id)}/health/history`);
      const list = (Array.isArray(items) ? items : []).sort((a, b) => b.seq - a.seq);
      if (!list.length) { note(t('history_empty')); return; }
      body.replaceChildren(...list.map((h) => el('tr', {},
        el('td', {}, timeEl(h.at)), el('td', {}, badge(h.from)), el('td', {}, badge(h.to)),
        el('td', { text: h.cause || '' }))));
    } catch (err) {
      if (err.status !== 401) note(t('error', { detail: err.message }));
    }
  }

  // ---- live transitions ----------------------------------------------------------------

  // Would the current filter list a cluster this page does not know about?
  function wouldList(ev) {
    const f = state.filter;
    if (f.status && ev.to !== f.status) return false;
    if (f.area && state.areas.length && !subtree(f.area).has(ev.area_code)) return false;
    return true;
  }

  function applyTransition(ev) {
    const c = state.clusters.get(ev.cluster_id);
    if (!c) {
      if (wouldList(ev)) {
        clearTimeout(state.refetchTimer); // a burst of new clusters costs one reload
        state.refetchTimer = setTimeout(loadHealth, 300);
      }
      return;
    }
    if (c.seq != null && ev.seq <= c.seq) return; // already applied (replay after reconnect)
    if (c.status in state.counts) state.counts[c.status] -= 1;
    const nodes = state.nodes.get(c.cluster_id);
    if (state.filter.status && ev.to !== state.filter.status) {
      // It left the filtered set: drop it rather than show a row that does not match.
      state.clusters.delete(c.cluster_id);
      state.nodes.delete(c.cluster_id);
      nodes?.row.remove();
      nodes?.tile.remove();
      if (!state.clusters.size) renderHealth(); else renderCounts();
      return;
    }
    Object.assign(c, { seq: ev.seq, status: ev.to, since: ev.at, cause: ev.cause });
    state.counts[ev.to] = (state.counts[ev.to] || 0) + 1;
    renderCounts();
    if (!nodes) return;
    for (const [n, prefix] of [[nodes.row, 'c'], [nodes.tile, 't']]) {
      n.dataset.status = c.status;
      $(`.${prefix}-status`, n).replaceChildren(badge(c.status));
      $(`.${prefix}-since`, n).replaceChildren(timeEl(c.since));
      $(`.${prefix}-cause`, n).textContent = c.cause || '';
      n.classList.remove('changed');
      void n.offsetWidth; // restart the highlight animation
      n.classList.add('changed');
    }
  }

  // Incremental text/event-stream parser: feed it decoded chunks; it calls
  // dispatch(type, data) for each complete event. Comment lines (`:`) are keep-alives.
  function sseParser(dispatch) {
    let buf = '';
    let type = '';
    let data = [];
    return (chunk) => {
      buf += chunk;
      for (;;) {
        const i = buf.search(/[\r\n]/);
        if (i < 0 || (buf[i] === '\r' && i === buf.length - 1)) break; // wait: may be \r\n
        const line = buf.slice(0, i);
        buf = buf.slice(i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length) dispatch(type || 'message', data.join('\n'));
          type = '';
          data = [];
        } else if (line[0] !== ':') {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value[0] === ' ') value = value.slice(1);
          if (field === 'event') type = value;
          else if (field === 'data') data.push(value);
        }
      }
    };
  }

  function onEvent(type, data) {
    if (type === 'lagged') { loadHealth(); return; } // the server dropped events for us
    if (type !== 'transition') return;
    let ev;
    try { ev = JSON.parse(data); } catch { return; }
    if (ev && ev.cluster_id && STATUSES.includes(ev.to)) applyTransition(ev);
  }

  function setLive(on) {
    state.live = on;
    const n = $('#live');
    n.dataset.state = on ? 'on' : 'off';
    n.textContent = t(on ? 'live_on' : 'live_off');
  }

  function stopStream() {
    clearTimeout(state.retryTimer);
    if (state.stream) state.stream.abort();
    state.stream = null;
    state.backoff = BACKOFF_MIN_MS;
    setLive(false);
  }

  async function connectStream() {
    stopStream();
    const ctl = new AbortController();
    state.stream = ctl;
    let healthy = false;
    let opened = 0;
    try {
      const res = await request('GET', '/api/v1/health/events', undefined,
        { signal: ctl.signal, accept: 'text/event-stream' });
      if (!res.body) throw new Error('no stream body');
      opened = Date.now();
      setLive(true);
      loadHealth(); // catch up on whatever changed while we were not listening
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const feed = sseParser(onEvent);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        healthy = true;
        feed(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      if (ctl.signal.aborted || err.status === 401) return; // signed out or replaced
    }
    if (state.stream !== ctl) return;
    setLive(false);
    if (healthy || (opened && Date.now() - opened > HEALTHY_STREAM_MS)) state.backoff = BACKOFF_MIN_MS;
    const delay = state.backoff;
    state.backoff = Math.min(delay * 2, BACKOFF_MAX_MS);
    state.retryTimer = setTimeout(() => { if (state.stream === ctl) connectStream(); }, delay);
  }

  // ---- wiring --------------------------------------------------------------------------

  function init() {
    state.lang = local.get(LANG_KEY) === 'en' ? 'en' : 'vi';
    applyStatic();
    $('#lang').addEventListener('click', switchLang);
    $('#signin-form').addEventListener('submit', onSignIn);
    $('#signout').addEventListener('click', () => signOut());
    $('#filters').addEventListener('submit', (e) => { e.preventDefault(); loadHealth(); });
    $('#area-filter').addEventListener('change', loadHealth);
    $('#status-filter').addEventListener('change', loadHealth);
    $('#history-dialog').addEventListener('close', () => state.historyOpener?.focus());
    if (token()) {
      start().catch((err) => signOut(err.status === 401 ? t('session_expired')
        : t('signin_failed', { detail: err.message })));
    } else {
      show(false);
    }
  }

  init();
})();
