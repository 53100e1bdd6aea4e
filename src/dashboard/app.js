// loaxa dashboard: sign-in, then one view per task, shown by role: the officer's library,
// campaigns and as-run report, the operator's emergency console and the technician's
// fleet health. Plain ES2020, no build step, no network beyond this server (government
// intranets), nothing inline (the page's CSP forbids it). The token lives in
// sessionStorage only and travels in the Authorization header, never in a URL, never in
// the console.
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
      note_no_view: 'Vai trò này chưa có màn hình nào.',
      tabs_label: 'Chức năng', tab_library: 'Thông báo', tab_campaigns: 'Lịch phát',
      tab_report: 'Báo cáo', tab_emergency: 'Khẩn cấp', tab_health: 'Cụm loa',
      // library and upload
      library_title: 'Thư viện thông báo',
      drop_hint: 'Kéo và thả tệp âm thanh vào đây, hoặc chọn tệp bên dưới.',
      drop_now: 'Thả tệp để chọn.',
      file_label: 'Tệp âm thanh (MP3, M4A, WAV, FLAC, OGG)',
      title_label: 'Tiêu đề', topic_label: 'Chủ đề', audio_label: 'Thông báo phát',
      topic_hint: 'Báo cáo phát sóng cộng số phút theo chủ đề.',
      upload: 'Tải lên', upload_progress: 'Tiến độ tải lên', chosen: 'Đã chọn: {name} ({size})',
      no_file: 'Hãy chọn hoặc thả một tệp âm thanh.',
      uploading: 'Đang tải lên và phân tích…',
      upload_refused: 'Tệp bị từ chối: {detail}',
      upload_done: 'Đã tải lên «{title}».', duration: 'Thời lượng', loudness: 'Độ lớn',
      loudness_note: 'khi phát sẽ được chuẩn hóa về cùng một độ lớn',
      audio_list_title: 'Các thông báo đã tải lên', col_title: 'Tiêu đề', col_topic: 'Chủ đề',
      col_duration: 'Thời lượng', col_loudness: 'Độ lớn (LUFS)', col_format: 'Định dạng',
      col_uploaded: 'Tải lên lúc', library_empty: 'Chưa có thông báo nào.',
      pick_audio: '— Chọn thông báo —',
      // campaigns
      campaigns_title: 'Lịch phát', campaign_new: 'Chiến dịch mới',
      areas_legend: 'Khu vực phát', areas_hint: 'Chọn một khu vực là chọn mọi nơi bên dưới nó.',
      areas_empty: 'Chưa có khu vực nào.',
      days_legend: 'Ngày trong tuần', days_weekdays: 'Thứ Hai – Thứ Sáu', days_all: 'Cả tuần',
      times_legend: 'Giờ phát (giờ:phút, 24 giờ)', add_time: 'Thêm giờ phát',
      time_n: 'Giờ phát {n}', remove_time: 'Bỏ giờ phát {n}',
      window_legend: 'Thời gian hiệu lực (không bắt buộc)', starts_label: 'Từ ngày', ends_label: 'Đến ngày',
      preview_title: 'Xem trước', cron_made: 'Lịch (cron) được tạo:',
      preview_need: 'Chọn ít nhất một ngày và một giờ phát hợp lệ để xem các lần phát.',
      preview_next: '{n} lần phát tới (giờ {tz}):', preview_none: 'Lịch này không có lần phát nào trong năm tới.',
      preview_loading: 'Đang tính các lần phát…',
      quiet_clash: 'Có lần phát rơi vào giờ yên tĩnh ({quiet}), sẽ bị từ chối: {times}',
      bad_time: 'Giờ phát «{value}» không hợp lệ (dạng 06:30).',
      campaign_save: 'Lưu chiến dịch', campaign_saving: 'Đang lưu…',
      campaign_saved: 'Đã lưu chiến dịch «{title}». Trạng thái: {status}.',
      campaign_conflicts: 'Trùng giờ trên cùng cụm loa với: {list}.',
      need_title: 'Nhập tiêu đề.', need_topic: 'Nhập chủ đề.', need_audio: 'Chọn thông báo phát.',
      need_areas: 'Chọn ít nhất một khu vực.', need_days: 'Chọn ít nhất một ngày.',
      need_times: 'Nhập ít nhất một giờ phát.',
      campaign_refused: 'Không lưu được: {detail}',
      campaign_list_title: 'Các chiến dịch', col_schedule: 'Lịch (cron)', col_next: 'Lần phát tới',
      campaigns_empty: 'Chưa có chiến dịch nào.',
      approval_pending: 'Chờ duyệt', approval_approved: 'Đã duyệt', approval_paused: 'Tạm dừng',
      approve: 'Duyệt', approve_of: 'Duyệt chiến dịch {title}', approved_msg: 'Đã duyệt «{title}».',
      week_title: 'Lịch tuần', week_prev: '← Tuần trước', week_next: 'Tuần sau →',
      week_label: 'Tuần {from} – {to}', week_nothing: 'Không có gì.',
      n_clusters: '{n} cụm loa',
      dow_1: 'Thứ Hai', dow_2: 'Thứ Ba', dow_3: 'Thứ Tư', dow_4: 'Thứ Năm', dow_5: 'Thứ Sáu',
      dow_6: 'Thứ Bảy', dow_0: 'Chủ Nhật',
      // report
      report_title: 'Báo cáo phát sóng', report_run: 'Xem báo cáo',
      report_by_topic: 'Số phút đã phát theo chủ đề', report_by_area: 'Số phút đã phát theo khu vực',
      report_total: 'Tổng cộng {m} phút đã phát từ {from} đến {to}.',
      report_empty: 'Không có gì được phát trong khoảng này.',
      col_group_topic: 'Chủ đề', col_group_area: 'Khu vực', col_chart: 'Biểu đồ', col_minutes: 'Số phút',
      col_airings: 'Lượt phát', col_clusters: 'Cụm loa', no_topic: '(không có chủ đề)',
      csv_topic: 'Tải CSV (theo chủ đề)', csv_area: 'Tải CSV (theo khu vực)',
      csv_ready: 'Đã tạo tệp {name}.', bad_range: 'Ngày kết thúc phải từ ngày bắt đầu trở đi.',
      // emergency
      emergency_title: 'Phát khẩn cấp',
      emergency_hint: 'Bản tin khẩn cấp cắt ngang mọi chương trình trên mọi cụm loa thuộc khu vực đã chọn, kể cả trong giờ yên tĩnh.',
      emergency_step_areas: '1. Khu vực nhận bản tin', emergency_step_message: '2. Bản tin',
      emergency_step_repeat: '3. Số lần phát', emergency_pick: 'Chọn từ thư viện',
      emergency_or_upload: 'Hoặc tải lên bản tin mới:', repeat_label: 'Số lần phát (1–10)',
      emergency_arm: 'Phát khẩn cấp…', emergency_confirm_title: 'Xác nhận phát khẩn cấp',
      emergency_confirm_hint: 'Kiểm tra lại rồi bấm nút xác nhận. Bản tin phát ngay lập tức.',
      emergency_confirm: 'Xác nhận: phát ngay', emergency_back: 'Quay lại, không phát',
      emergency_summary_areas: 'Khu vực', emergency_summary_message: 'Bản tin',
      emergency_summary_repeat: 'Số lần phát', emergency_summary_clusters: 'Số cụm loa sẽ phát',
      need_repeat: 'Số lần phát phải từ 1 đến 10.',
      emergency_refused: 'Không phát được: {detail}',
      emergency_live_title: 'Đang phát khẩn cấp', emergency_overall: 'Trạng thái chung:',
      col_packets: 'Gói đã gửi', emergency_cancel: 'Dừng phát khẩn cấp',
      emergency_new: 'Bản tin khẩn cấp mới', emergency_started: 'Đã phát lệnh khẩn cấp.',
      emergency_cancelled: 'Đã dừng phát khẩn cấp.',
      run_queued: 'Đang chờ', run_playing: 'Đang phát', run_done: 'Đã phát xong',
      run_cancelled: 'Đã dừng', run_failed: 'Thất bại', run_interrupted: 'Bị ngắt',
      run_unreachable: 'Không liên lạc được', run_late: 'Phát trễ', run_missed: 'Bỏ lỡ',
      // health
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
      note_no_view: 'There is no view for this role yet.',
      tabs_label: 'Views', tab_library: 'Announcements', tab_campaigns: 'Calendar',
      tab_report: 'Report', tab_emergency: 'Emergency', tab_health: 'Clusters',
      library_title: 'Announcement library',
      drop_hint: 'Drag and drop an audio file here, or choose one below.',
      drop_now: 'Drop the file to choose it.',
      file_label: 'Audio file (MP3, M4A, WAV, FLAC, OGG)',
      title_label: 'Title', topic_label: 'Topic', audio_label: 'Announcement to air',
      topic_hint: 'The as-run report adds up minutes per topic.',
      upload: 'Upload', upload_progress: 'Upload progress', chosen: 'Chosen: {name} ({size})',
      no_file: 'Choose or drop an audio file.',
      uploading: 'Uploading and analysing…',
      upload_refused: 'File refused: {detail}',
      upload_done: 'Uploaded “{title}”.', duration: 'Duration', loudness: 'Loudness',
      loudness_note: 'airing brings every announcement to one loudness',
      audio_list_title: 'Uploaded announcements', col_title: 'Title', col_topic: 'Topic',
      col_duration: 'Duration', col_loudness: 'Loudness (LUFS)', col_format: 'Format',
      col_uploaded: 'Uploaded', library_empty: 'No announcements yet.',
      pick_audio: '— Choose an announcement —',
      campaigns_title: 'Broadcast calendar', campaign_new: 'New campaign',
      areas_legend: 'Areas', areas_hint: 'Choosing an area chooses everything below it.',
      areas_empty: 'No areas yet.',
      days_legend: 'Days of the week', days_weekdays: 'Monday – Friday', days_all: 'Every day',
      times_legend: 'Times (hours:minutes, 24-hour)', add_time: 'Add a time',
      time_n: 'Time {n}', remove_time: 'Remove time {n}',
      window_legend: 'Date range (optional)', starts_label: 'From', ends_label: 'To',
      preview_title: 'Preview', cron_made: 'Cron made:',
      preview_need: 'Pick at least one day and one valid time to see the airings.',
      preview_next: 'Next {n} airings ({tz} time):', preview_none: 'This schedule has no airing within a year.',
      preview_loading: 'Working out the airings…',
      quiet_clash: 'Some airings fall in quiet hours ({quiet}) and would be refused: {times}',
      bad_time: 'Time “{value}” is not valid (use 06:30).',
      campaign_save: 'Save campaign', campaign_saving: 'Saving…',
      campaign_saved: 'Saved campaign “{title}”. Status: {status}.',
      campaign_conflicts: 'Overlaps on the same clusters with: {list}.',
      need_title: 'Enter a title.', need_topic: 'Enter a topic.', need_audio: 'Choose the announcement.',
      need_areas: 'Choose at least one area.', need_days: 'Choose at least one day.',
      need_times: 'Enter at least one time.',
      campaign_refused: 'Not saved: {detail}',
      campaign_list_title: 'Campaigns', col_schedule: 'Schedule (cron)', col_next: 'Next airings',
      campaigns_empty: 'No campaigns yet.',
      approval_pending: 'Pending approval', approval_approved: 'Approved', approval_paused: 'Paused',
      approve: 'Approve', approve_of: 'Approve campaign {title}', approved_msg: 'Approved “{title}”.',
      week_title: 'Week calendar', week_prev: '← Previous week', week_next: 'Next week →',
      week_label: 'Week {from} – {to}', week_nothing: 'Nothing.',
      n_clusters: '{n} clusters',
      dow_1: 'Monday', dow_2: 'Tuesday', dow_3: 'Wednesday', dow_4: 'Thursday', dow_5: 'Friday',
      dow_6: 'Saturday', dow_0: 'Sunday',
      report_title: 'As-run report', report_run: 'Show report',
      report_by_topic: 'Minutes aired per topic', report_by_area: 'Minutes aired per area',
      report_total: '{m} minutes aired in total from {from} to {to}.',
      report_empty: 'Nothing aired in this period.',
      col_group_topic: 'Topic', col_group_area: 'Area', col_chart: 'Chart', col_minutes: 'Minutes',
      col_airings: 'Airings', col_clusters: 'Clusters', no_topic: '(no topic)',
      csv_topic: 'Download CSV (per topic)', csv_area: 'Download CSV (per area)',
      csv_ready: 'Created {name}.', bad_range: 'The end date must not come before the start date.',
      emergency_title: 'Emergency broadcast',
      emergency_hint: 'An emergency cuts in over everything on every cluster in the chosen areas, quiet hours included.',
      emergency_step_areas: '1. Areas to reach', emergency_step_message: '2. Message',
      emergency_step_repeat: '3. Repeats', emergency_pick: 'Choose from the library',
      emergency_or_upload: 'Or upload a new message:', repeat_label: 'Times to air (1–10)',
      emergency_arm: 'Broadcast emergency…', emergency_confirm_title: 'Confirm the emergency broadcast',
      emergency_confirm_hint: 'Check, then press the confirm button. It airs at once.',
      emergency_confirm: 'Confirm: broadcast now', emergency_back: 'Go back, do not broadcast',
      emergency_summary_areas: 'Areas', emergency_summary_message: 'Message',
      emergency_summary_repeat: 'Times to air', emergency_summary_clusters: 'Clusters that will play',
      need_repeat: 'Times to air must be 1 to 10.',
      emergency_refused: 'Not broadcast: {detail}',
      emergency_live_title: 'Emergency on air', emergency_overall: 'Overall status:',
      col_packets: 'Packets sent', emergency_cancel: 'Stop the emergency',
      emergency_new: 'New emergency', emergency_started: 'Emergency broadcast started.',
      emergency_cancelled: 'Emergency stopped.',
      run_queued: 'Queued', run_playing: 'Playing', run_done: 'Done',
      run_cancelled: 'Cancelled', run_failed: 'Failed', run_interrupted: 'Interrupted',
      run_unreachable: 'Unreachable', run_late: 'Late', run_missed: 'Missed',
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
  // Which roles see which view (the server checks again: this only hides what would 403).
  const VIEWS = {
    library: ['admin', 'operator', 'officer'],
    campaigns: ['admin', 'operator', 'officer'],
    report: ['admin', 'operator', 'officer'],
    emergency: ['admin', 'operator'],
    health: ['admin', 'operator', 'officer', 'technician'],
  };
  // The view a role lands on: its main task.
  const HOME = { officer: 'library', operator: 'emergency', technician: 'health', admin: 'health' };
  const FIELD_ROLES = ['technician', 'admin'];
  const ICONS = { online: '●', degraded: '▲', offline: '✕', unknown: '?' };
  // Broadcast states that never change again: polling stops there.
  const FINAL_RUNS = ['done', 'cancelled', 'failed', 'interrupted', 'late', 'missed'];
  // Days in the order a Vietnamese week is read (Monday first); cron numbers Sunday 0.
  const WEEK_DAYS = [1, 2, 3, 4, 5, 6, 0];
  const DEFAULT_TZ = 'Asia/Ho_Chi_Minh';
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  // A stream that stayed up this long was healthy, even if it carried nothing.
  const HEALTHY_STREAM_MS = 5000;
  // Arrow keys fire `change` once per step; wait for the user to settle before PATCHing.
  const VOLUME_SETTLE_MS = 400;
  // Typing a time fires `input` per key; one preview request once the user pauses.
  const PREVIEW_SETTLE_MS = 300;
  const PREVIEW_COUNT = 8;
  // An operator watching an emergency wants each cluster's state within a second.
  const EMERGENCY_POLL_MS = 1000;

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const zeroCounts = () => ({ online: 0, degraded: 0, offline: 0, unknown: 0 });
  const state = {
    lang: 'vi', me: null, tz: DEFAULT_TZ, view: '',
    areas: [], areaByCode: new Map(), children: new Map(),
    filter: { area: '', status: '' }, counts: zeroCounts(), clusters: new Map(), nodes: new Map(),
    loadGen: 0, stream: null, live: false, backoff: BACKOFF_MIN_MS, retryTimer: 0, refetchTimer: 0,
    messageTimer: 0, historyOpener: null,
    audio: [], uploadFile: null, lastUpload: null,
    campaigns: [], preview: null, previewGen: 0, previewTimer: 0, timeSeq: 0,
    week: '', weekGen: 0, weekItems: [],
    report: null, reportGen: 0,
    emergency: null, emergencyView: null, emergencyTimer: 0, emergencyGen: 0, armed: null,
    trees: {},
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

  // SVG needs its own namespace; attributes (not style) so the CSP has nothing to block.
  function svg(tag, attrs = {}, ...kids) {
    const n = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    n.append(...kids);
    return n;
  }

  const local = {
    get(k) { try { return localStorage.getItem(k); } catch { return null; } },
    set(k, v) { try { localStorage.setItem(k, v); } catch { /* private mode: not remembered */ } },
  };
  const token = () => sessionStorage.getItem(TOKEN_KEY);
  const locale = () => (state.lang === 'vi' ? 'vi-VN' : 'en-GB');
  const canAct = () => !!state.me && FIELD_ROLES.includes(state.me.role);
  const mayView = (view) => !!state.me && VIEWS[view].includes(state.me.role);
  const clusterPath = (id) => `/api/v1/clusters/${encodeURIComponent(id)}`;

  // Formatters are costly to build; one per (language, timezone, kind).
  const fmtCache = new Map();
  function formatter(kind, options) {
    const key = `${state.lang}|${state.tz}|${kind}`;
    if (!fmtCache.has(key)) {
      fmtCache.set(key, new Intl.DateTimeFormat(locale(), { timeZone: state.tz, hourCycle: 'h23', ...options }));
    }
    return fmtCache.get(key);
  }
  function fmtWith(kind, options, iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return formatter(kind, options).format(d);
  }
  const fmtTime = (iso) => fmtWith('full', {
    day: '2-digit', month: '2-digit', year: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }, iso);
  const fmtAiring = (iso) => fmtWith('airing', {
    weekday: 'long', day: '2-digit', month: '2-digit', year: 'numeric', hour: '2-digit', minute: '2-digit',
  }, iso);
  const fmtShort = (iso) => fmtWith('short', {
    weekday: 'short', day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit',
  }, iso);
  const fmtClock = (iso) => fmtWith('clock', { hour: '2-digit', minute: '2-digit' }, iso);
  const fmtNum = (v) => (v == null ? '—'
    : new Intl.NumberFormat(locale(), { maximumFractionDigits: 2 }).format(v));
  const timeEl = (iso) => el('time', { dateTime: iso || '', text: fmtTime(iso) });
  const statusText = (s) => t(`status_${STATUSES.includes(s) ? s : 'unknown'}`);
  const badge = (s) => el('span', { class: 'badge', 'data-status': s },
    el('span', { class: 'icon', 'aria-hidden': 'true', text: ICONS[s] || '?' }), ` ${statusText(s)}`);
  // A broadcast's or campaign's state: text always, colour only helps.
  const runBadge = (s, key = `run_${s}`) => el('span', { class: 'badge', 'data-status': s, text: t(key) });
  const areaName = (code) => state.areaByCode.get(code)?.name ?? code;

  function fmtDuration(ms) {
    if (ms == null) return '—';
    const s = Math.round(ms / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }
  function fmtSize(bytes) {
    const mb = bytes / (1024 * 1024);
    return mb >= 1 ? `${fmtNum(Math.round(mb * 10) / 10)} MB` : `${fmtNum(Math.ceil(bytes / 1024))} KB`;
  }

  // ---- calendar dates in the site's timezone (whatever the browser's own is) -------------

  // The wall-clock fields of an instant in the site's timezone, as numbers. A fixed
  // locale with Latin digits: only the parts matter, not how a language writes them.
  function partsAt(ms) {
    const key = `parts|${state.tz}`;
    if (!fmtCache.has(key)) {
      fmtCache.set(key, new Intl.DateTimeFormat('en-GB', {
        timeZone: state.tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit',
      }));
    }
    const parts = {};
    for (const p of fmtCache.get(key).formatToParts(new Date(ms))) parts[p.type] = Number(p.value);
    return parts;
  }
  // `YYYY-MM-DD` of an instant in the site's timezone.
  function ymdParts(ms) {
    const p = partsAt(ms);
    return `${p.year}-${String(p.month).padStart(2, '0')}-${String(p.day).padStart(2, '0')}`;
  }
  // The site's UTC offset at an instant, in ms.
  function offsetAt(ms) {
    const p = partsAt(ms);
    const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
    return asUtc - (ms - (((ms % 1000) + 1000) % 1000));
  }
  // The instant a local date begins in the site's timezone (twice: the offset may differ
  // between the guess and the answer around a clock change).
  function startOfDay(ymd) {
    const [y, m, d] = ymd.split('-').map(Number);
    const guess = Date.UTC(y, m - 1, d);
    let at = guess - offsetAt(guess);
    at = guess - offsetAt(at);
    return at;
  }
  function addDays(ymd, n) {
    const [y, m, d] = ymd.split('-').map(Number);
    return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
  }
  // 0 = Sunday, as cron counts.
  function dowOf(ymd) {
    const [y, m, d] = ymd.split('-').map(Number);
    return new Date(Date.UTC(y, m - 1, d)).getUTCDay();
  }
  const today = () => ymdParts(Date.now());
  const mondayOf = (ymd) => addDays(ymd, -((dowOf(ymd) + 6) % 7));
  const fmtDate = (ymd) => fmtWith('date', { day: '2-digit', month: '2-digit', year: 'numeric' },
    new Date(startOfDay(ymd)).toISOString());

  function say(text, kind = 'info') {
    const m = $('#message');
    m.textContent = text;
    m.dataset.kind = kind;
    clearTimeout(state.messageTimer);
    if (kind === 'info') state.messageTimer = setTimeout(() => { m.textContent = ''; }, 10000);
  }
  const sayError = (err) => say(t('error', { detail: err.message }), 'error');

  // An error in a form's own alert element, next to what it is about.
  function showError(id, text) {
    const n = $(id);
    n.textContent = text;
    n.hidden = !text;
  }
  const clearError = (id) => showError(id, '');

  // ---- API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, errors = []) { super(detail); this.status = status; this.errors = errors; }
  }

  // The problem+json answer's `detail` (it names the field and the reason), else the status.
  async function problemOf(res) {
    try {
      const p = await res.json();
      return new ApiError(res.status, p.detail || p.title || `HTTP ${res.status}`,
        Array.isArray(p.errors) ? p.errors : []);
    } catch {
      return new ApiError(res.status, `HTTP ${res.status}`);
    }
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
    if (!res.ok) throw await problemOf(res);
    return res;
  }

  async function api(method, path, body) {
    const res = await request(method, path, body);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  const query = (params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : '';
  };

  // Uploads with XMLHttpRequest, not fetch: only it reports upload progress, which a
  // commune's slow link makes worth showing.
  function uploadAudio(file, fields, progress) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
      form.append('file', file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/api/v1/audio');
      xhr.setRequestHeader('Authorization', `Bearer ${token() || ''}`);
      xhr.setRequestHeader('Accept', 'application/json');
      progress.value = 0;
      progress.hidden = false;
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) progress.value = Math.round((e.loaded / e.total) * 100);
      });
      xhr.addEventListener('load', () => {
        progress.hidden = true;
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        if (xhr.status === 201 && body) { resolve(body); return; }
        if (xhr.status === 401) {
          signOut(t('session_expired'));
          reject(new ApiError(401, t('session_expired')));
          return;
        }
        reject(new ApiError(xhr.status, body?.detail || body?.title || `HTTP ${xhr.status}`,
          Array.isArray(body?.errors) ? body.errors : []));
      });
      xhr.addEventListener('error', () => {
        progress.hidden = true;
        reject(new ApiError(0, t('network_error')));
      });
      xhr.send(form);
    });
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
    renderDays();
    relabelTimes();
    if (!state.me) return;
    renderWho();
    renderAreaOptions();
    renderHealth();
    setLive(state.live);
    renderAudio();
    renderCampaigns();
    renderPreview();
    renderWeek();
    renderReport();
    renderEmergency();
    if (state.lastUpload) renderUploadResult(state.lastUpload);
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
    stopEmergencyPoll();
    clearTimeout(state.refetchTimer);
    clearTimeout(state.previewTimer);
    state.me = null;
    state.clusters.clear();
    state.nodes.clear();
    state.audio = [];
    state.campaigns = [];
    state.emergency = null;
    state.emergencyView = null;
    state.report = null;
    state.lastUpload = null;
    $('#health-list tbody').replaceChildren();
    $('#health-grid').replaceChildren();
    resetViews();
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

  // What one user left on screen must not greet the next one.
  function resetViews() {
    disarm();
    $('#emergency-live').hidden = true;
    $('#emergency-form').hidden = false;
    $('#emergency-clusters tbody').replaceChildren();
    $('#upload-result').hidden = true;
    $('#campaign-saved').hidden = true;
    $('#report-topic-chart').replaceChildren();
    $('#report-area-chart').replaceChildren();
    $('#report-total').textContent = '';
    $('#report-csv-link').hidden = true;
    for (const id of ['#upload-error', '#campaign-error', '#emergency-error', '#emergency-upload-error']) clearError(id);
    for (const f of ['#upload-form', '#campaign-form', '#emergency-form']) $(f).reset();
    state.trees.campaign.clear();
    state.trees.emergency.clear();
    state.uploadFile = null;
    $('#upload-chosen').textContent = '';
    state.week = '';
    state.preview = null;
    renderPreview();
  }

  function renderWho() {
    const me = state.me;
    $('#whoami').textContent = `${me.name} · ${t(`role_${me.role}`)}`;
    const note = $('#role-note');
    note.hidden = Object.keys(VIEWS).some(mayView);
    note.textContent = t('note_no_view');
  }

  async function start() {
    state.me = await api('GET', '/api/v1/me'); // a failure here is the caller's: sign-in failed
    state.tz = state.me.timezone || DEFAULT_TZ;
    fmtCache.clear();
    $('#signin-error').hidden = true;
    show(true);
    renderWho();
    $('#col-actions').hidden = !canAct();
    const views = Object.keys(VIEWS).filter(mayView);
    for (const b of $$('[role="tab"]')) b.hidden = !views.includes(b.dataset.view);
    if (!views.length) {
      for (const v of Object.keys(VIEWS)) $(`#${v}-view`).hidden = true;
      return;
    }
    try { await loadAreas(); } catch (err) { if (err.status !== 401) sayError(err); }
    if (!state.me) return;
    // A reload keeps the view the user was on (the address says which).
    const asked = location.hash.slice(1);
    showView(views.includes(asked) ? asked : (HOME[state.me.role] || views[0]), false);
    if (mayView('health')) {
      $('#live').hidden = false;
      setLive(false);
      loadHealth();
      connectStream();
    }
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

  // ---- views (tabs) ----------------------------------------------------------------------

  const LOADERS = {
    library: () => loadAudio(),
    campaigns: () => { loadAudio(); loadCampaigns(); schedulePreview(); },
    report: () => { if (!state.report) runReport(); },
    emergency: () => { loadAudio(); resumeEmergency(); },
    health: () => {},
  };

  function showView(view, focus = true) {
    if (!mayView(view)) return;
    state.view = view;
    for (const b of $$('[role="tab"]')) {
      const on = b.dataset.view === view;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1; // roving tabindex: Tab enters the bar once, arrows move in it
    }
    for (const v of Object.keys(VIEWS)) $(`#${v}-view`).hidden = v !== view;
    history.replaceState(null, '', `#${view}`);
    if (focus) $(`#tab-${view}`).focus();
    const load = LOADERS[view]();
    if (load && typeof load.catch === 'function') load.catch((err) => { if (err.status !== 401) sayError(err); });
  }

  function onTabKey(ev) {
    const tabs = $$('[role="tab"]').filter((b) => !b.hidden);
    const i = tabs.indexOf(ev.target);
    if (i < 0) return;
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    showView(tabs[(next + tabs.length) % tabs.length].dataset.view);
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
    state.trees.campaign.build();
    state.trees.emergency.build();
  }

  // Depth-first over the visible tree; `seen` keeps a cycle in bad data from hanging the page.
  // Starts at the root of the user's scope: areas outside it would only answer 403.
  function walkAreas(visit) {
    const seen = new Set();
    const walk = (code, depth) => {
      for (const a of state.children.get(code) || []) {
        if (seen.has(a.code)) continue;
        seen.add(a.code);
        visit(a, depth);
        walk(a.code, depth + 1);
      }
    };
    const root = state.me?.area_code && state.areaByCode.get(state.me.area_code);
    if (root) {
      seen.add(root.code);
      visit(root, 0);
      walk(root.code, 1);
    } else {
      walk('', 0);
    }
  }

  function renderAreaOptions() {
    for (const select of [$('#area-filter'), $('#report-area')]) {
      const current = select.value;
      const options = [el('option', { value: '', text: t('all_areas') })];
      walkAreas((a, depth) => {
        options.push(el('option', { value: a.code, text: `${'\u2003'.repeat(depth)}${a.name}` }));
      });
      select.replaceChildren(...options);
      select.value = state.areaByCode.has(current) ? current : '';
    }
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

  // The visible ancestors of an area, nearest first.
  function ancestors(code) {
    const out = [];
    let a = state.areaByCode.get(code);
    while (a && a.parent_code && state.areaByCode.has(a.parent_code) && !out.includes(a.parent_code)) {
      out.push(a.parent_code);
      a = state.areaByCode.get(a.parent_code);
    }
    return out;
  }

  // A tree of checkboxes to pick areas. An area includes everything below it (the server
  // expands it so), so a ticked area shows its descendants ticked and fixed, and only
  // the topmost ticked areas are sent.
  function areaTree(container, prefix, onChange) {
    const chosen = new Set();
    const boxes = new Map();

    function sync() {
      for (const [code, box] of boxes) {
        const implied = ancestors(code).some((a) => chosen.has(a));
        box.disabled = implied;
        box.checked = implied || chosen.has(code);
        box.closest('li').classList.toggle('implied', implied);
      }
    }

    function build() {
      boxes.clear();
      for (const code of [...chosen]) if (!state.areaByCode.has(code)) chosen.delete(code);
      const walkGuard = new Set();
      const list = (parent) => {
        const kids = state.children.get(parent) || [];
        if (!kids.length) return null;
        return el('ul', {}, kids.map(item));
      };
      const item = (a) => {
        const id = `${prefix}-area-${a.code}`;
        const box = el('input', { type: 'checkbox', id, value: a.code, onchange: () => {
          if (box.checked) chosen.add(a.code); else chosen.delete(a.code);
          sync();
          onChange();
        } });
        boxes.set(a.code, box);
        return el('li', {},
          el('span', { class: 'check' }, box,
            el('label', { htmlFor: id }, a.name, a.kind ? el('span', { class: 'kind', text: ` · ${a.kind}` }) : null)),
          // A cycle in bad data: the walk below never revisits a code.
          walkGuard.has(a.code) ? null : (walkGuard.add(a.code), list(a.code)));
      };
      // Only what the user may act on: their scope's root, or every top area.
      const root = state.me?.area_code && state.areaByCode.get(state.me.area_code);
      const tree = root ? el('ul', {}, item(root)) : list('');
      container.replaceChildren(tree || el('p', { class: 'empty', text: t('areas_empty') }));
      sync();
    }

    return {
      build,
      // The topmost ticked areas: a descendant of one adds nothing.
      selected: () => [...chosen].filter((c) => !ancestors(c).some((a) => chosen.has(a))),
      clear() { chosen.clear(); sync(); },
    };
  }

  // ---- library and upload --------------------------------------------------------------

  async function loadAudio() {
    const list = await api('GET', '/api/v1/audio');
    // Newest first: what was just uploaded is what the user wants next.
    state.audio = (Array.isArray(list) ? list : [])
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    renderAudio();
  }

  function renderAudio() {
    const rows = state.audio.map((a) => el('tr', { 'data-audio-id': a.id },
      el('th', { scope: 'row', text: a.title }),
      el('td', { text: a.topic || '' }),
      el('td', { class: 'num', text: fmtDuration(a.duration_ms) }),
      el('td', { class: 'num', text: fmtNum(a.loudness_lufs) }),
      el('td', { text: [a.format, a.codec].filter(Boolean).join(' / ') }),
      el('td', {}, timeEl(a.created_at))));
    if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 6, class: 'empty', text: t('library_empty') })));
    $('#library-list tbody').replaceChildren(...rows);
    const topics = [...new Set(state.audio.map((a) => a.topic).filter(Boolean))].sort();
    $('#topic-list').replaceChildren(...topics.map((v) => el('option', { value: v })));
    fillAudioSelect($('#campaign-audio'));
    fillAudioSelect($('#emergency-audio'));
  }

  function fillAudioSelect(select) {
    const current = select.value;
    select.replaceChildren(el('option', { value: '', text: t('pick_audio') }),
      ...state.audio.map((a) => el('option', { value: a.id,
        text: `${a.title} (${fmtDuration(a.duration_ms)})` })));
    select.value = state.audio.some((a) => a.id === current) ? current : '';
  }

  function chooseFile(file) {
    state.uploadFile = file || null;
    $('#upload-chosen').textContent = file ? t('chosen', { name: file.name, size: fmtSize(file.size) }) : '';
    // The file's name is a better default title than none.
    const title = $('#upload-title');
    if (file && !title.value.trim()) title.value = file.name.replace(/\.[^.]+$/, '');
    clearError('#upload-error');
  }

  function wireDropZone() {
    const zone = $('#drop-zone');
    const hint = $('.drop-hint', zone);
    const over = (on) => {
      zone.classList.toggle('over', on);
      hint.textContent = t(on ? 'drop_now' : 'drop_hint');
    };
    zone.addEventListener('dragover', (e) => { e.preventDefault(); over(true); });
    zone.addEventListener('dragleave', (e) => { if (!zone.contains(e.relatedTarget)) over(false); });
    zone.addEventListener('drop', (e) => {
      e.preventDefault();
      over(false);
      const file = e.dataTransfer?.files?.[0];
      if (file) chooseFile(file);
    });
    $('#upload-file').addEventListener('change', (e) => chooseFile(e.target.files[0]));
  }

  async function onUpload(ev) {
    ev.preventDefault();
    const file = state.uploadFile;
    const button = $('#upload-submit');
    if (!file) { showError('#upload-error', t('no_file')); $('#upload-file').focus(); return; }
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    clearError('#upload-error');
    $('#upload-result').hidden = true;
    say(t('uploading'));
    try {
      const audio = await uploadAudio(file, {
        title: $('#upload-title').value.trim(), topic: $('#upload-topic').value.trim(),
      }, $('#upload-progress'));
      state.lastUpload = audio;
      renderUploadResult(audio);
      $('#upload-form').reset();
      chooseFile(null);
      say(t('upload_done', { title: audio.title }));
      await loadAudio();
    } catch (err) {
      if (err.status !== 401) {
        // The server says why (not audio, truncated, too long…): show its words.
        showError('#upload-error', t('upload_refused', { detail: err.message }));
        $('#message').textContent = '';
      }
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  function renderUploadResult(a) {
    const box = $('#upload-result');
    box.replaceChildren(
      el('p', { class: 'ok', text: t('upload_done', { title: a.title }) }),
      el('dl', {},
        el('dt', { text: t('duration') }),
        el('dd', { id: 'upload-duration', 'data-ms': a.duration_ms, text: fmtDuration(a.duration_ms) }),
        el('dt', { text: t('loudness') }),
        el('dd', { id: 'upload-loudness', 'data-lufs': a.loudness_lufs ?? '' },
          `${fmtNum(a.loudness_lufs)} LUFS `, el('span', { class: 'hint', text: `(${t('loudness_note')})` }))));
    box.hidden = false;
  }

  // ---- campaign builder: days and times in, POSIX cron out -------------------------------

  function renderDays() {
    const box = $('#campaign-days .days');
    const ticked = new Set(pickedDays());
    box.replaceChildren(...WEEK_DAYS.map((d) => {
      const id = `day-${d}`;
      return el('span', { class: 'check' },
        el('input', { type: 'checkbox', id, name: 'dow', value: String(d), checked: ticked.has(d) }),
        el('label', { htmlFor: id, text: t(`dow_${d}`) }));
    }));
  }

  const pickedDays = () => $$('#campaign-days input[name="dow"]:checked').map((b) => Number(b.value));

  function setDays(days) {
    for (const b of $$('#campaign-days input[name="dow"]')) b.checked = days.includes(Number(b.value));
    schedulePreview();
  }

  function addTime(value = '') {
    const n = ++state.timeSeq;
    const id = `time-${n}`;
    const input = el('input', { id, class: 'time-input', type: 'text', inputMode: 'numeric',
      maxLength: 5, placeholder: '06:30', autocomplete: 'off', value,
      pattern: '([01]?[0-9]|2[0-3])[:.h]?[0-5][0-9]' });
    // Tidy `630` or `6.30` into `06:30` once the user leaves the field.
    input.addEventListener('blur', () => {
      const hm = parseTime(input.value);
      if (hm) input.value = hm;
    });
    const row = el('span', { class: 'time-row' },
      el('label', { htmlFor: id }), input,
      el('button', { type: 'button', class: 'remove', text: '✕', onclick: () => {
        row.remove();
        if (!$$('#campaign-times .time-row').length) addTime();
        relabelTimes();
        schedulePreview();
      } }));
    $('#campaign-times').append(row);
    relabelTimes();
    return input;
  }

  // Labels count the rows as they are now (1, 2, 3… after a removal too).
  function relabelTimes() {
    $$('#campaign-times .time-row').forEach((row, i) => {
      $('label', row).textContent = t('time_n', { n: i + 1 });
      $('.remove', row).setAttribute('aria-label', t('remove_time', { n: i + 1 }));
    });
  }

  // `HH:MM` from what was typed (06:30, 6:30, 0630, 6.30, 6h30), or null.
  function parseTime(raw) {
    const m = /^\s*([01]?\d|2[0-3])\s*[:.hH]?\s*([0-5]\d)\s*$/.exec(raw || '');
    return m ? `${m[1].padStart(2, '0')}:${m[2]}` : null;
  }

  // The day-of-week field: `*` for every day, runs of three or more as ranges (1-5).
  function cronDow(days) {
    const sorted = [...new Set(days)].sort((a, b) => a - b);
    if (sorted.length === 7) return '*';
    const parts = [];
    for (let i = 0; i < sorted.length;) {
      let j = i;
      while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j += 1;
      if (j - i >= 2) parts.push(`${sorted[i]}-${sorted[j]}`);
      else for (let k = i; k <= j; k += 1) parts.push(String(sorted[k]));
      i = j + 1;
    }
    return parts.join(',');
  }

  // What the builder says, as the API wants it; `problems` lists what is missing.
  function campaignDraft() {
    const problems = [];
    const times = [];
    for (const input of $$('#campaign-times .time-input')) {
      const raw = input.value.trim();
      if (!raw) continue;
      const hm = parseTime(raw);
      if (hm) times.push(hm); else problems.push({ field: input, text: t('bad_time', { value: raw }) });
    }
    const days = pickedDays();
    // One rule per distinct time: `M H * * days`.
    const cron = days.length ? [...new Set(times)].sort().map((hm) => {
      const [h, m] = hm.split(':').map(Number);
      return `${m} ${h} * * ${cronDow(days)}`;
    }) : [];
    const audio = $('#campaign-audio').value;
    const starts = $('#campaign-starts').value;
    const ends = $('#campaign-ends').value;
    return { cron, days, times, audio, starts, ends, problems };
  }

  function schedulePreview() {
    clearTimeout(state.previewTimer);
    state.previewTimer = setTimeout(runPreview, PREVIEW_SETTLE_MS);
  }

  async function runPreview() {
    const gen = ++state.previewGen;
    const d = campaignDraft();
    if (!d.cron.length || d.problems.length) {
      state.preview = { cron: d.cron, need: true, problems: d.problems.map((p) => p.text) };
      renderPreview();
      return;
    }
    state.preview = { cron: d.cron, loading: true };
    renderPreview();
    try {
      const body = { cron: d.cron, count: PREVIEW_COUNT };
      if (d.starts) body.starts_on = d.starts;
      if (d.ends) body.ends_on = d.ends;
      if (d.audio) body.audio_ids = [d.audio];
      const p = await api('POST', '/api/v1/schedule/preview', body);
      if (gen !== state.previewGen) return; // the form changed meanwhile
      state.preview = p;
    } catch (err) {
      if (gen !== state.previewGen || err.status === 401) return;
      state.preview = { cron: d.cron, error: err.message };
    }
    renderPreview();
  }

  function renderPreview() {
    const p = state.preview;
    const list = $('#campaign-preview');
    const note = $('#campaign-preview-note');
    const quiet = $('#campaign-quiet');
    $('#campaign-cron').textContent = p?.cron?.length ? p.cron.join('\n') : '—';
    list.replaceChildren();
    quiet.hidden = true;
    note.classList.toggle('error', !!(p?.error || p?.problems?.length));
    if (!p || p.need) {
      note.textContent = p?.problems?.length ? p.problems.join(' ') : t('preview_need');
      return;
    }
    if (p.loading) { note.textContent = t('preview_loading'); return; }
    if (p.error) { note.textContent = t('error', { detail: p.error }); return; }
    const next = p.next || [];
    note.textContent = next.length ? t('preview_next', { n: next.length, tz: p.timezone }) : t('preview_none');
    list.replaceChildren(...next.map((iso) => el('li', {}, el('time', { dateTime: iso, text: fmtAiring(iso) }))));
    if (p.quiet_hours_clash?.length) {
      quiet.textContent = t('quiet_clash', { quiet: p.quiet_hours, times: p.quiet_hours_clash.map(fmtAiring).join('; ') });
      quiet.hidden = false;
    }
  }

  async function onSaveCampaign(ev) {
    ev.preventDefault();
    const button = $('#campaign-save');
    if (button.getAttribute('aria-disabled') === 'true') return;
    const d = campaignDraft();
    const title = $('#campaign-title');
    const topic = $('#campaign-topic');
    const areas = state.trees.campaign.selected();
    // Every missing part at once, and focus on the first, as the server would answer.
    const problems = [...d.problems];
    if (!title.value.trim()) problems.push({ field: title, text: t('need_title') });
    if (!topic.value.trim()) problems.push({ field: topic, text: t('need_topic') });
    if (!d.audio) problems.push({ field: $('#campaign-audio'), text: t('need_audio') });
    if (!areas.length) problems.push({ field: $('#campaign-areas input:not(:disabled)'), text: t('need_areas') });
    if (!d.days.length) problems.push({ field: $('#day-1'), text: t('need_days') });
    if (!d.times.length && !d.problems.length) problems.push({ field: $('#campaign-times .time-input'), text: t('need_times') });
    $('#campaign-saved').hidden = true;
    if (problems.length) {
      showError('#campaign-error', problems.map((p) => p.text).join(' '));
      problems[0].field?.focus();
      return;
    }
    clearError('#campaign-error');
    const schedule = { cron: d.cron };
    if (d.starts) schedule.starts_on = d.starts;
    if (d.ends) schedule.ends_on = d.ends;
    button.setAttribute('aria-disabled', 'true');
    button.textContent = t('campaign_saving');
    try {
      const c = await api('POST', '/api/v1/campaigns', {
        title: title.value.trim(), topic: topic.value.trim(), audio_ids: [d.audio],
        targets: { areas }, schedule,
      });
      const saved = $('#campaign-saved');
      saved.dataset.campaignId = c.id;
      saved.dataset.status = c.status;
      const conflicts = (c.conflicts || []).map((x) => x.title);
      saved.textContent = [
        t('campaign_saved', { title: c.title, status: t(`approval_${c.status}`) }),
        conflicts.length ? t('campaign_conflicts', { list: conflicts.join(', ') }) : '',
      ].join(' ').trim();
      saved.hidden = false;
      title.value = '';
      await loadCampaigns();
    } catch (err) {
      if (err.status !== 401) showError('#campaign-error', t('campaign_refused', { detail: err.message }));
    } finally {
      button.removeAttribute('aria-disabled');
      button.textContent = t('campaign_save');
    }
  }

  // ---- campaign list and approval ------------------------------------------------------

  async function loadCampaigns() {
    const list = await api('GET', '/api/v1/campaigns');
    state.campaigns = (Array.isArray(list) ? list : [])
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    renderCampaigns();
    await loadWeek();
  }

  // Where a campaign airs, in words: area names, and how many clusters named one by one.
  function whereText(targets) {
    const parts = (targets?.areas || []).map(areaName);
    if (targets?.clusters?.length) parts.push(t('n_clusters', { n: targets.clusters.length }));
    return parts.join(', ');
  }

  function renderCampaigns() {
    const rows = state.campaigns.map((c) => el('tr', { 'data-campaign-id': c.id, 'data-status': c.status },
      el('th', { scope: 'row', text: c.title }),
      el('td', { text: c.topic }),
      el('td', { text: whereText(c.targets) }),
      el('td', {}, el('code', { class: 'cron', text: (c.schedule?.cron || []).join('\n') })),
      el('td', { class: 'next' }, el('ul', { class: 'plain' }, (c.next_occurrences || []).slice(0, 3)
        .map((iso) => el('li', {}, el('time', { dateTime: iso, text: fmtShort(iso) }))))),
      el('td', { class: 'c-status' }, runBadge(c.status, `approval_${c.status}`)),
      el('td', { class: 'c-actions' },
        c.approval === 'pending' && state.me?.can_approve && c.source !== 'file'
          ? el('button', { type: 'button', class: 'approve', text: t('approve'),
            'aria-label': t('approve_of', { title: c.title }), onclick: (e) => approve(c, e.currentTarget) })
          : null)));
    if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 7, class: 'empty', text: t('campaigns_empty') })));
    $('#campaign-list tbody').replaceChildren(...rows);
  }

  async function approve(c, button) {
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    try {
      await api('POST', `/api/v1/campaigns/${encodeURIComponent(c.id)}/approve`);
      say(t('approved_msg', { title: c.title }));
      await loadCampaigns();
      // The button is gone; keep the keyboard user on the campaign they approved.
      const th = $(`#campaign-list tr[data-campaign-id="${CSS.escape(c.id)}"] th`);
      if (th) { th.tabIndex = -1; th.focus(); }
    } catch (err) {
      if (err.status !== 401) sayError(err);
      button.removeAttribute('aria-disabled');
    }
  }

  // ---- week calendar: what airs where, Monday to Sunday ----------------------------------

  async function loadWeek() {
    if (!state.week) state.week = mondayOf(today());
    const gen = ++state.weekGen;
    const from = new Date(startOfDay(state.week)).toISOString();
    const to = new Date(startOfDay(addDays(state.week, 7))).toISOString();
    const shown = state.campaigns.filter((c) => c.status !== 'paused');
    // The server's calendar says when each airs; one request per campaign.
    const answers = await Promise.all(shown.map((c) => api('GET',
      `/api/v1/campaigns/${encodeURIComponent(c.id)}/occurrences${query({ from, to })}`)
      .then((o) => ({ c, o }), () => ({ c, o: null }))));
    if (gen !== state.weekGen) return;
    state.weekItems = answers.flatMap(({ c, o }) => (o?.occurrences || [])
      .map((x) => ({ at: x.at, day: ymdParts(Date.parse(x.at)), quiet: x.in_quiet_hours, c })))
      .sort((a, b) => a.at.localeCompare(b.at));
    renderWeek();
  }

  function renderWeek() {
    if (!state.week) return;
    const days = Array.from({ length: 7 }, (_, i) => addDays(state.week, i));
    $('#week-label').textContent = t('week_label', { from: fmtDate(days[0]), to: fmtDate(days[6]) });
    const now = today();
    $('#week-calendar').replaceChildren(...days.map((day) => {
      const items = state.weekItems.filter((x) => x.day === day);
      return el('section', { class: `day${day === now ? ' today' : ''}`, role: 'listitem',
        'data-date': day, 'aria-current': day === now ? 'date' : null },
      el('h4', {}, el('span', { class: 'dow', text: t(`dow_${dowOf(day)}`) }), ' ',
        el('span', { class: 'date', text: fmtDate(day).slice(0, 5) })),
      items.length
        ? el('ul', { class: 'plain' }, items.map((x) => el('li', {
          class: 'ev', 'data-status': x.c.status, 'data-campaign-id': x.c.id },
        el('time', { dateTime: x.at, text: fmtClock(x.at) }), ' ',
        el('span', { class: 'ev-title', text: x.c.title }),
        el('span', { class: 'ev-where', text: whereText(x.c.targets) }),
        x.c.status === 'pending' ? el('span', { class: 'tag', text: t('approval_pending') }) : null)))
        : el('p', { class: 'empty', text: t('week_nothing') }));
    }));
  }

  function moveWeek(by) {
    state.week = addDays(state.week || mondayOf(today()), 7 * by);
    loadWeek().catch((err) => { if (err.status !== 401) sayError(err); });
  }

  // ---- as-run report -------------------------------------------------------------------

  function reportWindow() {
    const from = $('#report-from').value;
    const to = $('#report-to').value;
    if (!from || !to || to < from) return null;
    // The end date is inclusive on the page, exclusive for the API.
    return {
      from: new Date(startOfDay(from)).toISOString(),
      to: new Date(startOfDay(addDays(to, 1))).toISOString(),
      area: $('#report-area').value,
      days: { from, to },
    };
  }

  async function runReport(ev) {
    ev?.preventDefault();
    if (!$('#report-from').value) {
      // This month so far: what the monthly report needs.
      const now = today();
      $('#report-from').value = `${now.slice(0, 8)}01`;
      $('#report-to').value = now;
    }
    const w = reportWindow();
    if (!w) { say(t('bad_range'), 'error'); $('#report-to').focus(); return; }
    const gen = ++state.reportGen;
    const get = (group) => api('GET', `/api/v1/reports/airtime${query({
      from: w.from, to: w.to, area: w.area, group_by: group })}`);
    try {
      const [topic, area] = await Promise.all([get('topic'), get('area')]);
      if (gen !== state.reportGen) return;
      state.report = { topic, area, days: w.days };
      renderReport();
    } catch (err) {
      if (err.status !== 401) sayError(err);
    }
  }

  function renderReport() {
    const r = state.report;
    if (!r) return;
    $('#report-total').textContent = t('report_total', {
      m: fmtNum(r.topic.total_minutes), from: fmtDate(r.days.from), to: fmtDate(r.days.to) });
    $('#report-topic-chart').replaceChildren(bars(r.topic.rows, 'topic',
      (row) => row.key || t('no_topic')));
    $('#report-area-chart').replaceChildren(bars(r.area.rows, 'area', (row) => areaName(row.key)));
  }

  // A table whose chart column is an inline SVG bar per row: the numbers stay readable
  // text (for screen readers, for copying), the bars compare them at a glance.
  function bars(rows, group, label) {
    if (!rows.length) return el('p', { class: 'empty', text: t('report_empty') });
    const max = Math.max(...rows.map((r) => r.minutes), 0.01);
    return el('table', { class: 'bar-table', 'data-group': group },
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col', text: t(`col_group_${group}`) }),
        el('th', { scope: 'col', class: 'bar-col', text: t('col_chart') }),
        el('th', { scope: 'col', class: 'num', text: t('col_minutes') }),
        el('th', { scope: 'col', class: 'num', text: t('col_airings') }),
        el('th', { scope: 'col', class: 'num', text: t('col_clusters') }))),
      el('tbody', {}, rows.map((row) => {
        const pct = Math.max(0.5, (row.minutes / max) * 100);
        return el('tr', { 'data-key': row.key },
          el('th', { scope: 'row', text: label(row) }),
          el('td', { class: 'bar-col' }, svg('svg', { class: 'bar', viewBox: '0 0 100 10',
            preserveAspectRatio: 'none', 'aria-hidden': 'true', focusable: 'false' },
          svg('rect', { class: 'bar-bg', x: 0, y: 0, width: 100, height: 10 }),
          svg('rect', { class: 'bar-fill', x: 0, y: 0, width: pct.toFixed(2), height: 10 }))),
          el('td', { class: 'num', text: fmtNum(row.minutes) }),
          el('td', { class: 'num', text: fmtNum(row.airings) }),
          el('td', { class: 'num', text: fmtNum(row.clusters) }));
      })));
  }

  // The CSV needs the bearer token, so it cannot be a plain link: fetch it, then offer the
  // bytes as a file through a blob: link.
  async function downloadCsv(group, button) {
    const w = reportWindow();
    if (!w) { say(t('bad_range'), 'error'); return; }
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    try {
      const res = await request('GET', `/api/v1/reports/airtime${query({
        from: w.from, to: w.to, area: w.area, group_by: group })}`, undefined, { accept: 'text/csv' });
      const blob = await res.blob();
      const link = $('#report-csv-link');
      if (link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
      const name = `airtime-${group}-${w.days.from}-${w.days.to}.csv`;
      link.href = URL.createObjectURL(blob);
      link.download = name;
      link.textContent = name;
      link.hidden = false;
      link.click();
      say(t('csv_ready', { name }));
    } catch (err) {
      if (err.status !== 401) sayError(err);
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  // ---- emergency console: pick, arm, confirm, watch, cancel --------------------------------

  async function onEmergencyUpload() {
    const input = $('#emergency-file');
    const file = input.files?.[0];
    const button = $('#emergency-upload');
    if (!file) { showError('#emergency-upload-error', t('no_file')); input.focus(); return; }
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    clearError('#emergency-upload-error');
    try {
      const audio = await uploadAudio(file, {
        title: file.name.replace(/\.[^.]+$/, ''), topic: 'emergency',
      }, $('#emergency-progress'));
      input.value = '';
      await loadAudio();
      $('#emergency-audio').value = audio.id; // what was just uploaded is what airs
      say(t('upload_done', { title: audio.title }));
    } catch (err) {
      if (err.status !== 401) showError('#emergency-upload-error', t('upload_refused', { detail: err.message }));
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  // The first action: check the choice and show what would happen. Nothing airs yet.
  async function onArm(ev) {
    ev.preventDefault();
    const areas = state.trees.emergency.selected();
    const audioId = $('#emergency-audio').value;
    const repeat = Number($('#emergency-repeat').value);
    const problems = [];
    if (!areas.length) problems.push({ field: $('#emergency-areas input:not(:disabled)'), text: t('need_areas') });
    if (!audioId) problems.push({ field: $('#emergency-audio'), text: t('need_audio') });
    if (!Number.isInteger(repeat) || repeat < 1 || repeat > 10) {
      problems.push({ field: $('#emergency-repeat'), text: t('need_repeat') });
    }
    if (problems.length) {
      showError('#emergency-error', problems.map((p) => p.text).join(' '));
      problems[0].field?.focus();
      return;
    }
    clearError('#emergency-error');
    // How many clusters it reaches, so that the operator confirms a number, not a hope.
    let reach = null;
    try {
      const clusters = await api('GET', '/api/v1/clusters');
      const below = new Set(areas.flatMap((a) => [...subtree(a)]));
      reach = (clusters || []).filter((c) => c.enabled && below.has(c.area_code)).length;
    } catch (err) {
      if (err.status === 401) return;
    }
    const audio = state.audio.find((a) => a.id === audioId);
    state.armed = { areas, audioId, repeat, reach, title: audio?.title ?? audioId, ms: audio?.duration_ms };
    renderArmed();
    // While armed the choice cannot change under the summary.
    $('#emergency-form').inert = true;
    const box = $('#emergency-confirm-box');
    box.hidden = false;
    // Focus the heading, not the button: a second Enter must not fire the emergency.
    box.focus();
  }

  function renderArmed() {
    const a = state.armed;
    if (!a) return;
    const item = (k, v, id) => [el('dt', { text: t(k) }), el('dd', { id, text: v })];
    $('#emergency-summary').replaceChildren(el('dl', {},
      item('emergency_summary_areas', a.areas.map(areaName).join(', '), 'emergency-summary-areas'),
      item('emergency_summary_message', `${a.title} (${fmtDuration(a.ms)})`, 'emergency-summary-message'),
      item('emergency_summary_repeat', String(a.repeat), 'emergency-summary-repeat'),
      item('emergency_summary_clusters', a.reach == null ? '?' : String(a.reach), 'emergency-summary-clusters')));
  }

  function disarm() {
    state.armed = null;
    $('#emergency-confirm-box').hidden = true;
    $('#emergency-form').inert = false;
  }

  // The second, deliberate action: only this sends the emergency.
  async function onConfirm() {
    const a = state.armed;
    const button = $('#emergency-confirm');
    if (!a || button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    try {
      const r = await api('POST', '/api/v1/emergency', {
        audio_id: a.audioId, targets: { areas: a.areas }, repeat: a.repeat });
      disarm();
      say(t('emergency_started'));
      watchEmergency(r.id);
      $('#emergency-live').focus();
    } catch (err) {
      if (err.status === 401) return;
      disarm();
      showError('#emergency-error', t('emergency_refused', { detail: err.message }));
      $('#emergency-arm').focus();
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  // Also orphans a poll already in flight: its answer may predate a cancel.
  function stopEmergencyPoll() {
    clearTimeout(state.emergencyTimer);
    state.emergencyTimer = 0;
    state.emergencyGen += 1;
  }

  function watchEmergency(id) {
    stopEmergencyPoll();
    state.emergency = id;
    state.emergencyView = null;
    $('#emergency-form').hidden = true;
    $('#emergency-live').hidden = false;
    pollEmergency(id);
  }

  // One request at a time, the next a second after the last answer: a slow server is
  // never asked twice at once.
  async function pollEmergency(id) {
    const gen = state.emergencyGen;
    const current = () => state.emergency === id && state.emergencyGen === gen;
    try {
      const e = await api('GET', `/api/v1/emergency/${encodeURIComponent(id)}`);
      if (!current()) return;
      state.emergencyView = e;
      renderEmergency();
      if (FINAL_RUNS.includes(e.status)) return;
    } catch (err) {
      if (err.status === 401 || !current()) return;
      sayError(err);
    }
    state.emergencyTimer = setTimeout(() => pollEmergency(id), EMERGENCY_POLL_MS);
  }

  function renderEmergency() {
    renderArmed();
    const e = state.emergencyView;
    if (!e) return;
    const final = FINAL_RUNS.includes(e.status);
    const overall = $('#emergency-status');
    overall.dataset.status = e.status;
    overall.replaceChildren(runBadge(e.status));
    const body = $('#emergency-clusters tbody');
    const clusters = e.clusters || [];
    const rows = [...body.rows];
    const same = rows.length === clusters.length && clusters.every((c, i) => rows[i].dataset.clusterId === c.id);
    if (same) {
      // Every second: change only what changed, so that the table does not flicker and a
      // screen reader or a selection in it is not reset.
      clusters.forEach((c, i) => updateRunRow(rows[i], c));
    } else {
      body.replaceChildren(...clusters.map((c) => updateRunRow(el('tr', { 'data-cluster-id': c.id },
        el('th', { scope: 'row', text: c.name }),
        el('td', { text: areaName(c.area_code) }),
        el('td', { class: 'c-status' }),
        el('td', { class: 'num c-packets' })), c)));
    }
    $('#emergency-cancel').hidden = final;
    $('#emergency-new').hidden = !final;
  }

  function updateRunRow(row, c) {
    if (row.dataset.status !== c.status || row.dataset.lang !== state.lang) {
      row.dataset.status = c.status;
      row.dataset.lang = state.lang;
      $('.c-status', row).replaceChildren(runBadge(c.status));
    }
    const packets = fmtNum(c.packets_sent);
    const cell = $('.c-packets', row);
    if (cell.textContent !== packets) cell.textContent = packets;
    return row;
  }

  async function onCancelEmergency() {
    const id = state.emergency;
    const button = $('#emergency-cancel');
    if (!id || button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    stopEmergencyPoll();
    try {
      state.emergencyView = await api('POST', `/api/v1/emergency/${encodeURIComponent(id)}/cancel`);
      renderEmergency();
      say(t('emergency_cancelled'));
      $('#emergency-new').focus();
    } catch (err) {
      if (err.status === 401) return;
      sayError(err); // 409: it ended by itself meanwhile; the next poll shows how
      pollEmergency(id);
    } finally {
      button.removeAttribute('aria-disabled');
    }
  }

  function newEmergency() {
    stopEmergencyPoll();
    state.emergency = null;
    state.emergencyView = null;
    $('#emergency-live').hidden = true;
    $('#emergency-form').hidden = false;
    $('#emergency-arm').focus();
  }

  // An emergency still on air when the page opens (a reload, another operator) comes
  // back with its cancel button: the console must never lose the way to stop it.
  async function resumeEmergency() {
    if (state.emergency) return;
    const list = await api('GET', '/api/v1/emergency');
    const live = (Array.isArray(list) ? list : []).find((e) => !FINAL_RUNS.includes(e.status));
    if (live && !state.emergency) watchEmergency(live.id);
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
    state.trees.campaign = areaTree($('#campaign-areas'), 'campaign', schedulePreview);
    state.trees.emergency = areaTree($('#emergency-areas'), 'emergency', () => clearError('#emergency-error'));
    applyStatic();
    renderDays();
    addTime();
    $('#lang').addEventListener('click', switchLang);
    $('#signin-form').addEventListener('submit', onSignIn);
    $('#signout').addEventListener('click', () => signOut());
    for (const b of $$('[role="tab"]')) b.addEventListener('click', () => showView(b.dataset.view));
    $('.tabs').addEventListener('keydown', onTabKey);
    // library
    wireDropZone();
    $('#upload-form').addEventListener('submit', onUpload);
    // campaigns: any change to when or what redoes the preview
    $('#campaign-form').addEventListener('submit', onSaveCampaign);
    $('#campaign-form').addEventListener('input', (e) => {
      if (e.target.matches('.time-input, input[type="date"]')) schedulePreview();
    });
    $('#campaign-form').addEventListener('change', (e) => {
      if (e.target.matches('input[name="dow"], #campaign-audio, input[type="date"]')) schedulePreview();
    });
    $('#campaign-add-time').addEventListener('click', () => { addTime().focus(); });
    $('#days-weekdays').addEventListener('click', () => setDays([1, 2, 3, 4, 5]));
    $('#days-all').addEventListener('click', () => setDays(WEEK_DAYS));
    $('#week-prev').addEventListener('click', () => moveWeek(-1));
    $('#week-next').addEventListener('click', () => moveWeek(1));
    // report
    $('#report-form').addEventListener('submit', runReport);
    for (const b of $$('#report-view .csv')) b.addEventListener('click', () => downloadCsv(b.dataset.group, b));
    // emergency
    $('#emergency-upload').addEventListener('click', onEmergencyUpload);
    $('#emergency-form').addEventListener('submit', onArm);
    $('#emergency-confirm').addEventListener('click', onConfirm);
    $('#emergency-back').addEventListener('click', () => { disarm(); $('#emergency-arm').focus(); });
    $('#emergency-cancel').addEventListener('click', onCancelEmergency);
    $('#emergency-new').addEventListener('click', newEmergency);
    // health
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
